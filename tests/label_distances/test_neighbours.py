"""label_distances/neighbours.py: chunked nearest neighbours vs brute force."""

import numpy as np
import pytest

from backend_tools import to_numpy
from continuous_tools import assert_close
from keras_dml import label_distances as ld
from keras_dml._backend import full_precision
from keras_dml.label_distances import nearest_neighbours

pytestmark = pytest.mark.backends


@pytest.fixture(autouse=True)
def _float64():
    # float64 inputs stay float64 under JAX too (x64 for each test; PyTorch
    # computes them in float32: Keras 3.15 maps 64-bit to 32-bit there).
    with full_precision():
        yield


def brute_force_nn(d, k):
    d = d.astype(np.float64).copy()
    np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(d, idx, axis=1)


@pytest.mark.parametrize("chunk", [1, 7, 16, 1000])
def test_nearest_neighbours_match_brute_force(rng, chunk):
    y = rng.normal(size=(53, 3))
    full = ((y[:, None] - y[None]) ** 2).sum(-1)
    ref_i, ref_d = brute_force_nn(full, 6)
    idx, dist = nearest_neighbours(y, 6, chunk_size=chunk)
    np.testing.assert_array_equal(idx, ref_i)
    assert_close(dist, ref_d, rtol=1e-6)
    assert idx.dtype == np.int64 and dist.dtype == np.float32


def test_nearest_neighbours_other_distances(rng):
    maps = rng.integers(0, 4, size=(30, 5, 5))
    full = to_numpy(ld.one_minus_miou(maps, num_classes=4))
    # 1 - mIoU has ties: compare the distances, and the indices' distances.
    idx, dist = nearest_neighbours(maps, 4, "one_minus_miou", chunk_size=8, num_classes=4)
    _, ref_d = brute_force_nn(full, 4)
    assert_close(dist, ref_d, atol=1e-6)
    assert_close(np.take_along_axis(full, idx, axis=1), ref_d, atol=1e-6)
    assert not (idx == np.arange(30)[:, None]).any()
    # Poses with visibility, as a (values, mask) tuple.
    y = rng.normal(size=(25, 8))
    vis = rng.uniform(size=(25, 4)) > 0.3
    vis[:, 0] = True
    full = to_numpy(ld.squared_l2(y, visibility=vis))
    idx, _ = nearest_neighbours((y, vis), 3, chunk_size=6)
    np.testing.assert_array_equal(idx, brute_force_nn(full, 3)[0])


def test_nearest_neighbours_ties_and_self_inclusion():
    y = np.array([[0.0], [1.0], [1.0], [2.0], [5.0]])
    idx, dist = nearest_neighbours(y, 2, chunk_size=2)
    assert idx[0].tolist() == [1, 2]           # equal distances: lower index first
    assert dist[0].tolist() == [1.0, 1.0]
    idx, dist = nearest_neighbours(y, 1, exclude_self=False, chunk_size=2)
    assert idx[:, 0].tolist()[3:] == [3, 4] and np.all(dist == 0)
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbours(y, 5)
