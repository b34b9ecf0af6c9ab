"""Log-ratio loss's claims (Kim et al., CVPR 2019) on rotated Fashion-MNIST.

    python -m studies.log_ratio --output_dir=DIR [--quick] [--scale]

Task: a continuous label on real images, offline. Each Fashion-MNIST image
is placed on a 40 x 40 canvas (the 28 x 28 image fits there at any angle)
and rotated by an angle drawn uniformly from [-75°, 75°) (no 180° ambiguity
for the nearly symmetric trousers and bags); the label is the angle in units
of 10° (``--scale`` adds a second factor: a scale in [0.6, 1), label
10 log2(scale)). Label distance: squared L2 (as the paper's pose task), so
MLD@K is in (10°)² and nDCG's relevance is 1 / (1 + d).

Splits: train = classes 0-4 of the train file (10% held out as
validation); main test = new images of the same classes 0-4 (t10k file,
new angles) as the paper's pose retrieval tests new images of the same
domain; second test = the unseen classes 5-9 (t10k).

Configurations (same recipe, budget and steps for all; 128-d):
  log-ratio (all anchors, squared distance) with dense label-space batches
  (the paper), with random batches (the reviewer's ablation), the authors'
  released variant (first anchor, Euclidean), a plain-ratio ablation
  (``LogRatioLoss(ratio="plain")``), dense triplet, binary triplet,
  Rank-N-Contrast (random batches, as its authors), the pretrained backbone
  without training (GAP + GMP features, L2-normalised); and a dimension
  sweep 16/32/64/128. Plus the cost of dense mining's label-space kNN at
  N = 10k, 100k, 1M.

Outputs: DIR/results.json, DIR/results.md, dimension.png, convergence.png.
"""

import os
import sys
import time

import numpy as np

from studies import common
from studies.common import Config

BASE_RECIPE = "fashion_mnist_proxy_anchor"
ANGLE_RANGE = (-75.0, 75.0)
SCALE_RANGE = (0.6, 1.0)
ANGLE_UNIT = 10.0          # degrees per label unit
CANVAS = 40
KS = (1, 5, 10, 20)
METRICS = tuple(f"mean_label_distance@{k}" for k in KS) + tuple(f"ndcg@{k}" for k in KS)
LABELS = {**{f"mean_label_distance@{k}": f"MLD@{k}" for k in KS},
          **{f"ndcg@{k}": f"nDCG@{k}" for k in KS}}
MAIN_DIM = 128

MODES = {
    # Sized so that both studies run side by side on 2 cores within 2 hours.
    "full": dict(recipe=dict(image_size=32, epochs=5, steps_per_epoch=30),
                 n_train=6000, n_test=2000, seeds=3, dims=(16, 32, 64, 128), dim_seeds=1,
                 dim_losses=("log_ratio", "dense_triplet", "binary_triplet"),
                 knn_ns=(10_000, 100_000, 1_000_000), knn_budget=120.0),
    "quick": dict(recipe=dict(image_size=32, epochs=3, steps_per_epoch=15),
                  n_train=3000, n_test=1000, seeds=2, dims=(16, 32, 64, 128), dim_seeds=1,
                  dim_losses=("log_ratio", "dense_triplet"),
                  knn_ns=(10_000, 100_000, 1_000_000), knn_budget=20.0),
    "smoke": dict(recipe=dict(backbone="small_cnn", weights="none", image_size=16,
                              embedding_dim=16, epochs=2, steps_per_epoch=2, warmup_epochs=0,
                              eval_batch_size=128, num_plot_queries=2, ks=(1, 5)),
                  n_train=240, n_test=100, seeds=1, dims=(8, 16), dim_seeds=1,
                  dim_losses=("log_ratio",), knn_ns=(1000, 2000), knn_budget=5.0,
                  configs=("dense", "plain", "imagenet")),
}

# name -> recipe changes (the loss and its batches).
CONFIGS = {
    "dense": ("log_ratio (dense batches)", dict(loss="log_ratio")),
    "random": ("log_ratio (random batches)", dict(loss="log_ratio", sampler="random")),
    "authors": ("log_ratio authors' (first anchor, Euclidean)",
                dict(loss="log_ratio", loss_kwargs="anchors=first,squared=False")),
    "plain": ("plain ratio (dense batches)", dict(loss="log_ratio", loss_kwargs="ratio=plain")),
    "dense_triplet": ("dense_triplet", dict(loss="dense_triplet")),
    "binary_triplet": ("binary_triplet", dict(loss="binary_triplet")),
    "rank_n_contrast": ("rank_n_contrast (random batches)",
                        dict(loss="rank_n_contrast", sampler="random")),
    "imagenet": ("ImageNet features (no training)", None),
}
DIM_NAMES = {"log_ratio": "dense", "dense_triplet": "dense_triplet",
             "binary_triplet": "binary_triplet", "rank_n_contrast": "rank_n_contrast"}


