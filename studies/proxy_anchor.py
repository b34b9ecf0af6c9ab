"""Proxy Anchor's claims (Kim et al., CVPR 2020) on Fashion-MNIST or CJK glyphs, offline.

    python -m studies.proxy_anchor --output_dir=DIR [--quick] [--dataset=glyphs]

Two regimes. ``--dataset=fashion_mnist`` (default, below): 5 training
classes, every batch holds all of them. ``--dataset=glyphs``: the many-class
benchmark ``kd.data.load_glyphs`` (CJK characters x font designs: 1,200
training classes of which 10% are held out for validation, 1,200 unseen test
classes in full mode), the regime the paper's claims were made for: a batch
sees few classes. There the sampling follows the authors' code per loss:
random batches for the proxy losses, P classes x 3 images for the pair
losses (the runner's ``sampler="auto"``), and training images get the light
glyph augmentation (``kd.data.glyphs.transforms``).

Setting: Fashion-MNIST from the Debian files, training classes 0-4 (a
random subset of their training images; 10% of it held out as validation
for checkpoint selection), test on the unseen classes 5-9 (t10k file);
EfficientNet-Lite0 with its offline ImageNet weights, the demo recipe
(``fashion_mnist_proxy_anchor``: AdamW 1e-4, proxies x100, one warm-up
epoch, frozen BatchNorm) and the same budget for every loss: the same
number of steps of the same batches (5 classes x 12 images; every class
loss sees identical batches).

Measured (mean ± std over seeds):
  1. every class loss (``kd.losses.available(continuous_labels=False)``):
     test R@1/2/4/8, MAP@R, R-precision;
  2. convergence: validation R@1 after each epoch, per loss
     (``convergence.png``; epoch 1 is the warm-up with a frozen backbone);
  3. embedding dimension: Proxy Anchor and the best baseline of table 1
     (``dimension.png``);
  4. alpha x delta sensitivity of Proxy Anchor (``sensitivity.png``).

Outputs: DIR/results.json (one row per configuration and seed), DIR/results.md,
the PNGs, and DIR/runs/<key>/ (each run's history, TensorBoard logs, plots).
Re-running with the same DIR skips the rows already there.
"""

import os
import sys
import time

import numpy as np

from studies import common
from studies.common import Config

BASE_RECIPE = "fashion_mnist_proxy_anchor"
METRICS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision")
LABELS = {"recall@1": "R@1", "recall@2": "R@2", "recall@4": "R@4", "recall@8": "R@8",
          "map@r": "MAP@R", "r_precision": "RP"}

# Budgets. steps = epochs x steps_per_epoch of batch 60, identical for every loss.
MODES = {
    # Sized so that both studies run side by side on 2 cores within 2 hours.
    "full": dict(recipe=dict(image_size=32, max_train_examples=6000, epochs=5,
                             steps_per_epoch=30, max_test_examples=2000),
                 seeds=3, dims=(32, 64, 128, 256), dim_seeds=1,
                 alphas=(4, 16, 32, 64), margins=(0.1, 0.3), grid_seeds=1),
    "quick": dict(recipe=dict(image_size=32, max_train_examples=3000, epochs=3,
                              steps_per_epoch=15, max_test_examples=1000),
                  seeds=2, dims=(16, 32, 64, 128), dim_seeds=1,
                  alphas=(4, 16, 32), margins=(0.1, 0.3), grid_seeds=1),
    "smoke": dict(recipe=dict(backbone="small_cnn", weights="none", image_size=16,
                              embedding_dim=16, max_train_examples=240, epochs=2,
                              steps_per_epoch=2, warmup_epochs=0, max_test_examples=120,
                              eval_batch_size=128, num_plot_queries=2),
                  seeds=1, dims=(8, 16), dim_seeds=1, alphas=(16, 32), margins=(0.1,),
                  grid_seeds=1, losses=("proxy_anchor", "triplet")),
}
MAIN_DIM = 128

