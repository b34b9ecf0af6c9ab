"""label_distances/registry.py (get by name) and the package's public names."""

import functools

import numpy as np
import pytest

import keras_dml as kd
from backend_tools import to_numpy
from keras_dml import label_distances as ld
from keras_dml._backend import full_precision

pytestmark = pytest.mark.backends


@pytest.fixture(autouse=True)
def _float64():
    # float64 inputs stay float64 under JAX too (x64 for each test; PyTorch
    # computes them in float32: Keras 3.15 maps 64-bit to 32-bit there).
    with full_precision():
        yield


def test_get_names_aliases_and_kwargs(rng):
    assert ld.get("squared_l2") is ld.squared_l2
    assert ld.get("caption_set") is ld.get("caption_set_distance") is ld.caption_set_distance
    maps = rng.integers(0, 3, size=(4, 3, 3))
    bound = ld.get("one_minus_miou", num_classes=3)
    assert isinstance(bound, functools.partial)
    np.testing.assert_array_equal(to_numpy(bound(maps)),
                                  to_numpy(ld.one_minus_miou(maps, num_classes=3)))


def test_get_callables_and_unknown_names():
    fn = lambda a, b=None, scale=1.0: scale   # noqa: E731
    assert ld.get(fn) is fn
    assert ld.get(fn, scale=2.0)(None) == 2.0
    with pytest.raises(ValueError, match="unknown label distance 'l3'"):
        ld.get("l3")


def test_package_exports():
    # Every name of the former single module, plus the neighbour search.
    for name in ("squared_l2", "l1", "one_minus_miou", "caption_set_distance",
                 "word_movers_distance", "pairwise_label_distances", "get",
                 "batch_label_distances", "nearest_neighbours"):
        assert name in ld.__all__ and callable(getattr(kd.label_distances, name))
    assert kd.data.samplers.nearest_neighbours is ld.nearest_neighbours