# --------------------------------------------------------------------- data
def rotate_and_scale(images, angles_deg, scales=None, canvas=CANVAS, chunk=2048):
    """uint8 [N, h, w] images, centred on a ``canvas`` x ``canvas`` black
    canvas, rotated counter-clockwise by ``angles_deg`` [N] and scaled by
    ``scales`` [N] (bilinear, vectorised): uint8 [N, canvas, canvas, 1]."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must be [N, h, w]; got {images.shape}.")
    n, h, w = images.shape
    if max(h, w) > canvas:
        raise ValueError(f"canvas {canvas} is smaller than the images {h}x{w}.")
    angles = np.broadcast_to(np.asarray(angles_deg, np.float64), (n,))
    scales = np.ones(n) if scales is None else np.broadcast_to(
        np.asarray(scales, np.float64), (n,))
    if (scales <= 0).any():
        raise ValueError("scales must be > 0.")
    padded = np.zeros((n, canvas + 2, canvas + 2), np.float32)   # 1-px border: zeros
    top, left = 1 + (canvas - h) // 2, 1 + (canvas - w) // 2
    padded[:, top:top + h, left:left + w] = images
    c = (canvas - 1) / 2.0
    v, u = np.meshgrid(np.arange(canvas) - c, np.arange(canvas) - c)   # u rows, v cols
    out = np.empty((n, canvas, canvas), np.uint8)
    for s0 in range(0, n, chunk):
        s1 = min(s0 + chunk, n)
        t = -np.deg2rad(angles[s0:s1])[:, None, None]
        k = 1.0 / scales[s0:s1, None, None]
        cos, sin = np.cos(t), np.sin(t)
        # Inverse map of a counter-clockwise rotation (image rows point down).
        src_v = k * (cos * v + sin * u) + c + 1
        src_u = k * (-sin * v + cos * u) + c + 1
        src_u = np.clip(src_u, 0, canvas + 1 - 1e-6)
        src_v = np.clip(src_v, 0, canvas + 1 - 1e-6)
        u0, v0 = np.floor(src_u).astype(np.int64), np.floor(src_v).astype(np.int64)
        fu, fv = src_u - u0, src_v - v0
        u1, v1 = np.minimum(u0 + 1, canvas + 1), np.minimum(v0 + 1, canvas + 1)
        idx = np.arange(s0, s1)[:, None, None]
        p = padded
        val = ((1 - fu) * (1 - fv) * p[idx, u0, v0] + (1 - fu) * fv * p[idx, u0, v1]
               + fu * (1 - fv) * p[idx, u1, v0] + fu * fv * p[idx, u1, v1])
        out[s0:s1] = np.clip(np.rint(val), 0, 255).astype(np.uint8)
    return out[..., None]


def _factor_labels(rng, n, scale):
    angles = rng.uniform(*ANGLE_RANGE, size=n)
    factors = [angles / ANGLE_UNIT]
    scales = None
    if scale:
        scales = np.exp(rng.uniform(*np.log(SCALE_RANGE), size=n))
        factors.append(10.0 * np.log2(scales))
    return angles, scales, np.stack(factors, axis=1).astype(np.float32)


def rotated_fashion_mnist(n_train=10000, n_test=2000, seed=0, scale=False,
                          root=None):
    """The rotated Fashion-MNIST task.

    Returns ``(data, unseen)``: ``data`` a ``kd.data.RetrievalData``
    (label_type "rotation") whose train split is ``n_train`` images of
    classes 0-4 (train file) and test split ``n_test`` new images of classes
    0-4 (t10k file); ``unseen`` a ``kd.data.Split`` of ``n_test`` images of
    classes 5-9 (t10k). Labels float32 [N, 1] (angle / 10°) or [N, 2] (plus
    10 log2 scale). Angles and scales are drawn with ``seed``; the class of
    each image is in ``split.info["classes"]``.
    """
    import keras_dml as kd
    from keras_dml.data import fashion_mnist as fm
    root = root or fm.DEBIAN_DIR
    rng = np.random.default_rng([seed, 2019])

    def part(name, which, classes, count):
        image_file, label_file = (os.path.join(root, f) for f in fm.FILES[which])
        for f in (image_file, label_file):
            if not os.path.exists(f):
                raise kd.data.DataNotFoundError(
                    f"Fashion-MNIST file not found: {f!r} (apt-get install -y "
                    "dataset-fashion-mnist).")
        images, classes_of = fm.read_idx(image_file), fm.read_idx(label_file)
        pool = np.flatnonzero(np.isin(classes_of, classes))
        if count > len(pool):
            raise ValueError(f"{name}: {count} images asked, {len(pool)} available.")
        pick = np.sort(rng.choice(pool, size=count, replace=False))
        angles, scales, labels = _factor_labels(rng, count, scale)
        rotated = rotate_and_scale(images[pick], angles, scales)
        names = [f"{os.path.basename(image_file)}[{i}]@{a:.1f}deg" for i, a in
                 zip(pick, angles)]
        return kd.data.Split.from_arrays(name, rotated, labels, names=names,
                                         info={"classes": classes_of[pick].astype(int),
                                               "angles": angles, "scales": scales})

    train = part("train", "train", range(5), n_train)
    test = part("test", "test", range(5), n_test)
    unseen = part("unseen", "test", range(5, 10), n_test)
    data = kd.data.RetrievalData(
        name="rotated_fashion_mnist", train=train, test=test,
        image_shape=(CANVAS, CANVAS, 1), label_type="rotation",
        info={"angle_range": ANGLE_RANGE, "angle_unit_deg": ANGLE_UNIT,
              "scale_range": SCALE_RANGE if scale else None})
    return data, unseen


def _resize_whole(recipe):
    # The label is the orientation (and size) in the frame: no crop, no flip
    # (a flip negates the angle); resize only.
    from keras_dml.data import augment
    whole = augment.resize_transform(recipe.image_size, rgb=True)
    return whole, whole


def task():
    """The rotation task: squared-L2 label distance, Euclidean embeddings."""
    import keras_dml as kd
    return kd.training.Task(continuous=True, label_distance="squared_l2",
                            transforms=_resize_whole)


# ------------------------------------------------------------------ recipes
def base_recipe(mode):
    import keras_dml as kd
    spec = MODES[mode]
    changes = dict(loss="log_ratio", batch_size=60, m_per_class=0, val_fraction=0.1,
                   val_split="examples", embedding_dim=MAIN_DIM, ks=KS)
    changes.update(spec["recipe"])
    return kd.training.Recipe.from_flagfile(BASE_RECIPE).replace(**changes)


def main_configs(mode, seeds, measure_imagenet):
    names = MODES[mode].get("configs") or tuple(CONFIGS)
    dim = base_recipe(mode).embedding_dim
    out = []
    for short in names:
        label, changes = CONFIGS[short]
        if changes is None:
            out.append(Config.make(label, seed=0, measure=measure_imagenet or _not_run,
                                   features="gap+gmp"))
        else:
            out += [Config.make(label, seed=s, embedding_dim=dim, **changes)
                    for s in range(seeds)]
    return out


def _not_run(config):
    raise RuntimeError(f"{config.name}: only listed here (for the report), not run.")


def dim_configs(mode):
    spec = MODES[mode]
    out = []
    for loss in spec["dim_losses"]:
        label, changes = CONFIGS[DIM_NAMES[loss]]
        out += [Config.make(label, seed=s, **{**changes, "embedding_dim": d})
                for d in spec["dims"] for s in range(spec["dim_seeds"])]
    return out


# -------------------------------------------------------------- evaluation
def evaluate_split(model, split, recipe, data, ks):
    """Continuous metrics of ``model`` on ``split`` (self-retrieval)."""
    import keras_dml as kd
    tsk = task()
    _, eval_tf, normalization = kd.training.prepare.transforms(recipe, data, tsk)
    ds = kd.data.make_eval_pipeline(split, recipe.eval_batch_size, transform=eval_tf,
                                    normalize=normalization)
    emb, _ = kd.evaluation.embed(model, ds, verbose=0)
    return {k: float(v) for k, v in kd.evaluation.continuous_metrics(
        emb, split.labels, ks=ks, label_distance=tsk.label_distance,
        metric=tsk.metric).items()}


def imagenet_features(recipe, data, unseen):
    """The pretrained backbone without training: GAP + GMP of the last
    feature map, L2-normalised (the features the embedding head reads)."""
    import keras

    import keras_dml as kd
    weights = None if recipe.weights in ("", "none", "None") else recipe.weights
    shape = (recipe.image_size, recipe.image_size, 3)
    backbone = kd.backbones.get(recipe.backbone, input_shape=shape, weights=weights)
    x = keras.Input(shape)
    f = backbone(x, training=False)
    pooled = keras.layers.GlobalAveragePooling2D()(f) + keras.layers.GlobalMaxPooling2D()(f)
    model = keras.Model(x, kd.layers.L2Normalize()(pooled))
    test = evaluate_split(model, data.test, recipe, data, recipe.ks)
    other = evaluate_split(model, unseen, recipe, data, recipe.ks)
    return {"loss": "imagenet_features", "dim": int(pooled.shape[-1]), "metrics": test,
            "extra": {"unseen": other}, "recipe": recipe.to_dict()}


# ----------------------------------------------------------- kNN cost table
def _rss_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(field)


def peak_memory_mb(fn):
    """(result, peak resident memory above the start, MB) of ``fn()``: the
    kernel's high-water mark reset through /proc/self/clear_refs (Linux);
    elsewhere tracemalloc's peak (Python and numpy allocations only)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _rss_kb("VmRSS")
        result = fn()
        return result, max(_rss_kb("VmHWM") - before, 0) / 1024.0
    except OSError:
        import tracemalloc
        tracemalloc.start()
        try:
            result = fn()
            return result, tracemalloc.get_traced_memory()[1] / 2**20
        finally:
            tracemalloc.stop()


