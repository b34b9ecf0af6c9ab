"""studies/: each study end to end on a tiny configuration (--smoke), its
resume, and the rotated Fashion-MNIST builder."""

import json
import os

import numpy as np
import pytest

from keras_dml.data import fashion_mnist

needs_fashion_mnist = pytest.mark.skipif(
    not os.path.exists(os.path.join(fashion_mnist.DEBIAN_DIR, fashion_mnist.FILES["train"][0])),
    reason="Fashion-MNIST Debian files not installed (apt-get install dataset-fashion-mnist)")


def rows_of(out):
    with open(out / "results.json") as f:
        return json.load(f)["rows"]


def quiet(*_args):
    pass


@needs_fashion_mnist
def test_proxy_anchor_study_smoke_and_resume(tmp_path):
    from studies import proxy_anchor
    out = tmp_path / "pa"
    paths = proxy_anchor.main([f"--output_dir={out}", "--smoke"], log=quiet)
    rows = rows_of(out)
    # 2 losses + dims 8 (x2 losses; 16 is the table's) + alpha=16 (32 is the table's).
    assert len(rows) == 5
    for row in rows:
        assert {"key", "name", "loss", "dim", "seed", "params", "metrics", "history"} <= set(row)
        assert 0 <= row["metrics"]["recall@1"] <= 1 and "map@r" in row["metrics"]
        assert len(row["history"]["val_recall@1"]) == 2
    assert {r["loss"] for r in rows} == {"proxy_anchor", "triplet"}
    assert {r["dim"] for r in rows} == {8, 16}
    assert any(r["params"].get("alpha") == 16 for r in rows)
    for name in ("convergence", "dimension", "sensitivity"):
        assert os.path.getsize(paths[name]) > 0 and paths[name].endswith(".png")
    text = open(paths["report"]).read()
    assert "R@1" in text and "MAP@R" in text and "alpha" in text
    # Resume: nothing runs again.
    logged = []
    proxy_anchor.main([f"--output_dir={out}", "--smoke"], log=logged.append)
    assert any("0 to run" in line for line in logged)
    assert len(rows_of(out)) == 5


@needs_fashion_mnist
def test_log_ratio_study_smoke(tmp_path):
    from studies import log_ratio
    out = tmp_path / "lr"
    paths = log_ratio.main([f"--output_dir={out}", "--smoke"], log=quiet)
    all_rows = rows_of(out)
    assert len(all_rows) == 5     # dense, plain, ImageNet features, dense at 8-d, kNN cost
    assert sorted(r["dim"] for r in all_rows if r["name"].startswith("log_ratio")) == [8, 16]
    rows = {r["name"]: r for r in all_rows if r["dim"] != 8}
    dense = rows["log_ratio (dense batches)"]
    assert dense["params"]["loss"] == "log_ratio" and dense["dim"] == 16
    assert 0 < dense["metrics"]["ndcg@5"] <= 1 and "mean_label_distance@1" in dense["metrics"]
    assert 0 < dense["extra"]["unseen"]["ndcg@5"] <= 1
    assert len(dense["history"]["val_ndcg@1"]) == 2
    plain = rows["plain ratio (dense batches)"]
    assert plain["params"]["ratio"] == "plain"
    features = rows["ImageNet features (no training)"]
    assert features["history"] == {} and "unseen" in features["extra"]
    knn = rows["knn_cost"]["extra"]
    assert {r["n"] for r in knn["rows"]} == {1000, 2000}
    assert all(v == 1.0 for v in knn["agree"].values())     # exact: the same lists
    for name in ("dimension", "convergence"):
        assert os.path.getsize(paths[name]) > 0
    text = open(paths["report"]).read()
    assert "Unseen classes 5-9" in text and "kNN" in text


