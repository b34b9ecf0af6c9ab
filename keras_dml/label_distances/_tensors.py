"""Input conversion shared by the in-batch label distances (pose, layout,
captions, l1), written with ``keras.ops`` (every Keras backend)."""

from keras import ops

from keras_dml.ops import dtype_of, eye_mask, is_float


def _nonzero(x):
    """Boolean ``x != 0`` for bool, int or float masks."""
    x = ops.convert_to_tensor(x)
    if dtype_of(x) == "bool":
        return x
    return ops.not_equal(x, ops.zeros_like(x))


def _float_tensor(x, name):
    """``x`` as a float tensor: float dtypes are kept, others become float32."""
    del name
    x = ops.convert_to_tensor(x)
    if not is_float(x):
        x = ops.cast(x, "float32")
    return x


def _rank(x):
    return len(x.shape)


def _set_zero_diagonal(d, where=None):
    """``d`` [N, N] with its diagonal set to 0 (only where the [N] boolean
    ``where`` holds, if given)."""
    diag = eye_mask(ops.shape(d)[0])
    if where is not None:
        diag = ops.logical_and(diag, ops.expand_dims(where, 1))
    return ops.where(diag, ops.zeros_like(d), d)