def _without_self(idx, k):
    """Drop each row's own index from [N, k+1] neighbours (or the last)."""
    n = len(idx)
    own = idx == np.arange(n)[:, None]
    drop = np.where(own.any(1), own.argmax(1), k)
    keep = np.ones_like(idx, bool)
    keep[np.arange(n), drop] = False
    return idx[keep].reshape(n, k)


def knn_methods():
    """{name: (fn(labels, k) -> indices [N, k], time exponent in N)}."""
    import keras_dml as kd
    methods = {"kd.label_distances.nearest_neighbours (numpy, chunk 2048)": (
        lambda y, k: kd.label_distances.nearest_neighbours(
            y, k=k, distance="squared_l2", chunk_size=2048)[0], 2.0)}
    try:
        import faiss

        def flat(y, k):
            faiss.omp_set_num_threads(os.cpu_count() or 1)
            index = faiss.IndexFlatL2(y.shape[1])
            index.add(np.ascontiguousarray(y, np.float32))
            _, idx = index.search(np.ascontiguousarray(y, np.float32), k + 1)
            return _without_self(idx, k)
        methods["faiss IndexFlatL2 (exact, brute force)"] = (flat, 2.0)
    except ImportError:
        pass
    try:
        from scipy.spatial import cKDTree

        def tree(y, k):
            _, idx = cKDTree(y).query(y, k=k + 1, workers=-1)
            return _without_self(idx, k)
        methods["scipy cKDTree (exact, k-d tree)"] = (tree, 1.2)
    except ImportError:
        pass
    return methods


