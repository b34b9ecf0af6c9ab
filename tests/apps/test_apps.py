"""Smoke tests of every absl app (apps/*.py) on fixture data in the real
on-disk formats: a few training steps, evaluation, reports, export.

Each run is a subprocess (``tests/app_runner.py``: the app's ``main``
through ``absl.app.run``, the TFDS builders mocked with
``tfds.testing.mock_data``, the captions' MiniLM encoder replaced by a toy
one). The runs are independent, so they start together on a small thread
pool when the first test asks for one (only the runs of the selected
tests); each test then checks its own run's outputs.

Checked per run: exit code 0; ``metrics.json`` with the app's keys (Recall@K
for its ks, MAP@R, R-precision; or mean label distance@K and nDCG@K),
finite and in range; ``history.csv`` and TensorBoard logs;
``recall_curve.png`` and ``retrievals.png`` valid PNGs; ``saved_model/``
loads, and ``serving_default`` maps uint8 images of the data's native shape
to L2-normalised embeddings of ``--embedding_dim``. Also: ``--flagfile``
(overridden after it), ``--noexport``, ``--resume`` (refused without it,
continued with it), the continuous apps' early K check, and the demo's
acceptance criterion (its Recall@K reproduced from the SavedModel in a fresh
process).

Class runs also write ``index/`` (the test gallery as a ``kd.retrieval.Index``
with metadata and thumbnails; ``--noindex`` on cars196 skips it) and the
Embedding Projector run ``logs/projector``; ``keras-dml search`` is run on
the demo's outputs (its neighbours equal ``Index.search`` of the
SavedModel's embedding of the same image) and given bad input.
"""

import concurrent.futures
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import app_fixtures

REPO = Path(__file__).resolve().parents[2]  # tests/apps/ -> the checkout
RUNNER = str(REPO / "tests" / "app_runner.py")
DIM = 16
SIZE = 32
COMMON = ["--backbone=small_cnn", "--weights=none", f"--image_size={SIZE}",
          "--epochs=1", "--steps_per_epoch=2", f"--embedding_dim={DIM}",
          "--eval_batch_size=64"]
PARALLEL_RUNS = 2
TIMEOUT = 600
# The fixtures' validation sets hold 3-4 items, so the class runs use small
# K (K must be below the items a query can retrieve; the runner checks it).
CLASS_KS = {"cub200": [1, 2], "cars196": [1, 2, 4, 8], "sop": [1],
            "inshop": [1], "fashion_mnist": [1, 2, 4, 8]}
CONTINUOUS_KS = [1, 5, 10, 20]


