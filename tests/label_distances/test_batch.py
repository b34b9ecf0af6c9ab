"""label_distances/batch.py: the checks of batch_label_distances."""

import numpy as np
import pytest

from keras_dml import label_distances as ld
from keras_dml._backend import full_precision

pytestmark = pytest.mark.backends


@pytest.fixture(autouse=True)
def _float64():
    # float64 inputs stay float64 under JAX too (x64 for each test; PyTorch
    # computes them in float32: Keras 3.15 maps 64-bit to 32-bit there).
    with full_precision():
        yield


def test_batch_label_distances_precomputed_checks():
    with pytest.raises(ValueError, match="square"):
        ld.batch_label_distances(np.zeros((3, 4)), "precomputed")
    with pytest.raises(ValueError, match=r"\[B, B\]"):
        ld.batch_label_distances(np.zeros((3,)), "precomputed")
    with pytest.raises(ValueError, match="batch size"):
        ld.batch_label_distances(np.zeros((3, 3)), "precomputed", batch_size=4)
    row = ld.batch_label_distances(np.arange(4.0), "precomputed", first_row_only=True)
    assert row.shape == (1, 4)