def knn_cost(ns, label_dim, budget_s, k=5, seed=0, log=print):
    """Time and peak memory of each exact label-space kNN at each N.

    A method is timed at increasing N; where the time predicted from its
    last measurement (x (N / N_last)^exponent: 2 for brute force) exceeds
    ``budget_s`` the entry is that estimate, marked not measured. The
    methods' neighbour lists are compared at the smallest N.
    """
    rows, reference = [], {}
    for name, (fn, exponent) in knn_methods().items():
        last = None
        for n in ns:
            # The same labels for every method at one N.
            labels = np.random.default_rng([seed, n]).uniform(
                -7.5, 7.5, size=(n, label_dim)).astype(np.float32)
            if last is not None:
                predicted = last[1] * (n / last[0]) ** exponent
                if predicted > budget_s:
                    rows.append({"method": name, "n": n, "seconds": predicted,
                                 "peak_mb": None, "measured": False})
                    log(f"[knn] {name} N={n}: estimated {predicted:.0f} s (not run)")
                    continue
            started = time.perf_counter()
            idx, peak = peak_memory_mb(lambda: fn(labels, k))
            seconds = time.perf_counter() - started
            last = (n, seconds)
            rows.append({"method": name, "n": n, "seconds": seconds, "peak_mb": peak,
                         "measured": True})
            log(f"[knn] {name} N={n}: {seconds:.2f} s, peak +{peak:.0f} MB")
            if n == ns[0]:
                reference[name] = (labels, np.sort(idx, axis=1))
    agree = {}
    if reference:
        first = next(iter(reference))
        for name, (_, idx) in reference.items():
            agree[name] = float((idx == reference[first][1]).all(1).mean())
    return rows, agree