# The glyph benchmark. Sampling per loss as the authors (sampler "auto",
# m_per_class=0: random batches for proxy losses, P x 3 for pair losses);
# validation = 10% of the training classes. "render": load_glyphs arguments.
GLYPH_RECIPE = "glyphs_proxy_anchor"
GLYPH_MODES = {
    # Sized for ~2.5 h on 2 quiet cores (see docs/studies/proxy_anchor_glyphs/README.md):
    # the default benchmark (2,400 characters rendered at 64 px, the app's cache), trained
    # at 32 px with a small CNN from scratch, 6 epochs x 60 steps of 60 images.
    "full": dict(render=dict(image_size=64, num_classes=2400),
                 recipe=dict(backbone="small_cnn", weights="none", image_size=32,
                             batch_size=60, epochs=6, steps_per_epoch=60, warmup_epochs=0,
                             freeze_bn=False, max_test_examples=6000, eval_batch_size=512,
                             lr=1e-3, proxy_lr_multiplier=10, lr_decay_epochs=(),
                             num_plot_queries=4),
                 seeds=3, dims=(32, 64, 128, 256), dim_seeds=1,
                 alphas=(4, 16, 32, 64), margins=(0.1, 0.3), grid_seeds=1),
    # A few minutes: 400 characters (200 train incl. 20 validation, 200 test), 1 seed,
    # five losses, two dimensions, two grid cells.
    "quick": dict(render=dict(image_size=32, num_classes=400, min_train_classes=0,
                              min_test_classes=0),
                  recipe=dict(backbone="small_cnn", weights="none", image_size=32,
                              batch_size=60, epochs=3, steps_per_epoch=20, warmup_epochs=0,
                              freeze_bn=False, max_test_examples=2000, eval_batch_size=512,
                              lr=1e-3, proxy_lr_multiplier=10, lr_decay_epochs=(),
                              num_plot_queries=2),
                  seeds=1, dims=(32, 128), dim_seeds=1, alphas=(16, 32), margins=(0.1,),
                  grid_seeds=1, losses=("proxy_anchor", "proxy_nca", "multi_similarity",
                                        "triplet", "contrastive")),
    "smoke": dict(render=dict(image_size=16, num_classes=60, min_train_classes=0,
                              min_test_classes=0),
                  recipe=dict(backbone="small_cnn", weights="none", image_size=16,
                              embedding_dim=16, batch_size=24, epochs=2, steps_per_epoch=2,
                              warmup_epochs=0, freeze_bn=False, max_test_examples=240,
                              eval_batch_size=128, num_plot_queries=2, lr_decay_epochs=()),
                  seeds=1, dims=(8, 16), dim_seeds=1, alphas=(16, 32), margins=(0.1,),
                  grid_seeds=1, losses=("proxy_anchor", "triplet")),
}
# --reduced: the full mode's data and recipe, one seed, five losses, no sweeps (what fitted
# in a session whose 2 cores were shared; labelled as such in its report).
GLYPH_MODES["reduced"] = dict(GLYPH_MODES["full"], seeds=1, dims=(128,), alphas=(32,),
                              margins=(0.1,),
                              losses=("proxy_anchor", "proxy_nca", "multi_similarity",
                                      "triplet", "contrastive"))
DATASETS = ("fashion_mnist", "glyphs")


def _modes(dataset):
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}; got {dataset!r}.")
    return GLYPH_MODES if dataset == "glyphs" else MODES


def base_recipe(mode, dataset="fashion_mnist"):
    import keras_dml as kd
    spec = _modes(dataset)[mode]
    if dataset == "glyphs":
        recipe = kd.training.Recipe.from_flagfile(GLYPH_RECIPE)
        changes = dict(m_per_class=0, sampler="auto", val_fraction=0.1, val_split="classes",
                       embedding_dim=MAIN_DIM)
    else:
        recipe = kd.training.Recipe.from_flagfile(BASE_RECIPE)
        # 5 classes x 12 images = 60 for every loss (the P x M sampler for all).
        changes = dict(batch_size=60, m_per_class=12, val_fraction=0.1, val_split="examples",
                       embedding_dim=MAIN_DIM)
    changes.update(spec["recipe"])
    recipe = recipe.replace(**changes)
    return recipe


def loss_names(mode, dataset="fashion_mnist"):
    import keras_dml as kd
    return list(_modes(dataset)[mode].get("losses")
                or kd.losses.available(continuous_labels=False))


