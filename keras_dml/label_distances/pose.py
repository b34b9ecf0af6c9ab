"""Pose label distance: squared Euclidean, optionally over jointly visible coordinates.

    D_y(i, j) = L / n_ij * sum_k v_ik v_jk (y_ik - y_jk)^2,   n_ij = sum_k v_ik v_jk

with v the visibility masks (all ones: the plain squared L2 sum_k (y_ik - y_jk)^2).
"""

from keras import ops

from keras_dml import _backend
from keras_dml import ops as kd_ops
from keras_dml.label_distances._tensors import _float_tensor, _nonzero, _rank, _set_zero_diagonal

__all__ = ["squared_l2"]


def _expand_visibility(visibility, num_coords, dtype, name):
    """Per-joint [N, J] or per-coordinate [N, L] visibility -> [N, L] in dtype."""
    v = ops.convert_to_tensor(visibility)
    if _rank(v) != 2:
        raise ValueError(f"{name} must have shape [N, J] or [N, L]; got {tuple(v.shape)}.")
    v = ops.cast(_nonzero(v), dtype)
    width = v.shape[1]
    if width is None:
        raise ValueError(f"The width of {name} must be known.")
    if width != num_coords:
        if width == 0 or num_coords % width:
            raise ValueError(
                f"{name} has {width} columns; it must have one per coordinate "
                f"({num_coords}) or one per joint (a divisor of {num_coords}).")
        v = ops.repeat(v, num_coords // width, axis=1)   # joint-major layout
    return v


def squared_l2(y1, y2=None, visibility=None, visibility2=None,
               no_overlap_value=None):
    """Squared Euclidean distances between label vectors, [N1, N2].

        D_y(i, j) = sum_k (y_ik - y_jk)^2

    With a visibility mask (missing joints), only the coordinates visible in
    *both* labels count, and the sum is rescaled to the full length L:

        D_y(i, j) = L / n_ij * sum_k v_ik v_jk (y_ik - y_jk)^2,
        n_ij = sum_k v_ik v_jk   (number of jointly visible coordinates)

    so that a pair seen through fewer joints is not made artificially close;
    with every coordinate visible it is the plain squared L2. Coordinates of
    invisible joints are never read (they may be garbage or NaN).

    Args:
      y1: [N1, L] (or [N1] for scalar labels) float labels.
      y2: [N2, L] labels, or None for distances within ``y1``.
      visibility: [N1, L] per-coordinate or [N1, J] per-joint mask (nonzero =
        visible), with L a multiple of J and coordinates laid out joint-major
        (x_1, y_1, x_2, y_2, ...). Only with ``visibility``: ``visibility2``
        for ``y2`` (defaults to ``visibility`` when ``y2`` is None, to all
        visible otherwise).
      no_overlap_value: distance given to a pair with no jointly visible
        coordinate. None (default): such a pair is an error (``ValueError``
        eagerly, see ``keras_dml._backend.check``).
    Returns:
      [N1, N2] tensor, in the float dtype of ``y1`` (float32 for int input).
    """
    self_distances = y2 is None
    y1 = _float_tensor(y1, "y1")
    if _rank(y1) == 1:
        y1 = ops.expand_dims(y1, 1)
    if _rank(y1) != 2:
        raise ValueError(f"pose labels must have shape [N, L]; got {tuple(y1.shape)}.")
    if self_distances:
        y2 = y1
    else:
        y2 = ops.cast(_float_tensor(y2, "y2"), y1.dtype)
        if _rank(y2) == 1:
            y2 = ops.expand_dims(y2, 1)
    if visibility is None and visibility2 is None:
        # Distances are translation invariant: centring first keeps the
        # |y1|^2 + |y2|^2 - 2 y1.y2 form from cancelling catastrophically.
        center = ops.mean(y1, axis=0, keepdims=True)
        if self_distances:
            return kd_ops.pairwise_squared_distances(y1 - center)
        return kd_ops.pairwise_squared_distances(y1 - center, y2 - center)

    num_coords = y1.shape[1]
    v1 = (ops.ones_like(y1) if visibility is None else
          _expand_visibility(visibility, num_coords, y1.dtype, "visibility"))
    if self_distances:
        v2 = v1
    elif visibility2 is None:
        v2 = ops.ones_like(y2)
    else:
        v2 = _expand_visibility(visibility2, num_coords, y1.dtype, "visibility2")
    # Zero the invisible coordinates (where also drops NaN placeholders).
    y1m = ops.where(v1 > 0, y1, ops.zeros_like(y1))
    y2m = ops.where(v2 > 0, y2, ops.zeros_like(y2))
    count1 = ops.sum(v1, axis=0, keepdims=True)
    center = ops.divide_no_nan(ops.sum(y1m, axis=0, keepdims=True), count1)
    y1m = (y1m - center) * v1
    y2m = (y2m - center) * v2
    # sum_k v1 v2 (y1 - y2)^2 = (v1 y1^2) v2^T + v1 (v2 y2^2)^T - 2 (v1 y1)(v2 y2)^T
    s = (ops.matmul(ops.square(y1m), ops.transpose(v2))
         + ops.matmul(v1, ops.transpose(ops.square(y2m)))
         - 2.0 * ops.matmul(y1m, ops.transpose(y2m)))
    s = ops.maximum(s, ops.zeros_like(s))
    n = ops.matmul(v1, ops.transpose(v2))
    has_overlap = n > 0
    if no_overlap_value is None:
        _backend.check(
            has_overlap,
            "squared_l2: a pair of labels has no jointly visible coordinate; "
            "pass no_overlap_value= to give such pairs a distance")
        # Only reached where the check cannot raise (jit): NaN, never a 0.
        fill = ops.full_like(s, float("nan"))
    else:
        fill = ops.full_like(s, no_overlap_value)
    d = ops.where(has_overlap,
                  ops.cast(num_coords, s.dtype) * ops.divide_no_nan(s, n), fill)
    if self_distances:
        d = _set_zero_diagonal(d, ops.diagonal(n) > 0)
    return d
