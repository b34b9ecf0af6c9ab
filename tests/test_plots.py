"""PNG plots: written, valid, of the documented size; grid borders coloured right."""

import keras
import matplotlib.image
import numpy as np
import pytest

import keras_dml as kd

plots = kd.plots


def read_png(path):
    img = matplotlib.image.imread(str(path))
    assert img.dtype == np.float32 and img.ndim == 3 and img.shape[2] in (3, 4)
    return img


def test_recall_curve_from_dict_history_and_callback(tmp_path):
    hist = {"loss": [3.0, 2.0, 1.5], "val_recall@1": [0.2, 0.4, 0.5],
            "val_recall@2": [0.3, 0.5, 0.6], "val_map@r": [0.1, 0.2, 0.3]}
    out = plots.recall_curve(hist, tmp_path / "a.png", figsize=(5, 3), dpi=80)
    img = read_png(out)
    assert img.shape[:2] == (3 * 80, 5 * 80)
    assert img[..., :3].std() > 0.01                  # not a blank canvas

    # A real History and the callback's own record (every=2).
    x = np.random.default_rng(0).standard_normal((12, 3)).astype(np.float32)
    y = np.repeat(np.arange(3), 4)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    cb = kd.evaluation.RetrievalCallback((x, y), ks=(1, 2), every=2)
    history = model.fit(x, np.zeros((12, 2)), epochs=4, verbose=0, callbacks=[cb])
    assert cb.history["epoch"] == [1, 3]
    for source, name in ((history, "h.png"), (cb, "c.png")):
        img = read_png(plots.recall_curve(source, tmp_path / name))
        assert img.shape[:2] == (400, 600)


def test_recall_curve_without_recall_keys(tmp_path):
    with pytest.raises(ValueError, match="recall@K"):
        plots.recall_curve({"loss": [1.0]}, tmp_path / "x.png")
    with pytest.raises(TypeError):
        plots.recall_curve([0.1, 0.2], tmp_path / "x.png")


def tile_origin(r, c, cell, border):
    tile = cell + 2 * border
    y0 = border + r * (tile + border)
    x0 = border + c * (tile + border) + (2 * border if c > 0 else 0)
    return y0, x0


def test_retrieval_grid_size_and_borders(tmp_path):
    rng = np.random.default_rng(1)
    # Mixed formats: uint8 RGB queries, float grey gallery in [-1, 1].
    queries = rng.integers(0, 256, size=(4, 20, 14, 3), dtype=np.uint8)
    gallery = rng.uniform(-1, 1, size=(9, 11, 17)).astype(np.float32)
    q_labels = np.array([0, 1, 2, 3])
    g_labels = np.array([0, 0, 1, 1, 2, 2, 3, 3, 9])
    idx = np.array([[0, 2, 1], [8, 3, 2], [4, 5, 6], [7, 0, 6]])
    cell, border = 30, 3
    out = plots.retrieval_grid(queries, gallery, q_labels, g_labels, idx,
                               tmp_path / "grid.png", cell_size=cell, border=border)
    img = read_png(out)
    tile = cell + 2 * border
    k = 3
    assert img.shape[:2] == (4 * tile + 5 * border,
                             (k + 1) * tile + (k + 2) * border + 2 * border)
    correct = g_labels[idx] == q_labels[:, None]
    for r in range(4):
        for c in range(k + 1):
            y0, x0 = tile_origin(r, c, cell, border)
            corner = img[y0 + 1, x0 + 1, :3]
            if c == 0:
                expected = plots.QUERY_COLOUR
            else:
                expected = (plots.CORRECT_COLOUR if correct[r, c - 1]
                            else plots.WRONG_COLOUR)
            np.testing.assert_allclose(corner, expected, atol=1 / 255 + 1e-6)
    # The query image itself is inside its tile (uint8 -> /255, nearest
    # neighbour, centred): the tile centre pixel is an original pixel value.
    y0, x0 = tile_origin(0, 0, cell, border)
    centre = img[y0 + border + cell // 2, x0 + border + cell // 2, :3]
    assert np.any(np.all(np.abs(queries[0].reshape(-1, 3) / 255.0 - centre) < 1 / 255 + 1e-6,
                         axis=1))


def test_retrieval_grid_with_correct_matrix_and_top_k(tmp_path):
    rng = np.random.default_rng(2)
    emb = rng.standard_normal((10, 4)).astype(np.float32)
    idx = kd.evaluation.top_k_neighbours(emb, None, k=4)
    assert idx.shape == (10, 4)
    assert not np.any(idx == np.arange(10)[:, None])      # self excluded
    images = rng.uniform(0, 1, size=(10, 8, 8, 1))
    correct = np.zeros((10, 4), bool)
    correct[:, 0] = True
    out = plots.retrieval_grid(images, images, None, None, idx,
                               tmp_path / "g.png", correct=correct,
                               cell_size=16, border=2, max_queries=3)
    img = read_png(out)
    assert img.shape[:2] == (3 * 20 + 4 * 2, 5 * 20 + 6 * 2 + 4)
    y0, x0 = tile_origin(2, 1, 16, 2)
    np.testing.assert_allclose(img[y0, x0, :3], plots.CORRECT_COLOUR, atol=1 / 255 + 1e-6)
    y0, x0 = tile_origin(2, 2, 16, 2)
    np.testing.assert_allclose(img[y0, x0, :3], plots.WRONG_COLOUR, atol=1 / 255 + 1e-6)


def test_retrieval_grid_bad_input(tmp_path):
    images = np.zeros((3, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="outside"):
        plots.retrieval_grid(images, images, [0, 1, 2], [0, 1, 2],
                             np.array([[5]]), tmp_path / "x.png")
    with pytest.raises(ValueError, match="labels"):
        plots.retrieval_grid(images, images, None, None,
                             np.array([[1]]), tmp_path / "x.png")
    with pytest.raises(ValueError, match="shape"):
        plots.retrieval_grid(np.zeros((3, 4, 4, 2)), images, [0, 1, 2], [0, 1, 2],
                             np.array([[1]]), tmp_path / "x.png")


def test_recall_curve_axis_says_what_is_drawn(tmp_path):
    axis = plots._axis
    assert axis(["val_recall@1", "val_recall@2"]) == ("recall (%)", 100.0)
    assert axis(["val_recall@1", "val_map@r", "val_r_precision"]) == \
        ("recall, MAP@R, R-precision (%)", 100.0)
    assert axis(["val_ndcg@1", "val_ndcg@5"]) == ("nDCG (%)", 100.0)
    assert axis(["val_mean_label_distance@1"]) == ("mean label distance", 1.0)
    with pytest.raises(ValueError, match="separate figures"):
        axis(["val_ndcg@1", "val_mean_label_distance@1"])
    hist = {"val_ndcg@1": [0.5, 0.6], "val_mean_label_distance@1": [0.3, 0.2]}
    read_png(plots.recall_curve(hist, tmp_path / "n.png", keys=["val_ndcg@1"]))
    with pytest.raises(ValueError, match="separate figures"):
        plots.recall_curve(hist, tmp_path / "m.png", keys=sorted(hist))
