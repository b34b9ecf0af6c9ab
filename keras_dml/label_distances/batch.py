"""The [B, B] label distances of a batch, as the continuous-label losses need them.

``y_true`` is either labels (a distance from ``registry.get`` is applied to
them) or an already computed matrix (``label_distance="precomputed"``);
either way the result is checked finite and non-negative
(``keras_dml._backend.check``: ``ValueError`` eagerly on every backend, a
graph assertion in ``tf.function``, NaN of the loss under ``jit``).
"""

from keras import ops

from keras_dml import _backend
from keras_dml.label_distances._tensors import _rank
from keras_dml.label_distances.registry import get
from keras_dml.ops import is_float

__all__ = ["batch_label_distances"]


def _same_size(a, b):
    """Static ``a == b`` where both sizes are known, else a scalar tensor."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return ops.equal(ops.cast(a, "int32"), ops.cast(b, "int32"))


def _check_size(a, b, message):
    same = _same_size(a, b)
    if isinstance(same, bool):
        if not same:
            raise ValueError(message)
    else:
        _backend.check(same, message)


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
      batch_size: B as an int or scalar tensor (from the embeddings), to check.
      first_row_only: return only the anchor row 0, shape [1, B].
    Returns:
      [B, B] (or [1, B]) float tensor, checked finite and non-negative.
    """
    kwargs = dict(label_distance_kwargs or {})
    if label_distance == "precomputed":
        dy = ops.convert_to_tensor(y_true)
        rank = _rank(dy)
        if first_row_only and rank == 1:
            dy = ops.expand_dims(dy, 0)
        elif first_row_only and rank == 2 and dy.shape[1] == 1:
            dy = ops.transpose(dy)
        elif rank != 2:
            raise ValueError(
                f"{name}: with label_distance='precomputed', y_true must be a "
                f"[B, B] label-distance matrix; got shape {tuple(dy.shape)}.")
        else:
            if dy.shape[0] is not None and dy.shape[1] is not None and dy.shape[0] != dy.shape[1]:
                raise ValueError(
                    f"{name}: precomputed label distances must be square [B, B]; "
                    f"got shape {tuple(dy.shape)}.")
            if batch_size is not None:
                _check_size(ops.shape(dy)[0], batch_size,
                            f"{name}: the precomputed label-distance matrix "
                            "does not match the batch size of y_pred")
                _check_size(ops.shape(dy)[1], batch_size,
                            f"{name}: the precomputed label-distance matrix "
                            "does not match the batch size of y_pred")
            if first_row_only:
                dy = dy[:1]
    else:
        fn = get(label_distance, **kwargs)
        y = ops.convert_to_tensor(y_true)
        if is_float(y):
            _backend.check(ops.all(ops.isfinite(y)),
                           f"{name}: y_true (labels) contains NaN or Inf")
        if batch_size is not None:
            _check_size(ops.shape(y)[0], batch_size,
                        f"{name}: labels and embeddings have different batch sizes")
        dy = fn(y[:1], y) if first_row_only else fn(y)
        dy = ops.convert_to_tensor(dy)
    if not is_float(dy):
        dy = ops.cast(dy, "float32")
    _backend.check(ops.all(ops.isfinite(dy)),
                   f"{name}: label distances contain NaN or Inf")
    # NaN compares False here too, so a NaN never passes as ">= 0".
    _backend.check(ops.all(dy >= 0), f"{name}: label distances must be >= 0")
    return dy