def run_app(app, out, flags=(), runner=(), common=True, console=False):
    """One app run in a fresh process; returns the CompletedProcess.
    ``console``: the environment a person has (TensorFlow's log level and the
    visible devices not set), to check what the console shows."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")
    if console:
        env = {k: v for k, v in os.environ.items()
               if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")}
    argv = [sys.executable, RUNNER, app, *runner, "--",
            *(COMMON if common else []), *flags, f"--output_dir={out}"]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


def ok(proc):
    assert proc.returncode == 0, (f"exit code {proc.returncode}\n--- stderr (tail):\n"
                                  + proc.stderr[-6000:])


# ------------------------------------------------------------- the runs
def _cub200(root):
    out = root / "cub200"
    flags_json = root / "cub200_flags.json"
    proc = run_app("cub200", out, runner=["--tfds_mock", f"--dump_flags={flags_json}"],
                   common=False, flags=[
                       "--flagfile=flags/cub200_proxy_anchor.cfg", *COMMON, "--batch_size=8",
                       "--ks=1,2",
                       f"--data_dir={root / 'tfds'}"])
    return dict(procs=[proc], out=out, flags_json=flags_json)


def _cars196(root):
    out = root / "cars196"
    proc = run_app("cars196", out, runner=["--tfds_mock"], flags=[
        "--batch_size=8", "--loss=multi_similarity", "--m_per_class=2", "--noindex",
        "--warmup_epochs=0", "--val_split=examples", "--val_fraction=0",
        f"--data_dir={root / 'tfds'}"])
    return dict(procs=[proc], out=out)


def _sop(root):
    out = root / "sop"
    flags_json = root / "sop_flags.json"
    # --recipe by packaged name: its values are the defaults, flags override them.
    proc = run_app("sop", out, runner=["--tfds_mock", f"--dump_flags={flags_json}"],
                   flags=["--recipe=sop_proxy_anchor", "--batch_size=8", "--loss=proxy_nca",
                          "--ks=1",
                          "--noexport", f"--data_dir={root / 'tfds'}"])
    return dict(procs=[proc], out=out, flags_json=flags_json)


def _inshop(root):
    data = root / "inshop_data"
    app_fixtures.write_inshop(data)
    out = root / "inshop"
    flags = ["--batch_size=8", "--epochs=2", "--ks=1", f"--data_dir={data}"]
    first = run_app("inshop", out, flags, runner=["--interrupt_after=1"])
    state = {}
    if (out / "best.weights.h5").exists():
        state["best_after_interrupt"] = (out / "best.weights.h5").read_bytes()
        state["backup_after_interrupt"] = sorted(os.listdir(out / "backup"))
    refused = run_app("inshop", out, flags)
    resumed = run_app("inshop", out, [*flags, "--resume"])
    return dict(procs=[resumed], first=first, refused=refused, out=out, **state)


def _pose(root):
    data = root / "mpii_data"
    app_fixtures.write_mpii(data)
    out = root / "pose"
    # Default --val_fraction=0.1: too few validation persons for K=20.
    too_few = run_app("pose", root / "pose_too_few", ["--batch_size=12", f"--data_dir={data}"])
    proc = run_app("pose", out, ["--batch_size=12", "--loss=log_ratio", "--val_fraction=0.4",
                                 f"--data_dir={data}"])
    return dict(procs=[proc], out=out, too_few=too_few,
                too_few_out=root / "pose_too_few")


def _layout(root):
    data = root / "lsun_data"
    app_fixtures.write_lsun(data)
    out = root / "layout"
    proc = run_app("layout", out, ["--batch_size=12", "--loss=dense_triplet",
                                   "--val_fraction=0.4", f"--data_dir={data}"])
    return dict(procs=[proc], out=out)


def _captions(root):
    data = root / "coco_data"
    app_fixtures.write_coco(data)
    out = root / "captions"
    proc = run_app("captions", out, ["--batch_size=12", "--val_fraction=0.4",
                                     f"--data_dir={data}"], runner=["--bow_encoder"])
    return dict(procs=[proc], out=out, data=data)


FRESH_EMBED = r"""
import json, sys
import numpy as np
import tensorflow as tf
import keras_dml as kd
model = tf.saved_model.load(sys.argv[1])
arrays = np.load(sys.argv[2])
emb = model.signatures["serving_default"](images=tf.constant(arrays["images"]))["embeddings"]
metrics = kd.evaluation.retrieval_metrics(emb.numpy(), arrays["labels"],
                                          ks=json.loads(sys.argv[3]))