# Extra rows: the paper's semi-hard triplet on all triplets, and
# multi-similarity against a cross-batch memory (XBM) of four batches.
EXTRA_LOSSES = {"triplet (all triplets)": dict(loss="triplet", loss_kwargs="mining=all"),
                "multi_similarity + XBM (memory 240)": dict(loss="multi_similarity",
                                                            memory_size=240)}


def loss_changes(mode, dataset="fashion_mnist"):
    """Row name -> recipe changes, for every loss of the table."""
    out = {name: dict(loss=name) for name in loss_names(mode, dataset)}
    if not _modes(dataset)[mode].get("losses"):
        out.update(EXTRA_LOSSES)
    return out


def loss_configs(mode, seeds, dataset="fashion_mnist"):
    dim = base_recipe(mode, dataset).embedding_dim
    return [Config.make(name, seed=s, embedding_dim=dim, **changes)
            for name, changes in loss_changes(mode, dataset).items() for s in range(seeds)]


def best_baseline(results, configs):
    """The baseline loss with the best mean test R@1 in the loss table."""
    groups = common.rows_of(results, configs)
    scores = {name: common.mean_std(common.metric_values(rows, "recall@1"))[0]
              for name, rows in groups.items() if name != "proxy_anchor" and rows}
    return max(scores, key=lambda n: scores[n]) if scores else None


def dim_configs(mode, names, dataset="fashion_mnist"):
    spec, changes = _modes(dataset)[mode], loss_changes(mode, dataset)
    return [Config.make(name, seed=s, **{**changes[name], "embedding_dim": d})
            for name in names for d in spec["dims"] for s in range(spec["dim_seeds"])]


def grid_configs(mode, dataset="fashion_mnist"):
    spec = _modes(dataset)[mode]
    default = (32.0, 0.1)
    out = []
    for a in spec["alphas"]:
        for m in spec["margins"]:
            changes = dict(loss="proxy_anchor",
                           embedding_dim=base_recipe(mode, dataset).embedding_dim)
            if (float(a), float(m)) != default:       # the default is the table-1 run
                changes["loss_kwargs"] = f"alpha={a},margin={m}"
            out += [Config.make(f"alpha={a}, delta={m}", seed=s, **changes)
                    for s in range(spec["grid_seeds"])]
    return out