@needs_fashion_mnist
def test_rotated_fashion_mnist_labels_and_images():
    from studies import log_ratio
    data, unseen = log_ratio.rotated_fashion_mnist(n_train=20, n_test=10, seed=3, scale=True)
    assert data.train.labels.shape == (20, 2) and data.label_type == "rotation"
    assert set(np.unique(data.train.info["classes"])) <= set(range(5))
    assert set(np.unique(unseen.info["classes"])) <= set(range(5, 10))
    angles = data.train.info["angles"]
    assert (angles >= -75).all() and (angles < 75).all()
    np.testing.assert_allclose(data.train.labels[:, 0], angles / 10.0, rtol=1e-6)
    assert data.train.image_shape == (40, 40, 1)


def test_rotation_is_exact_for_right_angles():
    from studies import log_ratio
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 28, 28)).astype(np.uint8)
    canvas = np.zeros((2, 40, 40), np.uint8)
    canvas[:, 6:34, 6:34] = img
    out = log_ratio.rotate_and_scale(img, [90.0, 0.0])[..., 0]
    np.testing.assert_array_equal(out[0], np.rot90(canvas[0]))     # counter-clockwise
    np.testing.assert_array_equal(out[1], canvas[1])
    half = log_ratio.rotate_and_scale(img[:1], [0.0], [0.5])[0, ..., 0]
    assert (half[:10] == 0).all() and half[20].any()                # shrunk to the centre
    with pytest.raises(ValueError, match="canvas 20 is smaller"):
        log_ratio.rotate_and_scale(img, [0, 0], canvas=20)


def test_grid_keys_share_identical_runs():
    from studies.common import Config
    a = Config.make("proxy_anchor", loss="proxy_anchor", embedding_dim=128)
    b = Config.make("alpha=32, delta=0.1", loss="proxy_anchor", embedding_dim=128)
    c = Config.make("proxy_anchor", seed=1, loss="proxy_anchor", embedding_dim=128)
    assert a.key == b.key != c.key and a.key.startswith("proxy_anchor-d128-")


def test_verdicts():
    from studies.common import verdict
    assert verdict((0.9, 0.01, 3), (0.8, 0.01, 3)) == "reproduced"
    assert verdict((0.7, 0.01, 3), (0.8, 0.01, 3)) == "not reproduced"
    assert verdict((0.9, 0.1, 3), (0.85, 0.1, 3)).startswith("inconclusive (± std")
    assert verdict((0.9, 0.0, 1), (0.8, 0.0, 3)) == "inconclusive (1 seed)"
    assert verdict((0.9, 0.01, 2), (0.5, 0.0, 1), theirs_exact=True) == "reproduced"


def test_proxy_anchor_study_glyphs_smoke(tmp_path):
    from keras_dml.data import glyphs
    from references import unavailable
    from studies import proxy_anchor
    # The font catalogue and the rendered glyphs are cached in the user's cache
    # (kd.data.glyphs.default_cache_dir()), as for real use: built once per machine.
    try:
        proxy_anchor.main([f"--output_dir={tmp_path / 'g'}", "--smoke", "--dataset=glyphs"],
                          log=quiet)
    except glyphs.DataNotFoundError as err:
        unavailable(f"CJK fonts for the glyph benchmark missing: {err}")
    rows = rows_of(tmp_path / "g")
    assert len(rows) == 5 and {r["loss"] for r in rows} == {"proxy_anchor", "triplet"}
    for row in rows:
        assert 0 <= row["metrics"]["recall@1"] <= 1 and "map@r" in row["metrics"]
        assert len(row["history"]["val_recall@1"]) == 2
        # Sampling as the authors: random batches for proxies, P x 3 for pairs.
        assert row["recipe"]["m_per_class"] == 0 and row["recipe"]["sampler"] == "auto"
        assert row["recipe"]["val_split"] == "classes"
    text = (tmp_path / "g" / "results.md").read_text()
    assert "CJK glyphs" in text and "unseen characters" in text and "distinct designs" in text