print("METRICS " + json.dumps({k: float(v) for k, v in metrics.items()}))
"""


def _fashion_mnist(root):
    data = root / "fashion_data"
    arrays = app_fixtures.write_fashion_mnist(str(data))
    out = root / "fashion_mnist"
    # --data_dir names the idx folder (issue 17.5: it was ignored for the
    # Debian copy); the console environment of a person (issue 17.8).
    proc = run_app("fashion_mnist", out, ["--batch_size=16", f"--data_dir={data}",
                                          "--source=files"], console=True)
    result = dict(procs=[proc], out=out)
    if proc.returncode != 0:
        return result
    # The unseen classes 5-9 of the test file, in file order, as the app
    # reads them (no --max_test_examples: the whole split).
    images, labels = arrays["test"]
    keep = labels >= 5
    npz = root / "fashion_test.npz"
    np.savez(npz, images=images[keep][..., None], labels=labels[keep].astype(np.int64) - 5)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")
    result["fresh"] = subprocess.run(
        [sys.executable, "-c", FRESH_EMBED, str(out / "saved_model"), str(npz),
         json.dumps(CLASS_KS["fashion_mnist"])],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    result["num_test"] = int(keep.sum())
    result["test_images"] = images[keep][..., None]
    return result


RUNS = {"cub200": _cub200, "cars196": _cars196, "sop": _sop, "inshop": _inshop,
        "pose": _pose, "layout": _layout, "captions": _captions,
        "fashion_mnist": _fashion_mnist}


class Runs:
    """Starts the selected runs together, hands out their results."""

    def __init__(self, root, names):
        self.pool = concurrent.futures.ThreadPoolExecutor(PARALLEL_RUNS)
        # Longest first: the pool finishes sooner.
        order = ["inshop", "fashion_mnist", "pose", "cub200", "captions", "cars196",
                 "layout", "sop"]
        self.futures = {n: self.pool.submit(RUNS[n], root) for n in order if n in names}

    def __getitem__(self, name):
        return self.futures[name].result()


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    # Test "test_<run name>_..." checks run <run name>: start only those.
    selected = [item.originalname[len("test_"):] for item in request.session.items
                if item.module is request.module]
    names = {n for n in RUNS if any(s.startswith(n + "_") for s in selected)}
    r = Runs(tmp_path_factory.mktemp("apps"), names)
    yield r
    r.pool.shutdown(wait=True)


# --------------------------------------------------------------- checks
def read_metrics(out):
    with open(out / "metrics.json") as f:
        return json.load(f)


def check_class_metrics(out, app, num_queries, validation=True):
    m = read_metrics(out)
    ks = CLASS_KS[app]
    keys = [f"recall@{k}" for k in ks] + ["map@r", "r_precision"]
    for key in keys:
        assert key in m, (key, sorted(m))
        assert isinstance(m[key], float) and math.isfinite(m[key]) and 0.0 <= m[key] <= 1.0, \
            (key, m[key])
    recalls = [m[f"recall@{k}"] for k in ks]
    assert recalls == sorted(recalls), recalls           # non-decreasing in K
    assert m["map@r"] <= m["r_precision"] + 1e-12 and m["r_precision"] <= 1.0
    assert m["num_queries"] == num_queries
    assert m["embedding_dim"] == DIM and m["backbone"] == "small_cnn"
    assert m["selected_by"] == ("val_recall@1" if validation else "last epoch")
    return m


def check_continuous_metrics(out, num_queries, loss):
    m = read_metrics(out)
    for k in CONTINUOUS_KS:
        d, g = m[f"mean_label_distance@{k}"], m[f"ndcg@{k}"]
        assert math.isfinite(d) and d >= 0.0, (k, d)
        assert math.isfinite(g) and 0.0 < g <= 1.0, (k, g)
    assert m["num_queries"] == num_queries and m["loss"] == loss
    assert m["selected_by"] == "val_ndcg@1"
    return m


def check_png(path):
    assert path.exists(), path
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] > 50 and im.size[1] > 50, im.size


def check_history(out, epochs, validation):
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))
    for r in rows:
        assert math.isfinite(float(r["loss"]))
        val = [v for k, v in r.items() if k.startswith("val_")]
        if validation:
            assert val and all(math.isfinite(float(v)) for v in val), r
        else:     # Keras' CSVLogger writes val_* columns as NA without validation
            assert all(v == "NA" for v in val), r
    assert list((out / "logs" / "train").glob("events.out.tfevents.*"))
    return rows


def check_reports(out, epochs=1, validation=True):
    check_history(out, epochs, validation)
    if validation:
        check_png(out / "recall_curve.png")
    else:
        assert not (out / "recall_curve.png").exists()
    check_png(out / "retrievals.png")
    assert (out / "best.weights.h5").exists()
    assert not (out / "backup").exists()      # a finished run leaves no backup


def check_saved_model(out, native_shape, seed=0):
    import tensorflow as tf
    path = out / "saved_model"
    with open(path / "assets.extra" / "keras_dml.json") as f:
        # Data sets of varying image size serve any size through the eval transform.
        assert json.load(f)["image_shape"] in (list(native_shape),
                                               [None, None, native_shape[-1]])
    model = tf.saved_model.load(str(path))
    images = np.random.default_rng(seed).integers(0, 256, (3, *native_shape), dtype=np.uint8)
    serve = model.signatures["serving_default"]
    emb = serve(images=tf.constant(images))["embeddings"].numpy()
    assert emb.shape == (3, DIM) and emb.dtype == np.float32
    assert np.all(np.isfinite(emb))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # Different images, different embeddings (not a constant map).
    assert np.abs(emb[0] - emb[1]).max() > 1e-6
    # The encoded-bytes signature: a PNG of the same image, the same embedding.
    png = app_fixtures.encode(images[0].squeeze(-1) if native_shape[-1] == 1 else images[0],
                              "PNG")
    from_bytes = model.signatures["serving_bytes"](
        image_bytes=tf.constant([png]))["embeddings"].numpy()
    np.testing.assert_allclose(from_bytes[0], emb[0], atol=1e-5)


def check_index(out, size, split, paths=False):
    """``out/index`` reloads with one item per gallery image, labels, and
    metadata saying where each image is; ``thumbnails.npy`` has a row each."""
    import keras_dml as kd
    index = kd.retrieval.Index.load(str(out / "index"))
    assert len(index) == size and index.dim == DIM and index.metric == "cosine"
    np.testing.assert_array_equal(index.ids, np.arange(size))
    assert index.labels.min() >= 0
    thumbs = np.load(out / "index" / "thumbnails.npy")
    assert thumbs.dtype == np.uint8 and thumbs.ndim == 4 and len(thumbs) == size
    for row, m in enumerate(index.metadata):
        assert m["split"] == split and m["thumbnail"] == row and m["name"], m
        assert isinstance(m["index"], int)
        assert ("path" in m) == paths, m
        if paths:
            assert os.path.isfile(m["path"]), m
    return index


def check_projector(out, size):
    """The Embedding Projector run: config -> checkpoint tensor, metadata TSV
    (header + one row per point), sprite PNG of the thumbnails."""
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorboard.plugins import projector
    run = out / "logs" / "projector"
    config = text_format.Parse((run / "projector_config.pbtxt").read_text(),
                               projector.ProjectorConfig())
    info, = config.embeddings
    assert info.metadata_path == "metadata.tsv" and info.sprite.image_path == "sprite.png"
    reader = tf.train.load_checkpoint(str(run))
    assert reader.get_variable_to_shape_map()[info.tensor_name] == [size, DIM]
    rows = (run / info.metadata_path).read_text().splitlines()
    assert rows[0].split("\t")[0] == "label" and len(rows) == size + 1
    with Image.open(run / "sprite.png") as im:
        side = int(np.ceil(np.sqrt(size))) * info.sprite.single_image_dim[0]
        assert im.size == (side, side)
    assert list(run.glob("events.out.tfevents.*"))      # TensorBoard lists it as a run


def check_run(result, native_shape=None, epochs=1, validation=True):
    for proc in result["procs"]:
        ok(proc)
    out = result["out"]
    check_reports(out, epochs, validation)
    if native_shape is None:
        assert not (out / "saved_model").exists()
    else:
        check_saved_model(out, native_shape)


# ---------------------------------------------------------------- tests
def tfds_test_size(benchmark):
    ids = app_fixtures.TFDS_SPECS[benchmark]["ids"]()
    lo = {"cub200": 100, "cars196": 98, "sop": 11318}[benchmark]
    return int(sum((np.asarray(v) >= lo).sum() for v in ids.values()))


def test_cub200_flagfile_proxy_anchor_warmup(runs):
    r = runs["cub200"]
    check_run(r, native_shape=(SIZE, SIZE, 3))
    m = check_class_metrics(r["out"], "cub200", tfds_test_size("cub200"))
    check_index(r["out"], m["num_queries"], "test")
    check_projector(r["out"], m["num_queries"])
    assert m["data"] == "cub200" and m["loss"] == "proxy_anchor" and m["split"] == "test"
    # The flagfile's recipe, with the flags after it taking precedence.
    with open(r["flags_json"]) as f:
        fl = json.load(f)
    assert fl["loss"] == "proxy_anchor" and fl["optimizer"] == "adamw"
    assert fl["freeze_bn"] is True and fl["warmup_epochs"] == 1
    assert fl["proxy_lr_multiplier"] == 100 and fl["lr"] == pytest.approx(1e-4)
    assert fl["lr_decay_epochs"] == ["10"] and fl["lr_decay_gamma"] == 0.5
    assert fl["backbone"] == "small_cnn" and fl["weights"] == "none"
    assert fl["image_size"] == SIZE and fl["embedding_dim"] == DIM
    assert fl["batch_size"] == 8 and fl["epochs"] == 1


def test_cars196_multi_similarity_m_per_class_no_validation(runs):
    r = runs["cars196"]
    # --val_fraction=0: no validation set, the last epoch is kept.
    check_run(r, native_shape=(SIZE, SIZE, 3), validation=False)
    m = check_class_metrics(r["out"], "cars196", tfds_test_size("cars196"),
                            validation=False)
    # --noindex: no index, but the Projector run all the same.
    assert not (r["out"] / "index").exists()
    check_projector(r["out"], m["num_queries"])
    assert m["data"] == "cars196" and m["loss"] == "multi_similarity"


def test_sop_proxy_nca_noexport(runs):
    r = runs["sop"]
    check_run(r, native_shape=None)
    m = check_class_metrics(r["out"], "sop", tfds_test_size("sop"))
    check_index(r["out"], m["num_queries"], "test")
    assert m["data"] == "sop" and m["loss"] == "proxy_nca"
    with open(r["flags_json"]) as f:
        fl = json.load(f)
    assert fl["recipe"] == "sop_proxy_anchor" and fl["ks"] == ["1"]
    assert fl["lr"] == pytest.approx(6e-4) and fl["lr_decay_gamma"] == 0.25
    assert fl["freeze_bn"] is False and fl["loss"] == "proxy_nca"
    # The recipe that ran, as a flagfile in the run directory.
    import keras_dml as kd
    ran = kd.training.Recipe.from_flagfile(str(r["out"] / "recipe.cfg"))
    assert ran.loss == "proxy_nca" and ran.batch_size == 8 and ran.ks == (1,)


def test_inshop_resume_query_gallery(runs):
    r = runs["inshop"]
    out = r["out"]
    first, refused = r["first"], r["refused"]
    # 1) the interrupted run died after its first epoch, leaving backup/.
    assert first.returncode != 0 and "SimulatedInterruption" in first.stderr, \
        first.stderr[-3000:]
    assert r.get("backup_after_interrupt"), "no backup/ after the interrupted run"
    # 2) without --resume: refused with a message that says what to do.
    assert refused.returncode != 0
    assert "interrupted run" in refused.stderr and "--resume" in refused.stderr, \
        refused.stderr[-3000:]
    # 3) with --resume: epoch 1 only (history appended: epochs 0, 1), then
    # the usual outputs.
    check_run(r, native_shape=(SIZE, SIZE, 3), epochs=2)
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    m = check_class_metrics(out, "inshop", num_queries=12)
    # The index is the gallery (12 images, files on disk: their paths).
    index = check_index(out, 12, "gallery", paths=True)
    # Original classes: the In-Shop item numbers of the fixture's test items.
    assert {md["class"] for md in index.metadata} == set(range(100, 106))
    check_projector(out, 12)
    assert m["split"] == "query/gallery" and m["epochs"] == 2
    # The best checkpoint is only replaced by a better epoch than the
    # interrupted run's best.
    val = [float(row["val_recall@1"]) for row in rows]
    replaced = (out / "best.weights.h5").read_bytes() != r["best_after_interrupt"]
    assert replaced == (val[1] > val[0]), (val, replaced)


def test_pose_log_ratio_and_early_k_check(runs):
    r = runs["pose"]
    too_few = r["too_few"]
    assert too_few.returncode != 0
    assert "ks up to 20 needs more than 20 other validation examples" in too_few.stderr, \
        too_few.stderr[-3000:]
    assert not (r["too_few_out"] / "history.csv").exists()    # failed before training
    check_run(r, native_shape=(288, 288, 3))
    m = read_metrics(r["out"])
    check_continuous_metrics(r["out"], m["num_queries"], "log_ratio")
    assert m["data"] == "mpii_pose" and m["num_queries"] > 20


def test_layout_dense_triplet(runs):
    r = runs["layout"]
    check_run(r, native_shape=(SIZE, SIZE, 3))
    m = check_continuous_metrics(r["out"], 26, "dense_triplet")
    assert m["data"] == "lsun_layout"
    for k in CONTINUOUS_KS:                      # 1 - mIoU lies in [0, 1]
        assert m[f"mean_label_distance@{k}"] <= 1.0


def test_captions_log_ratio(runs):
    r = runs["captions"]
    check_run(r, native_shape=(SIZE, SIZE, 3))
    m = check_continuous_metrics(r["out"], 26, "log_ratio")
    assert m["data"] == "coco_captions"
    # The caption embeddings and test distances were cached by the loader.
    cache = r["data"] / "keras_dml_cache"
    assert list(cache.glob("caption_embeddings-*.npy"))
    assert list(cache.glob("caption_set_distances-*.npy"))


def test_fashion_mnist_demo_metrics_reproduced_from_saved_model(runs):
    r = runs["fashion_mnist"]
    check_run(r, native_shape=(28, 28, 1))
    m = check_class_metrics(r["out"], "fashion_mnist", r["num_test"])
    assert m["data"] == "fashion_mnist"
    index = check_index(r["out"], r["num_test"], "test")
    assert {md["class_name"] for md in index.metadata} <= {
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}
    # 28 x 28 images are their own thumbnails: the test images, in order.
    np.testing.assert_array_equal(np.load(r["out"] / "index" / "thumbnails.npy"),
                                  r["test_images"])
    check_projector(r["out"], r["num_test"])
    # No TensorFlow noise at the default verbosity (issue 17.8).
    noise = ("cuInit", "cudart_stub", "All log messages before absl", "I0000",
             "This TensorFlow binary is optimized", "shuffle=True")
    noisy = [ln for ln in r["procs"][0].stderr.splitlines() if any(n in ln for n in noise)]
    assert not noisy, noisy
    fresh = r["fresh"]
    assert fresh.returncode == 0, fresh.stderr[-6000:]
    line = [ln for ln in fresh.stdout.splitlines() if ln.startswith("METRICS ")][-1]
    again = json.loads(line[len("METRICS "):])
    for key in [f"recall@{k}" for k in CLASS_KS["fashion_mnist"]] + ["map@r", "r_precision"]:
        assert again[key] == pytest.approx(m[key], abs=1e-6), (key, again[key], m[key])


# ------------------------------------------------------ keras-dml search
def search_command(args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "keras_dml", "search", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=TIMEOUT)


def table_rows(stdout):
    """(rank, id, label, score, metadata) of the printed neighbours."""
    rows = []
    for line in stdout.splitlines():
        parts = line.split(None, 4)
        if len(parts) == 5 and parts[0].isdigit():
            rows.append((int(parts[0]), int(parts[1]), int(parts[2]), float(parts[3]),
                         json.loads(parts[4])))
    return rows


def test_fashion_mnist_search_command_matches_index_search(runs, tmp_path):
    import tensorflow as tf

    import keras_dml as kd
    r = runs["fashion_mnist"]
    ok(r["procs"][0])
    out, k = r["out"], 5
    # A test image (thumbnails of 28 x 28 images are the images) as a PNG file.
    image = r["test_images"][3, ..., 0]
    query = tmp_path / "query.png"
    Image.fromarray(image).save(query)
    png = tmp_path / "result.png"
    proc = search_command([f"--model={out / 'saved_model'}", f"--index={out / 'index'}",
                           f"--image={query}", f"--k={k}", f"--output={png}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-6000:]
    rows = table_rows(proc.stdout)
    assert [row[0] for row in rows] == list(range(1, k + 1)), proc.stdout
    assert "wrote result.png" in proc.stdout         # relative to the working directory
    # The same image through the SavedModel's bytes signature, then Index.search.
    model = tf.saved_model.load(str(out / "saved_model"))
    emb = model.signatures["serving_bytes"](
        image_bytes=tf.constant([query.read_bytes()]))["embeddings"].numpy()
    index = kd.retrieval.Index.load(str(out / "index"))
    expected = index.search(emb, k)
    assert [row[1] for row in rows] == expected.ids[0].tolist()
    assert [row[2] for row in rows] == expected.labels[0].tolist()
    np.testing.assert_allclose([row[3] for row in rows], expected.scores[0], atol=1e-4)
    assert rows[0][1] == 3 and rows[0][3] == pytest.approx(1.0, abs=1e-4)   # itself
    assert rows[0][4]["name"] == index.metadata[3]["name"] and "thumbnail" not in rows[0][4]
    # The PNG: one row, the query and k results (plots.retrieval_grid's geometry).
    check_png(png)
    with Image.open(png) as im:
        header = kd.plots.LEGEND_HEIGHT + kd.plots.TITLE_HEIGHT   # title + legend
        assert im.size == ((k + 1) * 104 + (k + 2) * 4 + 8, header + 104 + 2 * 4)


def test_fashion_mnist_search_bad_input(runs, tmp_path, capsys, monkeypatch):
    from keras_dml.cli import command, search
    r = runs["fashion_mnist"]
    ok(r["procs"][0])
    out = r["out"]
    model, index = f"--model={out / 'saved_model'}", f"--index={out / 'index'}"
    good = tmp_path / "q.png"
    Image.fromarray(r["test_images"][0, ..., 0]).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:40])          # a truncated PNG
    text = tmp_path / "notes.png"
    text.write_text("not an image")

    def fails(args, *needles):
        assert command.main(["search", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("keras-dml search: error:"), err
        for needle in needles:
            assert needle in err, (needle, err)

    fails([f"--model={tmp_path / 'nope'}", index, f"--image={good}"], "no SavedModel")
    fails([f"--model={out / 'index'}", index, f"--image={good}"], "not a SavedModel")
    fails([model, f"--index={tmp_path / 'nope'}", f"--image={good}"], "cannot load --index")
    fails([model, f"--index={out / 'saved_model'}", f"--image={good}"], "not a keras_dml index")
    fails([model, index, f"--image={tmp_path / 'missing.png'}"], "no image file")
    fails([model, index, f"--image={bad}"], "cannot read image")
    fails([model, index, f"--image={text}"], "cannot read image")
    fails([model, index, f"--image={good}", f"--k={r['num_test'] + 1}"],
          f"between 1 and the index size {r['num_test']}")
    fails([model, index, f"--image={good}", "--k=0"], "between 1 and the index size")
    fails([model, index, f"--image={good}", f"--output={tmp_path / 'no' / 'x.png'}"],
          "no directory")
    # Issue 17.5: a label the index does not have; a model and an index from
    # different runs (another embedding width, or another recorded model).
    fails([model, index, f"--image={good}", "--label=99"],
          "--label=99 is not a label of the index (its labels: 0-4)")
    import keras_dml as kd
    narrow = kd.retrieval.Index(3)
    narrow.add(np.eye(3, dtype=np.float32))
    narrow.save(tmp_path / "narrow")
    fails([model, f"--index={tmp_path / 'narrow'}", f"--image={good}", "--k=1"],
          "different models")
    other = kd.retrieval.Index.load(out / "index")
    assert other.model_fingerprint == kd.retrieval.model_fingerprint(out / "saved_model")
    other.model_fingerprint = "sha256:0123"
    other.save(tmp_path / "other")
    fails([model, f"--index={tmp_path / 'other'}", f"--image={good}"],
          "built with another model", "different runs")
    with pytest.raises(SystemExit) as exit_:        # argparse: a required flag missing
        command.main(["search", model, index])
    assert exit_.value.code == 2 and "--image" in capsys.readouterr().err
    # A good search in-process, a BMP query (re-encoded as PNG for the bytes
    # signature), with --label; the PNG goes beside the index, never into the
    # working directory (issue 17.8).
    Image.fromarray(r["test_images"][0, ..., 0]).save(tmp_path / "q.bmp")
    monkeypatch.chdir(tmp_path)
    assert command.main(["search", model, index, f"--image={tmp_path / 'q.bmp'}",
                         "--k=2", "--label=0"]) == 0
    stdout = capsys.readouterr().out
    assert len(table_rows(stdout)) == 2 and f"wrote {out / 'search_q.png'}" in stdout
    check_png(out / "search_q.png")
    assert not (tmp_path / "search_q.png").exists()
    assert search.default_output("a/b/shoe.jpg", "runs/x/index/") == \
        str(tmp_path / "runs" / "x" / "search_shoe.png")
