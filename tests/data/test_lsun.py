"""LSUN room layout loader on fixture .mat files in the challenge's layout."""

import numpy as np
import pytest
import scipy.io
from PIL import Image

from data_fixtures import LSUN_FIELDS as FIELDS
from data_fixtures import layout_map
from keras_dml import label_distances
from keras_dml.data import DataNotFoundError, augment, lsun, make_eval_pipeline


def write_lsun(root, rng, n_train=3, n_val=2, single_val=False):
    (root / "images").mkdir(parents=True)
    (root / "layout_seg").mkdir()
    maps = {}
    for var, n in (("training", n_train), ("validation", n_val)):
        recs = np.zeros((1, n), FIELDS)
        for i in range(n):
            name = f"sun_{var[:3]}{i:04d}"
            h, w = 40 + 10 * i, 60
            recs[0, i] = (name, "bedroom", i % 11,
                          rng.uniform(0, 50, (4, 2)),
                          np.array([[h, w]], np.float64))
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                            ).save(root / "images" / f"{name}.jpg")
            m = layout_map(h, w, rng)
            scipy.io.savemat(root / "layout_seg" / f"{name}.mat",
                             {"layout": m})
            maps[name] = m
        if single_val and var == "validation":
            recs = recs[:, :1]
        scipy.io.savemat(root / f"{var}.mat", {var: recs})
    return maps


def nearest_reference(m, size):
    """Half-pixel-centre nearest neighbour: src = floor((dst + .5) * in/out)."""
    h, w = m.shape
    rows = np.minimum(np.floor((np.arange(size[0]) + 0.5) * h / size[0]),
                      h - 1).astype(int)
    cols = np.minimum(np.floor((np.arange(size[1]) + 0.5) * w / size[1]),
                      w - 1).astype(int)
    return m[rows][:, cols]


def test_lsun_records_labels_and_images(tmp_path, rng):
    maps = write_lsun(tmp_path, rng)
    recs = lsun.read_split_mat(tmp_path / "training.mat")
    assert [r["image"] for r in recs] == ["sun_tra0000", "sun_tra0001",
                                          "sun_tra0002"]
    assert [r["type"] for r in recs] == [0, 1, 2]
    assert recs[0]["point"].shape == (4, 2)
    assert list(recs[1]["resolution"]) == [50, 60]

    data = lsun.load_lsun_layout(tmp_path, label_size=(10, 12))
    assert data.label_type == "layout"
    assert (len(data.train), len(data.test)) == (3, 2)
    for split, prefix in ((data.train, "sun_tra"), (data.test, "sun_val")):
        assert split.labels.shape == (len(split), 10, 12)
        assert split.labels.dtype == np.uint8
        for k in range(len(split)):
            ref = nearest_reference(maps[f"{prefix}{k:04d}"], (10, 12))
            np.testing.assert_array_equal(split.labels[k], ref - 1)
        shapes = [tuple(x.shape) for x, _ in split.dataset()]
        assert shapes == [(40 + 10 * k, 60, 3) for k in range(len(split))]
    # The labels feed 1 - mIoU directly (classes 0-4).
    d = label_distances.one_minus_miou(data.train.labels, num_classes=5)
    assert d.shape == (3, 3) and float(d[0, 0]) == 0.0
    assert float(d[0, 1]) > 0
    ds = make_eval_pipeline(data.test, 2, transform=augment.resize_transform(16))
    x, y = next(iter(ds))
    assert x.shape == (2, 16, 16, 3) and y.shape == (2, 10, 12)


def test_lsun_single_record_and_invalid_ids(tmp_path, rng):
    write_lsun(tmp_path, rng, n_val=2, single_val=True)
    bad = np.full((40, 60), 7, np.uint8)
    bad[:, :30] = 2
    scipy.io.savemat(tmp_path / "layout_seg" / "sun_val0000.mat",
                     {"layout": bad})
    data = lsun.load_lsun_layout(tmp_path, label_size=(4, 6))
    assert len(data.test) == 1
    np.testing.assert_array_equal(data.test.labels[0][:, :3], 1)
    np.testing.assert_array_equal(data.test.labels[0][:, 3:], 255)


def test_lsun_missing_files(tmp_path, rng):
    with pytest.raises(DataNotFoundError, match="training.mat"):
        lsun.load_lsun_layout(tmp_path)
    write_lsun(tmp_path, rng)
    (tmp_path / "layout_seg" / "sun_tra0001.mat").unlink()
    with pytest.raises(DataNotFoundError, match="sun_tra0001"):
        lsun.load_lsun_layout(tmp_path)
    scipy.io.savemat(tmp_path / "layout_seg" / "sun_tra0001.mat",
                     {"seg": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="no 'layout'"):
        lsun.load_lsun_layout(tmp_path)
