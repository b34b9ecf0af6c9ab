"""label_distances/l1.py: the L1 label distance vs a numpy loop reference."""

import keras
import numpy as np
import pytest

from backend_tools import BACKEND, to_numpy
from continuous_tools import assert_close
from keras_dml import label_distances as ld
from keras_dml._backend import full_precision

pytestmark = pytest.mark.backends


@pytest.fixture(autouse=True)
def _float64():
    # float64 inputs stay float64 under JAX too (x64 for each test; PyTorch
    # computes them in float32: Keras 3.15 maps 64-bit to 32-bit there).
    with full_precision():
        yield


def ref_l1(y1, y2):
    out = np.zeros((len(y1), len(y2)))
    for i in range(len(y1)):
        for j in range(len(y2)):
            out[i, j] = sum(abs(y1[i, k] - y2[j, k]) for k in range(y1.shape[1]))
    return out


def test_l1_matches_loops(rng):
    y1 = rng.normal(size=(6, 3))
    y2 = rng.normal(size=(4, 3))
    assert_close(to_numpy(ld.l1(y1, y2)), ref_l1(y1, y2), rtol=1e-12)
    within = to_numpy(ld.l1(y1))
    assert_close(within, ref_l1(y1, y1), rtol=1e-12)
    assert np.all(np.diag(within) == 0)
    np.testing.assert_array_equal(within, within.T)          # exactly symmetric
    # Scalar labels [N] are [N, 1]; ints become float32.
    np.testing.assert_array_equal(to_numpy(ld.l1(y1[:, 0])), np.abs(y1[:, :1] - y1[:, 0]))
    ints = ld.l1(np.array([1, 4, 2]))
    assert keras.backend.standardize_dtype(ints.dtype) == "float32"
    np.testing.assert_array_equal(to_numpy(ints), [[0, 3, 1], [3, 0, 2], [1, 2, 0]])


def test_l1_exact_ties_and_far_from_origin():
    ages = np.array([[30.0], [31.0], [29.0], [1000.5], [1001.5]], "float32")
    d = to_numpy(ld.l1(ages))
    assert d[0, 1] == d[0, 2] == d[3, 4] == 1.0
    assert d.dtype == np.float32


@pytest.mark.skipif(BACKEND != "tensorflow",
                    reason="unknown static shapes exist only in TensorFlow graphs")
def test_l1_unknown_width_graph(rng):
    import tensorflow as tf
    y = rng.normal(size=(5, 2)).astype("float32")
    fn = tf.function(ld.l1, input_signature=[tf.TensorSpec([None, None])])
    assert_close(fn(y).numpy(), ref_l1(y, y), rtol=1e-6)


def test_l1_registry_offline_and_neighbours(rng):
    y = rng.normal(size=(5, 2)).astype("float32")
    assert ld.get("l1") is ld.l1
    assert_close(ld.pairwise_label_distances(y, "l1", chunk_size=2),
                 ref_l1(y, y), rtol=1e-6)
    idx, _ = ld.nearest_neighbours(np.array([[0.0], [1.0], [3.0], [7.0]]), 1, "l1")
    np.testing.assert_array_equal(idx[:, 0], [1, 0, 1, 2])


def test_l1_bad_shapes():
    with pytest.raises(ValueError, match=r"\[N, L\]"):
        ld.l1(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="coordinates"):
        ld.l1(np.zeros((2, 3)), np.zeros((2, 2)))
