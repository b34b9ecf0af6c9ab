"""The [B, B] label distances of a batch, as the continuous-label losses need them.

``y_true`` is either labels (a distance from ``registry.get`` is applied to
them) or an already computed matrix (``label_distance="precomputed"``);
either way the result is checked finite and non-negative.
"""

import tensorflow as tf

from keras_dml.label_distances.registry import get

__all__ = ["batch_label_distances"]


def batch_label_distances(y_true, label_distance="squared_l2", batch_size=None,
                          first_row_only=False, label_distance_kwargs=None,
                          name="loss"):
    """Label distances of a batch for a continuous-label loss.

    Args:
      y_true: the loss' ``y_true``: labels [B, ...] for a named/callable
        distance, or with ``label_distance="precomputed"`` a [B, B] matrix
        (with ``first_row_only`` also a [B] vector of D_y(0, i)).
      label_distance: a name (see ``get``), "precomputed" or a callable
        ``fn(y1, y2=None) -> [N1, N2]``.
      batch_size: B as a scalar tensor/int (from the embeddings), to check.
      first_row_only: return only the anchor row 0, shape [1, B].
    Returns:
      [B, B] (or [1, B]) float tensor, checked finite and non-negative.
    """
    kwargs = dict(label_distance_kwargs or {})
    if label_distance == "precomputed":
        dy = tf.convert_to_tensor(y_true)
        if first_row_only and dy.shape.rank == 1:
            dy = dy[None, :]
        elif first_row_only and dy.shape.rank == 2 and dy.shape[1] == 1:
            dy = tf.transpose(dy)
        elif dy.shape.rank != 2:
            raise ValueError(
                f"{name}: with label_distance='precomputed', y_true must be a "
                f"[B, B] label-distance matrix; got shape {dy.shape}.")
        else:
            if dy.shape[0] is not None and dy.shape[1] is not None and dy.shape[0] != dy.shape[1]:
                raise ValueError(
                    f"{name}: precomputed label distances must be square [B, B]; "
                    f"got shape {dy.shape}.")
            if batch_size is not None:
                tf.debugging.assert_equal(
                    tf.shape(dy), tf.fill([2], tf.cast(batch_size, tf.int32)),
                    message=f"{name}: the precomputed label-distance matrix "
                            "does not match the batch size of y_pred")
            if first_row_only:
                dy = dy[:1]
    else:
        fn = get(label_distance, **kwargs)
        y = tf.convert_to_tensor(y_true)
        if y.dtype.is_floating:
            tf.debugging.assert_all_finite(
                y, message=f"{name}: y_true (labels) contains NaN or Inf")
        if batch_size is not None:
            tf.debugging.assert_equal(
                tf.shape(y)[0], tf.cast(batch_size, tf.int32),
                message=f"{name}: labels and embeddings have different batch sizes")
        dy = fn(y[:1], y) if first_row_only else fn(y)
        dy = tf.convert_to_tensor(dy)
    if not dy.dtype.is_floating:
        dy = tf.cast(dy, tf.float32)
    tf.debugging.assert_all_finite(
        dy, message=f"{name}: label distances contain NaN or Inf")
    tf.debugging.assert_non_negative(
        dy, message=f"{name}: label distances must be >= 0")
    return dy
