"""label_distances/l1.py: the L1 label distance vs a numpy loop reference."""

import numpy as np
import pytest
import tensorflow as tf

from keras_dml import label_distances as ld


def ref_l1(y1, y2):
    out = np.zeros((len(y1), len(y2)))
    for i in range(len(y1)):
        for j in range(len(y2)):
            out[i, j] = sum(abs(y1[i, k] - y2[j, k]) for k in range(y1.shape[1]))
    return out


def test_l1_matches_loops(rng):
    y1 = rng.normal(size=(6, 3))
    y2 = rng.normal(size=(4, 3))
    np.testing.assert_allclose(ld.l1(y1, y2).numpy(), ref_l1(y1, y2), rtol=1e-12)
    within = ld.l1(y1).numpy()
    np.testing.assert_allclose(within, ref_l1(y1, y1), rtol=1e-12)
    assert np.all(np.diag(within) == 0)
    np.testing.assert_array_equal(within, within.T)          # exactly symmetric
    # Scalar labels [N] are [N, 1]; ints become float32.
    np.testing.assert_array_equal(ld.l1(y1[:, 0]).numpy(), np.abs(y1[:, :1] - y1[:, 0]))
    ints = ld.l1(np.array([1, 4, 2]))
    assert ints.dtype == tf.float32
    np.testing.assert_array_equal(ints.numpy(), [[0, 3, 1], [3, 0, 2], [1, 2, 0]])


def test_l1_exact_ties_and_far_from_origin():
    ages = np.array([[30.0], [31.0], [29.0], [1000.5], [1001.5]], "float32")
    d = ld.l1(ages).numpy()
    assert d[0, 1] == d[0, 2] == d[3, 4] == 1.0
    assert d.dtype == np.float32


def test_l1_unknown_width_graph_and_registry(rng):
    y = rng.normal(size=(5, 2)).astype("float32")
    fn = tf.function(ld.l1, input_signature=[tf.TensorSpec([None, None])])
    np.testing.assert_allclose(fn(y).numpy(), ref_l1(y, y), rtol=1e-6)
    assert ld.get("l1") is ld.l1
    np.testing.assert_allclose(ld.pairwise_label_distances(y, "l1", chunk_size=2),
                               ref_l1(y, y), rtol=1e-6)
    idx, _ = ld.nearest_neighbours(np.array([[0.0], [1.0], [3.0], [7.0]]), 1, "l1")
    np.testing.assert_array_equal(idx[:, 0], [1, 0, 1, 2])


def test_l1_bad_shapes():
    with pytest.raises(ValueError, match=r"\[N, L\]"):
        ld.l1(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="coordinates"):
        ld.l1(np.zeros((2, 3)), np.zeros((2, 2)))
