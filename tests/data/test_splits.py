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


NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven"]


def named_split(n=40, classes=8):
    """Labels 0..7 with info naming each class and its original id; pixel
    value = example index, so a part's images say which class they are."""
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1)
    labels = (np.arange(n) % classes).astype(np.int32)
    return kd.data.Split.from_arrays(
        "train", images, labels,
        info={"class_names": NAMES[:classes], "classes": [10 + c for c in range(classes)]})


def assert_names_follow_labels(part, parent):
    """Every example's class name (and original id) in ``part`` is the one
    its image had in ``parent``."""
    pixels = first_pixels(part)
    want = [NAMES[c] for c in parent.labels[pixels]]
    got = [part.info["class_names"][label] for label in part.labels]
    assert got == want
    assert [part.info["classes"][label] for label in part.labels] == \
        [10 + c for c in parent.labels[pixels]]


def test_every_split_helper_keeps_class_names_right_for_its_labels():
    # Issue 17.1: hold_out_classes renumbered the labels but kept the parent's
    # class_names, so a coat was tagged "bag".
    split = named_split()
    train, val = kd.data.hold_out_classes(split, 0.25, seed=3)
    assert val.labels.max() < len(NAMES) - 1          # renumbered for real
    for part in (train, val):
        assert_names_follow_labels(part, split)
        assert len(part.info["class_names"]) == part.num_classes
    for part in kd.data.hold_out_examples(split, 0.3, seed=1, relabel_classes=True):
        assert_names_follow_labels(part, split)
    for part in kd.data.hold_out_examples(split, 0.3, seed=1):
        assert_names_follow_labels(part, split)
    assert_names_follow_labels(kd.data.random_subset(split, 9, seed=2), split)
    # relabel of a split holding only some classes (ids 2, 5, 7 -> 0, 1, 2).
    some = split.subset(np.flatnonzero(np.isin(split.labels, [2, 5, 7])))
    relabelled = kd.data.relabel(some)
    assert relabelled.info["class_names"] == ["two", "five", "seven"]
    assert_names_follow_labels(relabelled, split)


def test_relabel_turns_a_class_offset_into_explicit_original_classes():
    images = np.zeros((4, 1, 1, 1), np.uint8)
    split = kd.data.Split.from_arrays("test", images, np.array([0, 3, 3, 5], np.int32),
                                      info={"class_offset": 100, "num_classes": 6})
    r = kd.data.relabel(split)
    assert "class_offset" not in r.info
    assert r.info["classes"] == [100, 103, 105] and r.info["num_classes"] == 3
