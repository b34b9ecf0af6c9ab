"""Input conversion shared by the in-batch label distances (pose, layout, captions)."""

import tensorflow as tf


def _nonzero(x):
    """Boolean ``x != 0`` for bool, int or float masks."""
    x = tf.convert_to_tensor(x)
    if x.dtype == tf.bool:
        return x
    return tf.not_equal(x, tf.zeros_like(x))


def _float_tensor(x, name):
    """``x`` as a float tensor: float dtypes are kept, others become float32."""
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    return x