def knn_table(rows, agree):
    ns = sorted({r["n"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    body = []
    for m in methods:
        cells = []
        for n in ns:
            r = next((r for r in rows if r["method"] == m and r["n"] == n), None)
            if r is None:
                cells.append("–")
            elif r["measured"]:
                cells.append(f"{r['seconds']:.2f} s / {r['peak_mb']:.0f} MB")
            else:
                cells.append(f"~{r['seconds']:.0f} s (est.)")
        body.append([m] + cells + [f"{agree.get(m, float('nan')) * 100:.1f}%"])
    fastest = {}
    for n in ns:
        measured = [r for r in rows if r["n"] == n and r["measured"]]
        if measured:
            fastest[n] = min(measured, key=lambda r: r["seconds"])["method"]
    return (common.markdown_table(
        ["method"] + [f"N = {n:,}" for n in ns] + [f"same lists as the first at N={ns[0]:,}"],
        body) + "\n\nFastest measured: " + "; ".join(
            f"N={n:,}: {m}" for n, m in fastest.items()) + ".")


# ------------------------------------------------------------------ report
def _dim_of(config):
    return config.change_dict.get("embedding_dim")


def report(output_dir, results, mode, seeds, started):
    spec = MODES[mode]
    sections, paths = [], {}
    main = main_configs(mode, seeds, None)
    groups = common.rows_of(results, main)
    def scale(m):
        return 1.0
    sections.append(
        "## 1. Held-out images of the training classes 0-4 (main table)\n\nMLD@K: mean "
        "label distance of the top K, (10°)² (lower is better); nDCG@K (higher is better)."
        "\n\n" + common.metric_table(groups, METRICS, scale=scale, digits=3, labels=LABELS))
    sections.append("## 2. Unseen classes 5-9\n\n" + common.metric_table(
        groups, METRICS, where="extra.unseen", scale=scale, digits=3, labels=LABELS))

    ks = base_recipe(mode).ks
    key = f"ndcg@{10 if 10 in ks else ks[-1]}"

    def stat(name, metric=key, where="metrics"):
        rows = groups.get(name) or []
        return common.mean_std(common.metric_values(rows, metric, where))

    claims = []
    lr = CONFIGS["dense"][0]
    for short, text in (("dense_triplet", "log-ratio beats dense triplet"),
                        ("binary_triplet", "log-ratio beats binary triplet"),
                        ("imagenet", "log-ratio beats ImageNet features"),
                        ("random", "dense mining helps log-ratio (vs random batches)"),
                        ("plain", "log-ratios beat plain ratios"),
                        ("authors", "all anchors + squared distance beat the authors' "
                                    "first-anchor Euclidean variant"),
                        ("rank_n_contrast", "log-ratio beats Rank-N-Contrast")):
        other = CONFIGS[short][0]
        if other in groups and lr in groups:
            for where, split in (("metrics", "same classes"), ("extra.unseen", "unseen")):
                a, b = stat(lr, where=where), stat(other, where=where)
                if a[2] and b[2]:
                    claims.append(f"- \"{text}\", {split}: {key} log-ratio (dense) "
                                  f"{a[0]:.3f} vs {b[0]:.3f}: "
                                  f"**{common.verdict(a, b, short == 'imagenet')}**")
    if claims:
        sections.append(f"### Claims ({key}; ImageNet features have one, "
                        "seed-independent row)\n\n" + "\n".join(claims))

    # Dimension sweep.
    dims = dim_configs(mode)
    series, body = {}, []
    for loss in spec["dim_losses"]:
        label = CONFIGS[DIM_NAMES[loss]][0]
        stats = []
        for d in spec["dims"]:
            rows = [results.get(c) for c in dims if c.name == label and _dim_of(c) == d]
            stats.append(common.mean_std(common.metric_values([r for r in rows if r], key)))
        series[label] = stats
        body.append([label] + [common.fmt(*s, digits=3) for s in stats])
    paths["dimension"] = common.plot_lines(
        os.path.join(output_dir, "dimension.png"), list(spec["dims"]), series,
        xlabel="embedding dimension", ylabel=f"test {key}",
        title=f"{key} vs embedding dimension (same classes)")
    sections.append(f"## 3. {key} vs embedding dimension, same classes "
                    "(![](dimension.png))\n\n" + common.markdown_table(
                        ["loss"] + [str(d) for d in spec["dims"]], body))
    if len(series) > 1:
        names = list(series)
        gaps = [a[0] - b[0] for a, b in zip(series[names[0]], series[names[1]])]
        sections.append(f"Gap {names[0]} - {names[1]} per dimension: " + ", ".join(
            f"{d}: {g:+.3f}" for d, g in zip(spec["dims"], gaps))
            + " (the paper: the gap widens at low dimensions).")

    # Convergence of validation nDCG.
    curves = {n: [r["history"].get(f"val_ndcg@{KS[0]}", []) for r in rows]
              for n, rows in groups.items() if rows}
    paths["convergence"] = common.plot_curves(
        os.path.join(output_dir, "convergence.png"),
        {n: c for n, c in curves.items() if any(len(x) for x in c)},
        ylabel=f"validation nDCG@{KS[0]}", title="Convergence (epoch 1: warm-up)")

    knn = next((r for r in results.rows.values() if r["name"] == "knn_cost"), None)
    if knn is not None:
        sections.append(
            "## 4. Cost of dense mining's label-space kNN (k = 5, exact, "
            f"{knn['extra']['label_dim']}-d labels; time / peak resident memory above the "
            f"start; est. = extrapolated from the largest measured N by N² (brute force) "
            f"or N^1.2 (tree), not run within the {knn['extra']['budget_s']:.0f} s budget; "
            "small allocations can reuse memory freed earlier and show as ~0 MB)"
            "\n\n" + knn_table(knn["extra"]["rows"], knn["extra"]["agree"]))

    rows = list(results.rows.values())
    meta = common.run_meta(results, started, mode=mode)
    sections.append("## Setting\n\nBase recipe (the configurations change the loss, its "
                    "arguments, the sampler or the dimension):\n\n```\n"
                    + base_recipe(mode).to_flagfile() + "```")
    paths["report"] = common.write_report(
        output_dir, "Log-ratio study: rotated Fashion-MNIST (angle label)", sections, meta)
    results.meta = meta
    results.save()
    return paths


def knn_config(mode, label_dim=1, log=print):
    spec = MODES[mode]

    def measure(config):
        rows, agree = knn_cost(spec["knn_ns"], label_dim, spec["knn_budget"], log=log)
        metrics = {f"{r['method'].split()[0]}@{r['n']}.seconds": r["seconds"] for r in rows}
        return {"loss": "knn_cost", "metrics": metrics,
                "extra": {"rows": rows, "agree": agree, "label_dim": label_dim,
                          "budget_s": spec["knn_budget"]}}

    return Config.make("knn_cost", measure=measure, label_dim=label_dim,
                       ns=tuple(spec["knn_ns"]), budget=spec["knn_budget"])


def main(argv=None, log=print):
    """Run (or resume) the study; returns the paths written."""
    argv = list(sys.argv[1:] if argv is None else argv)
    scale = "--scale" in argv
    argv = [a for a in argv if a != "--scale"]
    args = common.parse_args(argv, __doc__.splitlines()[0] + " (--scale: add a scale "
                             "factor as a second label)")
    common.quiet_tensorflow()
    started = time.monotonic()
    mode, spec = args.mode, MODES[args.mode]
    seeds = args.seeds or spec["seeds"]
    os.makedirs(args.output_dir, exist_ok=True)
    data, unseen = rotated_fashion_mnist(spec["n_train"], spec["n_test"], seed=0,
                                         scale=scale)
    recipe = base_recipe(mode)

    def extra(result, run_recipe):
        return {"unseen": evaluate_split(result.model, unseen, run_recipe, data,
                                         run_recipe.ks)}

    configs = (main_configs(mode, seeds, lambda c: imagenet_features(recipe, data, unseen))
               + dim_configs(mode) + [knn_config(mode, data.train.labels.shape[1], log)])
    results = common.run_grid(configs, recipe, data, args.output_dir, task=task(),
                              extra=extra, verbose=args.verbose, log=log)
    paths = report(args.output_dir, results, mode, seeds, started)
    log(f"[study] wrote {paths['report']} in {time.monotonic() - started:.0f} s")
    return paths


if __name__ == "__main__":
    main()