def report(output_dir, results, mode, seeds, started, dataset="fashion_mnist", data=None):
    """results.md and the PNGs from the rows present."""
    spec = _modes(dataset)[mode]
    sections, paths = [], {}
    losses = loss_configs(mode, seeds, dataset)
    groups = common.rows_of(results, losses)
    unseen = "unseen classes 5-9" if dataset == "fashion_mnist" else (
        f"{data.test.num_classes} unseen characters" if data is not None
        else "unseen characters")
    sections.append(f"## 1. Class losses, {unseen} (%)\n\n" + common.metric_table(
        groups, METRICS, labels=LABELS))
    r1 = {n: common.mean_std(common.metric_values(rows, "recall@1"))
          for n, rows in groups.items() if rows}
    if "proxy_anchor" in r1 and len(r1) > 1:
        best = best_baseline(results, losses)
        pa, bb = r1["proxy_anchor"], r1[best]
        sections.append(f"Claim \"Proxy Anchor beats the baselines\" (R@1): Proxy Anchor "
                        f"{pa[0] * 100:.1f}, best baseline {best} {bb[0] * 100:.1f}: "
                        f"**{common.verdict(pa, bb)}** at this scale.")

    # Convergence: validation R@1 per epoch.
    curves = {n: [r["history"].get("val_recall@1", []) for r in rows]
              for n, rows in groups.items() if rows}
    paths["convergence"] = common.plot_curves(
        os.path.join(output_dir, "convergence.png"),
        {n: [np.asarray(c) * 100 for c in cs] for n, cs in curves.items()},
        ylabel="validation R@1 (%)",
        title="Convergence (epoch 1: warm-up, frozen backbone)")
    conv_rows = []
    for n, cs in curves.items():
        cs = [c for c in cs if c]
        if cs:
            length = min(len(c) for c in cs)
            mean = np.mean([c[:length] for c in cs], axis=0) * 100
            conv_rows.append([n] + [f"{v:.1f}" for v in mean])
    # The first epoch after the warm-up: the fastest-convergence claim.
    w = base_recipe(mode, dataset).warmup_epochs
    first = {n: common.mean_std([c[w] if len(c) > w else None for c in cs])
             for n, cs in curves.items()}
    first = {n: v for n, v in first.items() if v[2]}
    if "proxy_anchor" in first and len(first) > 1:
        rival = max((n for n in first if n != "proxy_anchor"), key=lambda n: first[n][0])
        pa, bb = first["proxy_anchor"], first[rival]
        conv_rows.append([])
        claim = (f"Claim \"fastest convergence\" (validation R@1 after the first epoch "
                 f"past the warm-up): Proxy Anchor {pa[0] * 100:.1f}, best other {rival} "
                 f"{bb[0] * 100:.1f}: **{common.verdict(pa, bb)}**.")
    else:
        claim = ""
    conv_rows = [r for r in conv_rows if r]
    if conv_rows:
        width = max(len(r) for r in conv_rows) - 1
        sections.append("## 2. Convergence: validation R@1 (%) after each epoch "
                        "(mean over seeds; ![](convergence.png))\n\n" + common.markdown_table(
                            ["loss"] + [f"epoch {e + 1}" for e in range(width)],
                            [r + [""] * (width + 1 - len(r)) for r in conv_rows])
                        + ("\n\n" + claim if claim else ""))

    # Embedding dimension.
    best = best_baseline(results, losses)
    if best is not None:
        dims = dim_configs(mode, ["proxy_anchor", best], dataset)
        series, body = {}, []
        for loss in ("proxy_anchor", best):
            stats = []
            for d in spec["dims"]:
                rows = [results.get(c) for c in dims
                        if c.name == loss and c.change_dict["embedding_dim"] == d]
                rows = [r for r in rows if r]
                stats.append(common.mean_std(common.metric_values(rows, "recall@1")))
            series[loss] = [(m * 100, s * 100, n) for m, s, n in stats]
            body.append([loss] + [common.fmt(*s, scale=100) for s in stats])
        paths["dimension"] = common.plot_lines(
            os.path.join(output_dir, "dimension.png"), list(spec["dims"]), series,
            xlabel="embedding dimension", ylabel="test R@1 (%)",
            title="R@1 vs embedding dimension")
        wins = [common.verdict(a, b) for a, b in zip(series["proxy_anchor"], series[best])]
        sections.append("## 3. Test R@1 (%) vs embedding dimension (![](dimension.png))\n\n"
                        + common.markdown_table(["loss"] + [str(d) for d in spec["dims"]],
                                                body)
                        + f"\n\nProxy Anchor vs {best} per dimension: "
                        + ", ".join(f"{d}: {w}" for d, w in zip(spec["dims"], wins)) + ".")

    # Sensitivity.
    grid = grid_configs(mode, dataset)
    values = np.full((len(spec["alphas"]), len(spec["margins"])), np.nan)
    for i, a in enumerate(spec["alphas"]):
        for j, m in enumerate(spec["margins"]):
            name = f"alpha={a}, delta={m}"
            rows = [results.get(c) for c in grid if c.name == name]
            values[i, j] = common.mean_std(common.metric_values(
                [r for r in rows if r], "recall@1"))[0] * 100
    paths["sensitivity"] = common.plot_heatmap(
        os.path.join(output_dir, "sensitivity.png"), values, spec["alphas"],
        spec["margins"], xlabel="margin delta", ylabel="scale alpha",
        title="Proxy Anchor test R@1 (%)")
    sections.append("## 4. Proxy Anchor test R@1 (%), alpha (rows) x delta (columns) "
                    "(![](sensitivity.png))\n\n" + common.markdown_table(
                        ["alpha \\ delta"] + [str(m) for m in spec["margins"]],
                        [[str(a)] + [("–" if not np.isfinite(v) else f"{v:.1f}")
                                     for v in values[i]]
                         for i, a in enumerate(spec["alphas"])]))

    alphas = np.asarray(spec["alphas"], float)
    hi, lo = values[alphas >= 16], values[alphas < 16]
    hi, lo = hi[np.isfinite(hi)], lo[np.isfinite(lo)]
    if hi.size:
        sections.append(
            f"Claim \"stable for alpha >= 16\": test R@1 over the alpha >= 16 cells spans "
            f"{hi.min():.1f}-{hi.max():.1f} (range {hi.max() - hi.min():.1f} points)"
            + (f"; alpha < 16 cells span {lo.min():.1f}-{lo.max():.1f}" if lo.size else "")
            + f". Grid cells have {spec['grid_seeds']} seed(s): compare the range with the "
            "seed std of table 1.")

    meta = common.run_meta(results, started, mode=mode, dataset=dataset)
    recipe = base_recipe(mode, dataset)
    setting = ("## Setting\n\n" + (_glyph_setting(data, spec, loss_names(mode, dataset)) if dataset == "glyphs" else "")
               + "Base recipe (every run; the tables change only the loss, its arguments or "
               "the dimension):\n\n```\n" + recipe.to_flagfile() + "```")
    sections.append(setting)
    title = ("Proxy Anchor study: Fashion-MNIST, unseen classes 5-9" if dataset == "fashion_mnist"
             else "Proxy Anchor study: CJK glyphs, unseen characters")
    if mode == "reduced":
        title += (" (REDUCED: 1 seed, 5 losses, no dimension or alpha/delta sweeps; "
                  "not the full study)")
    paths["report"] = common.write_report(output_dir, title, sections, meta)
    results.meta = meta
    results.save()
    return paths


