"""Label-space batch sampler, M-per-class sampler (data/samplers.py).

The neighbour search they start from is tested in
tests/label_distances/test_neighbours.py.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_dml import label_distances as ld
from keras_dml.data import samplers
from keras_dml.data.samplers import LabelSpaceBatchSampler, MPerClassSampler, nearest_neighbours


def test_nearest_neighbours_is_the_label_distances_one():
    assert nearest_neighbours is ld.nearest_neighbours


# ---------------------------------------------------------------- label-space sampler

def test_sample_excluding_is_exact(rng):
    excluded = np.array([0, 3, 4, 9])
    for _ in range(20):
        got = samplers._sample_excluding(rng, 10, excluded, 6)
        assert sorted(got) == [1, 2, 5, 6, 7, 8]
    counts = np.zeros(100)
    excl = rng.choice(100, 10, replace=False)
    for _ in range(300):
        got = samplers._sample_excluding(rng, 100, excl, 20)
        assert len(set(got)) == 20 and not set(got) & set(excl)
        counts[got] += 1
    allowed = np.setdiff1d(np.arange(100), excl)
    assert np.all(counts[excl] == 0)
    # Uniform: each allowed index is drawn 300 * 20 / 90 = 66.7 times on average.
    assert counts[allowed].min() > 35 and counts[allowed].max() < 105


def make_sampler(n=40, k=5, batch=12, seed=3, **kw):
    y = np.random.default_rng(1).normal(size=(n, 2))
    nn, _ = nearest_neighbours(y, k + 2, chunk_size=16)
    return LabelSpaceBatchSampler(nn, batch_size=batch, num_neighbours=k, seed=seed, **kw), nn


def test_label_space_batches_structure():
    sampler, nn = make_sampler()
    batches = sampler.epoch_batches(0)
    assert batches.shape == (40, 12) and len(sampler) == 40
    assert sorted(batches[:, 0]) == list(range(40))      # every sample anchors once
    for row in batches:
        a = row[0]
        assert row[1:6].tolist() == nn[a, :5].tolist()    # its 5 nearest, nearest first
        assert len(set(row)) == 12                        # no repeats
        assert row.min() >= 0 and row.max() < 40


def test_label_space_reproducible_and_epochs_differ():
    s1, _ = make_sampler(seed=7)
    s2, _ = make_sampler(seed=7)
    e0 = [b.tolist() for b in s1]
    e1 = [b.tolist() for b in s1]
    assert e0 == [b.tolist() for b in s2]                # same seed, same epoch 0
    assert e0 != e1                                      # next epoch differs
    assert e1 == s2.epoch_batches(1).tolist()
    s3, _ = make_sampler(seed=8)
    assert s3.epoch_batches(0).tolist() != e0
    unshuffled, _ = make_sampler(shuffle=False, batches_per_epoch=50)
    assert unshuffled.epoch_batches(0)[:, 0].tolist() == list(range(40)) + list(range(10))


def test_label_space_as_dataset_maps_to_examples():
    sampler, _ = make_sampler(n=30, batch=8)
    x = tf.constant(np.arange(30, dtype="float32")[:, None] * 10)
    ds = sampler.as_dataset().map(lambda idx: (tf.gather(x, idx), idx))
    first = [(xb.numpy(), ib.numpy()) for xb, ib in ds]
    second = [ib.numpy() for _, ib in ds]
    assert len(first) == 30
    for xb, ib in first:
        np.testing.assert_array_equal(xb[:, 0], ib * 10.0)
    expected = sampler.epoch_batches(0)
    np.testing.assert_array_equal(np.stack([ib for _, ib in first]), expected)
    np.testing.assert_array_equal(np.stack(second), sampler.epoch_batches(1))


def test_label_space_bad_input():
    nn = np.tile(np.arange(1, 4), (5, 1))
    with pytest.raises(ValueError, match="batch_size"):
        LabelSpaceBatchSampler(nn, batch_size=6, num_neighbours=2)
    with pytest.raises(ValueError, match="anchor itself"):
        LabelSpaceBatchSampler(nn, batch_size=4, num_neighbours=2)
    with pytest.raises(ValueError, match="columns"):
        LabelSpaceBatchSampler(nn[:, :1], batch_size=4, num_neighbours=2)


# ---------------------------------------------------------------- M per class

def test_m_per_class_batches(rng):
    labels = np.repeat(np.arange(10), [8, 8, 8, 8, 8, 8, 8, 8, 8, 2])
    sampler = MPerClassSampler(labels, m=4, batch_size=16, seed=5)
    batches = sampler.epoch_batches(0)
    assert batches.shape == (len(labels) // 16, 16)
    for row in batches:
        blocks = labels[row].reshape(4, 4)
        assert np.all(blocks == blocks[:, :1])           # M of one class per block
        assert len(set(blocks[:, 0])) == 4               # P distinct classes
        for b, idx in zip(blocks, row.reshape(4, 4)):
            if b[0] != 9:                                # enough samples: no repeats
                assert len(set(idx)) == 4
    np.testing.assert_array_equal(
        MPerClassSampler(labels, m=4, batch_size=16, seed=5).epoch_batches(0), batches)
    ds = sampler.as_dataset()
    assert next(iter(ds)).shape == (16,)
    with pytest.raises(ValueError, match="multiple"):
        MPerClassSampler(labels, m=3, batch_size=16)
    with pytest.raises(ValueError, match="only 10 classes"):
        MPerClassSampler(labels, m=1, batch_size=11)
