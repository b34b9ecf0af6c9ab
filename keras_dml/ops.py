"""The one place for the tensor primitives every loss and metric shares.

Distances, similarities, label masks and the masked logsumexp live here so
that each loss states only its own formula. All functions take and return
TensorFlow tensors and are safe inside ``tf.function`` and XLA.
"""

import tensorflow as tf


def l2_normalize(x, axis=-1, epsilon=1e-12):
    """``x / sqrt(max(||x||^2, epsilon))`` along ``axis`` (zero rows stay zero).

    Same values as ``tf.math.l2_normalize``, but divides by ``sqrt`` instead
    of multiplying by ``rsqrt``: IEEE sqrt and division are correctly rounded
    on every CPU, while rsqrt's approximation differs between processors (an
    entry that should be exactly 0.5 is not on some), which broke exact ties
    in retrieval.
    """
    x = tf.convert_to_tensor(x)
    square_sum = tf.reduce_sum(tf.square(x), axis=axis, keepdims=True)
    return x / tf.sqrt(tf.maximum(square_sum, tf.constant(epsilon, x.dtype)))


def safe_sqrt(x):
    """``sqrt(max(x, 0))`` whose gradient is 0 (not inf/NaN) where ``x <= 0``.

    Pairwise distances of identical points are exactly 0; the plain sqrt
    gradient 1/(2 sqrt(x)) is infinite there and poisons a whole batch.
    """
    positive = x > 0
    safe_x = tf.where(positive, x, tf.ones_like(x))
    return tf.where(positive, tf.sqrt(safe_x), tf.zeros_like(x))


def pairwise_squared_distances(x, y=None):
    """Squared Euclidean distances ``||x_i - y_j||^2``, shape [N, M].

    Uses ``|x|^2 + |y|^2 - 2 x.y`` (one matmul), clamped at 0 against rounding.
    With ``y=None`` the distances are within ``x`` and the diagonal is exactly 0.
    """
    x = tf.convert_to_tensor(x)
    self_distances = y is None
    y = x if self_distances else tf.convert_to_tensor(y, dtype=x.dtype)
    x_sq = tf.reduce_sum(tf.square(x), axis=1, keepdims=True)
    y_sq = tf.reduce_sum(tf.square(y), axis=1, keepdims=True)
    d = x_sq - 2.0 * tf.matmul(x, y, transpose_b=True) + tf.transpose(y_sq)
    d = tf.maximum(d, 0.0)
    if self_distances:
        d = tf.linalg.set_diag(d, tf.zeros(tf.shape(d)[:1], dtype=d.dtype))
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
    yn = xn if y is None else l2_normalize(tf.cast(y, xn.dtype))
    return tf.matmul(xn, yn, transpose_b=True)


def flatten_labels(y_true, name="labels"):
    """Class labels given as [B] or [B, 1] -> int32 [B].

    Keras casts ``y_true`` to the loss dtype (float32) before ``call``; labels
    that are not whole numbers are refused rather than silently truncated.
    """
    y_true = tf.convert_to_tensor(y_true)
    rank = y_true.shape.rank
    if rank == 2 and y_true.shape[1] == 1:
        y_true = y_true[:, 0]
    elif rank != 1:
        raise ValueError(
            f"{name} must be class ids of shape [B] or [B, 1]; got shape "
            f"{y_true.shape}."
        )
    if y_true.dtype.is_floating:
        tf.debugging.assert_equal(
            y_true, tf.round(y_true),
            message=f"{name} must be whole-number class ids")
    return tf.cast(y_true, tf.int32)


def label_masks(labels, ref_labels=None):
    """Boolean masks (positive, negative) of shape [N, M] from class labels.

    ``positive[i, j]``: same class and, when comparing a batch with itself
    (``ref_labels=None``), ``i != j``. ``negative[i, j]``: different class.
    """
    same_set = ref_labels is None
    ref_labels = labels if same_set else ref_labels
    same = tf.equal(labels[:, None], ref_labels[None, :])
    negative = tf.logical_not(same)
    if same_set:
        not_self = tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool))
        same = tf.logical_and(same, not_self)
    return same, negative


def masked_logsumexp(x, mask, axis=-1, add_one=False, keepdims=False):
    """``log(sum_{mask} exp(x))`` (``log(1 + sum_{mask} exp(x))`` with ``add_one``).

    The "+1" form is ``softplus(LSE(x))``. Entries outside ``mask`` do not
    contribute; where the mask is empty the result is 0 (with or without the
    +1, following pytorch-metric-learning) and so is its gradient. The max is
    subtracted before ``exp`` so large ``x`` (alpha=32 in float16) cannot
    overflow.
    """
    x = tf.convert_to_tensor(x)
    mask = tf.cast(mask, tf.bool)
    neg_large = tf.constant(x.dtype.min, dtype=x.dtype)
    masked_x = tf.where(mask, x, neg_large)
    m = tf.reduce_max(masked_x, axis=axis, keepdims=True)
    if add_one:
        m = tf.maximum(m, tf.zeros_like(m))
    any_kept = tf.reduce_any(mask, axis=axis, keepdims=True)
    # Rows with nothing kept: shift by 0 so that nothing overflows.
    m = tf.stop_gradient(tf.where(any_kept, m, tf.zeros_like(m)))
    terms = tf.where(mask, tf.exp(masked_x - m), tf.zeros_like(x))
    total = tf.reduce_sum(terms, axis=axis, keepdims=True)
    if add_one:
        total = total + tf.exp(-m)
    out = tf.where(any_kept, tf.math.log(tf.where(any_kept, total, tf.ones_like(total))) + m,
                   tf.zeros_like(total))
    if not keepdims:
        out = tf.squeeze(out, axis=axis)
    return out


def accumulation_dtype(dtype):
    """float32 for 16-bit floats (counts past 2048 / sums past 65504 would
    round or overflow there), the dtype itself otherwise."""
    dtype = tf.as_dtype(dtype)
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


def masked_mean(values, mask):
    """Mean of ``values`` where ``mask`` holds; 0 (zero gradient) if none do.

    Sums and the count are accumulated in ``accumulation_dtype``.
    """
    acc = accumulation_dtype(values.dtype)
    mask = tf.cast(mask, acc)
    count = tf.reduce_sum(mask)
    mean = tf.math.divide_no_nan(tf.reduce_sum(tf.cast(values, acc) * mask), count)
    return tf.cast(mean, values.dtype)


def positive_mean(values):
    """Mean over strictly positive entries (PML's ``AvgNonZeroReducer``); 0 if none."""
    return masked_mean(values, values > 0)
