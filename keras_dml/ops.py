"""The one place for the tensor primitives every loss and metric shares.

Distances, similarities, label masks and the masked logsumexp live here so
that each loss states only its own formula. Written with ``keras.ops``: the
same values and gradients under the TensorFlow, JAX and PyTorch backends,
and safe inside ``tf.function``, XLA and ``jax.jit``.
"""

import keras
import ml_dtypes
from keras import ops

from keras_dml import _backend


def dtype_of(x):
    """The standardised dtype name of a tensor ("float32", "int32", ...)."""
    return keras.backend.standardize_dtype(x.dtype)


def is_float(x):
    return "float" in dtype_of(x)


def l2_normalize(x, axis=-1, epsilon=1e-12):
    """``x / sqrt(max(||x||^2, epsilon))`` along ``axis`` (zero rows stay zero).

    Same values as ``tf.math.l2_normalize``, but divides by ``sqrt`` instead
    of multiplying by ``rsqrt``: IEEE sqrt and division are correctly rounded
    on every CPU, while rsqrt's approximation differs between processors (an
    entry that should be exactly 0.5 is not on some), which broke exact ties
    in retrieval.
    """
    x = ops.convert_to_tensor(x)
    square_sum = ops.sum(ops.square(x), axis=axis, keepdims=True)
    epsilon = constant(epsilon, x.dtype)
    # where, not maximum: see matmul_t.
    return x / ops.sqrt(ops.where(square_sum >= epsilon, square_sum, epsilon))


def safe_sqrt(x):
    """``sqrt(max(x, 0))`` whose gradient is 0 (not inf/NaN) where ``x <= 0``.

    Pairwise distances of identical points are exactly 0; the plain sqrt
    gradient 1/(2 sqrt(x)) is infinite there and poisons a whole batch.
    """
    positive = x > 0
    safe_x = ops.where(positive, x, ops.ones_like(x))
    return ops.where(positive, ops.sqrt(safe_x), ops.zeros_like(x))


def matmul_t(x, y):
    """``x @ y^T`` for [N, D] and [M, D] -> [N, M], in the inputs' dtype.

    An einsum, because keras 3.15's ``ops.matmul`` (like ``ops.maximum`` and
    ``ops.divide_no_nan``) computes and returns float64 in float32 under
    PyTorch (``keras.backend.result_type`` maps 64-bit dtypes to 32-bit).
    """
    return ops.einsum("ij,kj->ik", x, y)


def divide_no_nan(x, y):
    """``x / y``, 0 (with a zero gradient) where ``y == 0``; keeps float64
    under PyTorch (``keras.ops.divide_no_nan`` does not, see ``matmul_t``)."""
    x = ops.convert_to_tensor(x)
    y = ops.cast(y, x.dtype)
    nonzero = ops.not_equal(y, ops.zeros_like(y))
    safe_y = ops.where(nonzero, y, ops.ones_like(y))
    return ops.where(nonzero, x / safe_y, ops.zeros_like(x / safe_y))


def pairwise_squared_distances(x, y=None):
    """Squared Euclidean distances ``||x_i - y_j||^2``, shape [N, M].

    Uses ``|x|^2 + |y|^2 - 2 x.y`` (one matmul), clamped at 0 against rounding.
    With ``y=None`` the distances are within ``x`` and the diagonal is exactly 0.
    """
    x = ops.convert_to_tensor(x)
    self_distances = y is None
    y = x if self_distances else ops.cast(y, x.dtype)
    x_sq = ops.sum(ops.square(x), axis=1, keepdims=True)
    y_sq = ops.sum(ops.square(y), axis=1, keepdims=True)
    d = x_sq - 2.0 * matmul_t(x, y) + ops.transpose(y_sq)
    d = ops.relu(d)
    if self_distances:
        d = ops.where(eye_mask(ops.shape(d)[0]), ops.zeros_like(d), d)
    return d


def pairwise_distances(x, y=None, squared=False):
    """Euclidean (or squared, with ``squared=True``) distances, shape [N, M].

    The square root has a zero gradient at zero distance (see ``safe_sqrt``).
    """
    d = pairwise_squared_distances(x, y)
    return d if squared else safe_sqrt(d)


def cosine_similarity(x, y=None):
    """Cosine similarities of the rows of ``x`` and ``y`` (or ``x``), [N, M]."""
    xn = l2_normalize(x)
    yn = xn if y is None else l2_normalize(ops.cast(y, xn.dtype))
    return matmul_t(xn, yn)


