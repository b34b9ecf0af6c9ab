"""CUB-200 / Cars-196 / SOP loaders on TFDS mock data (offline).

``tfds.testing.mock_data`` generates examples from each builder's feature
spec (random mode), or from our own generator (``as_dataset_fn``) where the
class ids must be controlled.
"""

import io
import logging

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from keras_dml.data import DataNotFoundError, augment, make_eval_pipeline, tfds_benchmarks
from keras_dml.data.tfds_benchmarks import load_tfds_benchmark


def mocked_examples(builder_name, split, label_key, data_dir, name_key=None):
    """The mock's examples read directly (the mock is deterministic for the
    same requested features)."""
    b = tfds.builder(builder_name, data_dir=data_dir)
    features = {"image": True, label_key: True}
    if name_key:
        features[name_key] = True
    dec = tfds.decode.PartialDecoding(
        features, decoders={"image": tfds.decode.SkipDecoding()})
    ds = b.as_dataset(split=split, decoders=dec, shuffle_files=False)
    return [(ex["image"], int(ex[label_key]))
            for ex in ds.as_numpy_iterator()]


@pytest.mark.parametrize("name,lo,hi,total", [("cub200", 0, 100, 200),
                                              ("cars196", 0, 98, 196)])
def test_random_mock_pooled_class_split(name, lo, hi, total, tmp_path):
    spec = tfds_benchmarks.BENCHMARKS[name]
    with tfds.testing.mock_data(num_examples=40):
        data = load_tfds_benchmark(name, data_dir=str(tmp_path))
        expected = {}
        for part, (a, b) in (("train", spec["train"]), ("test", spec["test"])):
            rows = []
            for tfds_split in ("train", "test"):     # both pooled
                rows += [(img, y - a) for img, y in mocked_examples(
                    spec["builder"], tfds_split, "label", str(tmp_path),
                    spec["key"]) if a <= y < b]
            expected[part] = rows
    assert data.num_train_classes == hi - lo
    assert data.label_type == "class" and data.query is None
    for part in ("train", "test"):
        split = getattr(data, part)
        assert len(split) == len(expected[part]) > 0
        assert split.labels.dtype == np.int32
        np.testing.assert_array_equal(split.labels,
                                      [y for _, y in expected[part]])
        assert split.labels.min() >= 0
        assert split.labels.max() < (hi - lo if part == "train"
                                     else total - hi)
        for (image, label), (blob, y) in zip(split.dataset(),
                                             expected[part]):
            assert image.dtype == tf.uint8 and image.shape[-1] == 3
            assert label.dtype == tf.int32 and int(label) == y
            np.testing.assert_array_equal(image, tf.io.decode_image(blob))
    assert data.test.info["class_offset"] == spec["test"][0]


def _png(value):
    buf = io.BytesIO()
    Image.fromarray(np.full((5, 7, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def controlled_as_dataset(labels_by_split, label_key, name_key=None):
    """An as_dataset_fn yielding given class ids with identifiable images."""
    def as_dataset(self, split, **kwargs):
        ys = np.asarray(labels_by_split[str(split)], np.int64)
        d = {"image": [_png(int(y) % 256) for y in ys], label_key: ys}
        if name_key:
            d[name_key] = [f"{split}_{i}.jpg" for i in range(len(ys))]
        return tf.data.Dataset.from_tensor_slices(d)
    return as_dataset


def test_cub_controlled_labels_cover_all_classes(tmp_path):
    train_ids = np.arange(200)             # TFDS train: every class once
    test_ids = np.arange(200)[::-1]        # TFDS test: every class again
    fn = controlled_as_dataset({"train": train_ids, "test": test_ids},
                               "label", "image/filename")
    with tfds.testing.mock_data(as_dataset_fn=fn):
        data = load_tfds_benchmark("cub200", data_dir=str(tmp_path))
    # Train: classes 0-99 of both TFDS splits, labels unchanged.
    np.testing.assert_array_equal(
        data.train.labels, np.r_[np.arange(100), np.arange(100)[::-1]])
    # Test: classes 100-199 -> 0-99.
    np.testing.assert_array_equal(
        data.test.labels, np.r_[np.arange(100), np.arange(100)[::-1]])
    assert data.train.num_classes == 100 and data.test.num_classes == 100
    # Names carry the TFDS split and file name; images follow the labels.
    assert data.test.names[0].endswith("train_100.jpg")
    first = next(iter(data.test.dataset()))
    assert int(first[0][0, 0, 0]) == 100 and int(first[1]) == 0


def test_sop_uses_tfds_splits_and_class_id(tmp_path, caplog):
    train_ids = np.array([0, 5, 5, 11317, 3])
    test_ids = np.array([11318, 22633, 11400, 11318, 7])   # 7: stray
    fn = controlled_as_dataset({"train": train_ids, "test": test_ids},
                               "class_id")
    with tfds.testing.mock_data(as_dataset_fn=fn), \
            caplog.at_level(logging.WARNING):
        data = load_tfds_benchmark("sop", data_dir=str(tmp_path))
    np.testing.assert_array_equal(data.train.labels, train_ids)
    np.testing.assert_array_equal(data.test.labels,
                                  [0, 22633 - 11318, 11400 - 11318, 0])
    assert "left out" in caplog.text
    assert data.num_train_classes == 11318
    assert data.info["recall_ks"] == (1, 10, 100, 1000)
    batches = list(make_eval_pipeline(
        data.test, 3, transform=augment.eval_transform(4, resize=5)))
    assert [tuple(x.shape) for x, _ in batches] == [(3, 4, 4, 3),
                                                    (1, 4, 4, 3)]


def test_random_mock_sop_features(tmp_path):
    # Random class ids span both ranges: each split keeps its own range.
    with tfds.testing.mock_data(num_examples=30):
        data = load_tfds_benchmark("sop", data_dir=str(tmp_path))
        raw = mocked_examples("stanford_online_products", "train",
                              "class_id", str(tmp_path))
    ys = np.array([y for _, y in raw])
    assert len(data.train) == int((ys < 11318).sum())
    assert len(data.test) == int((ys >= 11318).sum())
    np.testing.assert_array_equal(data.test.labels, ys[ys >= 11318] - 11318)


def test_bad_class_ids_are_refused(tmp_path):
    fn = controlled_as_dataset({"train": [0, 250], "test": [1]}, "label",
                               "image/filename")
    with tfds.testing.mock_data(as_dataset_fn=fn):
        with pytest.raises(ValueError, match="outside"):
            load_tfds_benchmark("cub200", data_dir=str(tmp_path))


def test_missing_data_says_how_to_prepare(tmp_path):
    with pytest.raises(DataNotFoundError, match="tfds build caltech_birds"):
        load_tfds_benchmark("cub200", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown TFDS benchmark"):
        load_tfds_benchmark("cub", data_dir=str(tmp_path))