def _glyph_setting(data, spec, names):
    import keras_dml as kd
    if data is None:
        return ""
    # The runner's sampler="auto": random batches exactly for the losses with proxies.
    proxy_losses = [n for n in names if kd.losses.get(n).takes_proxies]
    info = data.info
    args = ", ".join(f"{k}={v}" for k, v in spec["render"].items())
    return (f"Data: `kd.data.load_glyphs({args})`"
            f": {info['num_faces']} CJK font faces in {info['num_designs']} distinct designs; "
            f"{data.num_train_classes} training characters (10% of them held out for "
            f"validation by class) and {data.test.num_classes} unseen test characters, "
            f"{info['examples_per_class']:.1f} designs (examples) per character. Sampling per "
            f"loss as the authors: random batches for the losses with class proxies "
            f"({', '.join(proxy_losses)}), P classes x 3 images for the pair losses; "
            "training augmentation: stroke-width jitter and a small affine map.\n\n")


def add_arguments(parser):
    parser.add_argument("--dataset", choices=DATASETS, default="fashion_mnist",
                        help="fashion_mnist (5 training classes) or glyphs (the many-class "
                             "CJK glyph benchmark, kd.data.load_glyphs).")
    parser.add_argument("--reduced", action="store_true",
                        help="glyphs: the full mode's data and recipe with 1 seed, 5 losses "
                             "and no sweeps (a reduced study, labelled as such).")


def main(argv=None, log=print):
    """Run (or resume) the study; returns the paths written."""
    import keras_dml as kd
    args = common.parse_args(argv, __doc__.splitlines()[0], add_arguments=add_arguments)
    common.quiet_tensorflow()
    started = time.monotonic()
    mode, dataset = args.mode, args.dataset
    if args.reduced:
        if dataset != "glyphs" or mode != "full":
            raise SystemExit("--reduced is a glyph study mode (--dataset=glyphs, without "
                             "--quick / --smoke).")
        mode = "reduced"
    seeds = args.seeds or _modes(dataset)[mode]["seeds"]
    os.makedirs(args.output_dir, exist_ok=True)
    if dataset == "glyphs":
        # label_type "glyph": the runner's glyph task (class labels, glyph transforms).
        data = kd.data.load_glyphs(seed=0, **GLYPH_MODES[mode]["render"])
        log(f"[study] glyphs: {data}")
    else:
        data = kd.data.load_fashion_mnist()
    task = None
    recipe = base_recipe(mode, dataset)
    losses = loss_configs(mode, seeds, dataset)
    results = common.run_grid(losses, recipe, data, args.output_dir, task=task,
                              verbose=args.verbose, log=log)
    best = best_baseline(results, losses)
    staged = dim_configs(mode, ["proxy_anchor", best], dataset) + grid_configs(mode, dataset)
    results = common.run_grid(staged, recipe, data, args.output_dir, task=task,
                              verbose=args.verbose, log=log)
    paths = report(args.output_dir, results, mode, seeds, started, dataset, data)
    log(f"[study] wrote {paths['report']} in {time.monotonic() - started:.0f} s")
    return paths


if __name__ == "__main__":
    main(sys.argv[1:])