def flatten_labels(y_true, name="labels"):
    """Class labels given as [B] or [B, 1] -> int32 [B].

    Keras casts ``y_true`` to the loss dtype (float32) before ``call``; labels
    that are not whole numbers are refused rather than silently truncated.
    """
    y_true = ops.convert_to_tensor(y_true)
    rank = len(y_true.shape)
    if rank == 2 and y_true.shape[1] == 1:
        y_true = y_true[:, 0]
    elif rank != 1:
        raise ValueError(
            f"{name} must be class ids of shape [B] or [B, 1]; got shape "
            f"{y_true.shape}."
        )
    if is_float(y_true):
        _backend.check(ops.equal(y_true, ops.round(y_true)),
                       f"{name} must be whole-number class ids")
    return ops.cast(y_true, "int32")


def label_masks(labels, ref_labels=None):
    """Boolean masks (positive, negative) of shape [N, M] from class labels.

    ``positive[i, j]``: same class and, when comparing a batch with itself
    (``ref_labels=None``), ``i != j``. ``negative[i, j]``: different class.
    """
    same_set = ref_labels is None
    ref_labels = labels if same_set else ref_labels
    same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(ref_labels, 0))
    negative = ops.logical_not(same)
    if same_set:
        same = ops.logical_and(same, ops.logical_not(eye_mask(ops.shape(labels)[0])))
    return same, negative


def one_hot_mask(labels, num_classes):
    """Boolean [B, C]: ``mask[i, c] = (labels[i] == c)`` (no row for labels
    outside [0, C): callers check the range first)."""
    classes = ops.arange(num_classes, dtype=labels.dtype)
    return ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(classes, 0))


def eye_mask(n):
    """Boolean identity matrix [n, n] (the "i == j" pairs of a batch)."""
    index = ops.arange(n)
    return ops.equal(ops.expand_dims(index, 1), ops.expand_dims(index, 0))


def masked_logsumexp(x, mask, axis=-1, add_one=False, keepdims=False):
    """``log(sum_{mask} exp(x))`` (``log(1 + sum_{mask} exp(x))`` with ``add_one``).

    The "+1" form is ``softplus(LSE(x))``. Entries outside ``mask`` do not
    contribute; where the mask is empty the result is 0 (with or without the
    +1, following pytorch-metric-learning) and so is its gradient. The max is
    subtracted before ``exp`` so large ``x`` (alpha=32 in float16) cannot
    overflow.
    """
    x = ops.convert_to_tensor(x)
    if x.shape[axis] == 0:
        # An empty axis: every row is empty (0). Summed rather than maxed:
        # JAX and PyTorch refuse a max over an empty axis.
        return ops.sum(x, axis=axis, keepdims=keepdims)
    mask = ops.cast(mask, "bool")
    # (ops.cast of a Python float goes through float32 under TensorFlow,
    # where float64's min is out of range.)
    neg_large = constant(float(ml_dtypes.finfo(dtype_of(x)).min), x.dtype)
    masked_x = ops.where(mask, x, neg_large)
    m = ops.max(masked_x, axis=axis, keepdims=True)
    if add_one:
        m = ops.relu(m)
    any_kept = ops.any(mask, axis=axis, keepdims=True)
    # Rows with nothing kept: shift by 0 so that nothing overflows.
    m = ops.stop_gradient(ops.where(any_kept, m, ops.zeros_like(m)))
    terms = ops.where(mask, ops.exp(masked_x - m), ops.zeros_like(x))
    total = ops.sum(terms, axis=axis, keepdims=True)
    if add_one:
        total = total + ops.exp(-m)
    out = ops.where(any_kept, ops.log(ops.where(any_kept, total, ops.ones_like(total))) + m,
                    ops.zeros_like(total))
    if not keepdims:
        out = ops.squeeze(out, axis=axis)
    return out


def accumulation_dtype(dtype):
    """float32 for 16-bit floats (counts past 2048 / sums past 65504 would
    round or overflow there), the dtype itself otherwise."""
    dtype = keras.backend.standardize_dtype(dtype)
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def masked_mean(values, mask):
    """Mean of ``values`` where ``mask`` holds; 0 (zero gradient) if none do.

    Sums and the count are accumulated in ``accumulation_dtype``.
    """
    acc = accumulation_dtype(values.dtype)
    mask = ops.cast(mask, acc)
    count = ops.sum(mask)
    mean = divide_no_nan(ops.sum(ops.cast(values, acc) * mask), count)
    return ops.cast(mean, values.dtype)


def positive_mean(values):
    """Mean over strictly positive entries (PML's ``AvgNonZeroReducer``); 0 if none."""
    return masked_mean(values, values > 0)


def constant(value, dtype):
    """The Python number ``value`` as a scalar tensor of ``dtype``, rounded once.

    ``keras.ops.cast(0.1, "float64")`` goes through float32 under TensorFlow
    (off by 1.5e-9); converting with the dtype is exact on every backend.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ops.convert_to_tensor(value, dtype=dtype)
    return ops.cast(value, dtype)
