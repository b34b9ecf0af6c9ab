"""label_distances/batch.py: the checks of batch_label_distances."""

import numpy as np
import pytest
import tensorflow as tf

from keras_dml import label_distances as ld


def test_batch_label_distances_precomputed_checks():
    with pytest.raises(ValueError, match="square"):
        ld.batch_label_distances(np.zeros((3, 4)), "precomputed")
    with pytest.raises(ValueError, match=r"\[B, B\]"):
        ld.batch_label_distances(np.zeros((3,)), "precomputed")
    with pytest.raises(tf.errors.InvalidArgumentError, match="batch size"):
        ld.batch_label_distances(np.zeros((3, 3)), "precomputed", batch_size=4)
    row = ld.batch_label_distances(np.arange(4.0), "precomputed", first_row_only=True)
    assert row.shape == (1, 4)
