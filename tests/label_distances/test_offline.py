"""label_distances/offline.py: the chunked pairwise builder vs the in-batch distances."""

import numpy as np
import pytest

from backend_tools import to_numpy
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


def test_pairwise_label_distances_chunked(rng, tmp_path):
    y = rng.normal(size=(11, 3))
    full = to_numpy(ld.squared_l2(y))
    for chunk in (1, 3, 4, 100):
        got = ld.pairwise_label_distances(y, "squared_l2", chunk_size=chunk)
        assert_close(got, full, rtol=1e-6, atol=1e-6)
        assert got.dtype == np.float32 and np.all(np.diag(got) == 0)
    y2 = rng.normal(size=(5, 3))
    got = ld.pairwise_label_distances(y, chunk_size=4, labels2=y2)
    assert_close(got, to_numpy(ld.squared_l2(y, y2)), rtol=1e-6)
    # Into a memmap on disk.
    out = np.lib.format.open_memmap(tmp_path / "dy.npy", mode="w+", dtype=np.float32,
                                    shape=(11, 11))
    ld.pairwise_label_distances(y, chunk_size=3, out=out)
    out.flush()
    assert_close(np.load(tmp_path / "dy.npy"), full, rtol=1e-6, atol=1e-6)


def test_pairwise_label_distances_tuple_callable_and_kwargs(rng):
    y = rng.normal(size=(7, 6))
    vis = rng.uniform(size=(7, 3)) > 0.2
    vis[:, 0] = True
    got = ld.pairwise_label_distances((y, vis), "squared_l2", chunk_size=2)
    assert_close(got, to_numpy(ld.squared_l2(y, visibility=vis)), rtol=1e-6, atol=1e-6)
    maps = rng.integers(0, 3, size=(6, 4, 4))
    got = ld.pairwise_label_distances(maps, "one_minus_miou", chunk_size=4, num_classes=3)
    assert_close(got, to_numpy(ld.one_minus_miou(maps, num_classes=3)), atol=1e-7)
    manhattan = lambda a, b: np.abs(a[:, None] - b[None]).sum(-1)   # noqa: E731
    got = ld.pairwise_label_distances(y, manhattan, chunk_size=3)
    assert_close(got, manhattan(y, y), rtol=1e-6)
