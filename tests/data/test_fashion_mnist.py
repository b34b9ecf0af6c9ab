"""Fashion-MNIST: idx reader on idx files written here in the real format,
the class-disjoint split, the TFDS path (mocked), and the real Debian files
when installed."""

import gzip
import os
import struct

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_fixtures import write_idx
from keras_dml.data import DataNotFoundError
from keras_dml.data.fashion_mnist import DEBIAN_DIR, FILES, load_fashion_mnist, read_idx
from references import unavailable


def write_fashion_mnist(root, n_train=40, n_test=30, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for part, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        write_idx(os.path.join(root, FILES[part][0]), images)
        write_idx(os.path.join(root, FILES[part][1]), labels)
        out[part] = (images, labels)
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32,
                                   np.float64])
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, rng, dtype, gz):
    array = (rng.normal(size=(3, 4, 5)) * 100).astype(dtype)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, array, gz=gz)
    got = read_idx(path)
    assert got.dtype == np.dtype(dtype) and got.shape == (3, 4, 5)
    np.testing.assert_array_equal(got, array)


def test_read_idx_refuses_bad_files(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x01\x02\x08\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as f:
        f.write(b"\x00\x00\x08\x02" + struct.pack(">II", 2, 3) + b"abcde")
    with pytest.raises(ValueError, match="announces shape"):
        read_idx(short)
    notgz = tmp_path / "plain.gz"
    notgz.write_bytes(b"\x00\x00\x08\x01")
    with pytest.raises(ValueError, match="cannot read"):
        read_idx(notgz)


def test_class_disjoint_split_from_files(tmp_path):
    raw = write_fashion_mnist(tmp_path)
    data = load_fashion_mnist(root=str(tmp_path))
    assert data.info["source"] == "files"
    assert data.image_shape == (28, 28, 1) and data.num_train_classes == 5
    tr_img, tr_lab = raw["train"]
    te_img, te_lab = raw["test"]
    keep = tr_lab < 5
    np.testing.assert_array_equal(data.train.labels, tr_lab[keep])
    keep_t = te_lab >= 5
    np.testing.assert_array_equal(data.test.labels, te_lab[keep_t] - 5)
    images = np.stack([x for x, _ in data.test.dataset().as_numpy_iterator()])
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28, 1)
    np.testing.assert_array_equal(images[..., 0], te_img[keep_t])
    # Custom class lists, remapped in the given order.
    custom = load_fashion_mnist(root=str(tmp_path), train_classes=[9, 1],
                                test_classes=[0])
    np.testing.assert_array_equal(
        custom.train.labels,
        [0 if y == 9 else 1 for y in tr_lab if y in (9, 1)])
    with pytest.raises(ValueError, match="overlap"):
        load_fashion_mnist(root=str(tmp_path), train_classes=[0, 1],
                           test_classes=[1, 2])


def test_missing_files_error_says_how(tmp_path):
    with pytest.raises(DataNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist(root=str(tmp_path), source="files")


def test_tfds_source_on_mock(tmp_path):
    with tfds.testing.mock_data(num_examples=25):
        data = load_fashion_mnist(root=str(tmp_path / "none"), source="auto",
                                  data_dir=str(tmp_path))
        ds = tfds.builder("fashion_mnist", data_dir=str(tmp_path)).as_dataset(
            split="train", as_supervised=True, shuffle_files=False)
        raw = list(ds.as_numpy_iterator())
    assert data.info["source"] == "tfds"
    expected = [y for _, y in raw if y < 5]
    np.testing.assert_array_equal(data.train.labels, expected)
    assert data.train.image_shape == (28, 28, 1)


def _read_image_by_hand(path, k):
    """Independent reader: header with struct, then image k's bytes."""
    with gzip.open(path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        f.seek(16 + k * rows * cols)
        image = np.frombuffer(f.read(rows * cols), np.uint8)
    return magic, n, image.reshape(rows, cols)


def test_real_debian_files():
    if not os.path.exists(os.path.join(DEBIAN_DIR, FILES["train"][0])):
        unavailable("the real data: Debian package dataset-fashion-mnist is not "
                    "installed (scripts/setup.sh installs it)")
    data = load_fashion_mnist()
    assert (len(data.train), len(data.test)) == (30000, 5000)
    assert np.bincount(data.train.labels).tolist() == [6000] * 5
    assert np.bincount(data.test.labels).tolist() == [1000] * 5
    labels = read_idx(os.path.join(DEBIAN_DIR, FILES["train"][1]))
    assert labels.shape == (60000,) and labels.max() == 9
    first_kept = int(np.flatnonzero(labels < 5)[0])
    magic, n, expected = _read_image_by_hand(
        os.path.join(DEBIAN_DIR, FILES["train"][0]), first_kept)
    assert magic == 2051 and n == 60000
    image, label = next(iter(data.train.dataset()))
    np.testing.assert_array_equal(image.numpy()[..., 0], expected)
    assert int(label) == labels[first_kept]
    t_labels = read_idx(os.path.join(DEBIAN_DIR, FILES["test"][1]))
    first_test = int(np.flatnonzero(t_labels >= 5)[0])
    _, n_test, expected = _read_image_by_hand(
        os.path.join(DEBIAN_DIR, FILES["test"][0]), first_test)
    assert n_test == 10000
    image, label = next(iter(data.test.dataset()))
    np.testing.assert_array_equal(image.numpy()[..., 0], expected)
    assert int(label) == t_labels[first_test] - 5
