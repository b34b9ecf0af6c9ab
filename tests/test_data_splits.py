"""kd.data split helpers: class-disjoint and example hold-outs, subsets,
relabelling; the images still load through the public Split API."""

import numpy as np
import pytest

import keras_dml as kd


def make_split(n=40, classes=8):
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1).repeat(2, 1).repeat(2, 2)
    labels = (np.arange(n) % classes * 3 + 5).astype(np.int32)   # ids 5, 8, 11, ...
    return kd.data.Split.from_arrays("train", images, labels)


def first_pixels(split):
    return np.array([int(x.numpy()[0, 0, 0]) for x, _ in split.dataset()])


def test_hold_out_classes_is_class_disjoint_relabelled_and_loads_images():
    split = make_split()
    train, val = kd.data.hold_out_classes(split, 0.25, seed=3)
    assert (train.name, val.name) == ("train", "val")
    assert len(train) + len(val) == len(split)
    orig_train = train.info["original_classes"][train.labels]
    orig_val = val.info["original_classes"][val.labels]
    assert not set(orig_train) & set(orig_val)
    assert len(np.unique(orig_val)) == 2                     # round(0.25 * 8)
    for part in (train, val):                                # contiguous 0..C-1
        assert np.array_equal(np.unique(part.labels), np.arange(part.num_classes))
    # The images are the right ones (pixel value = original index), in order.
    pixels = first_pixels(val)
    assert np.all(np.diff(pixels) > 0)
    np.testing.assert_array_equal(split.labels[pixels], orig_val)
    # Deterministic in the seed, different for another seed.
    again = kd.data.hold_out_classes(split, 0.25, seed=3)[1]
    assert np.array_equal(again.labels, val.labels)
    assert np.array_equal(first_pixels(again), pixels)


def test_hold_out_classes_edge_cases_and_errors():
    split = make_split()
    train, val = kd.data.hold_out_classes(split, 0.0, seed=0)
    assert val is None and np.array_equal(np.unique(train.labels), np.arange(8))
    with pytest.raises(ValueError, match="fewer than 2 training classes"):
        kd.data.hold_out_classes(make_split(classes=2), 0.5, seed=0)
    with pytest.raises(ValueError, match="fraction"):
        kd.data.hold_out_classes(split, 1.5, seed=0)
    with pytest.raises(TypeError, match="Split"):
        kd.data.hold_out_classes(np.zeros(3), 0.1, seed=0)
    vectors = kd.data.Split.from_arrays("pose", np.zeros((4, 1, 1, 1), np.uint8),
                                        np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="int class labels"):
        kd.data.hold_out_classes(vectors, 0.5, seed=0)


def test_hold_out_examples_partitions_and_optionally_relabels():
    split = make_split()
    train, val = kd.data.hold_out_examples(split, 0.25, seed=1)
    assert len(val) == 10 and len(train) == 30
    idx = np.r_[train.info["parent_indices"], val.info["parent_indices"]]
    assert np.array_equal(np.sort(idx), np.arange(40))
    np.testing.assert_array_equal(first_pixels(val), val.info["parent_indices"])
    np.testing.assert_array_equal(val.labels, split.labels[val.info["parent_indices"]])
    tr, va = kd.data.hold_out_examples(split, 0.25, seed=1, relabel_classes=True)
    assert np.array_equal(np.unique(tr.labels), np.arange(tr.num_classes))
    assert np.array_equal(va.info["original_classes"][va.labels], val.labels)
    same, none = kd.data.hold_out_examples(split, 0.01, seed=1)
    assert same is split and none is None


def test_random_subset_and_indices():
    split = make_split()
    sub = kd.data.random_subset(split, 7, seed=2, name="small")
    assert len(sub) == 7 and sub.name == "small"
    idx = kd.data.random_indices(40, 7, seed=2)
    np.testing.assert_array_equal(sub.info["parent_indices"], idx)
    np.testing.assert_array_equal(first_pixels(sub), idx)
    assert kd.data.random_subset(split, None, seed=2) is split
    assert kd.data.random_subset(split, 40, seed=2) is split
    assert kd.data.random_indices(5, None, 0) is None
    with pytest.raises(ValueError, match="positive integer"):
        kd.data.random_indices(5, 0, 0)


def test_relabel_and_with_labels():
    split = make_split(n=6, classes=3)
    r = kd.data.relabel(split, "r")
    assert r.name == "r" and r.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert r.info["original_classes"].tolist() == [5, 8, 11]
    np.testing.assert_array_equal(first_pixels(r), np.arange(6))
    with pytest.raises(ValueError, match="6 examples; got 2 labels"):
        split.with_labels([0, 1])
