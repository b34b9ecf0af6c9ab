"""Pose label distance: squared Euclidean, optionally over jointly visible coordinates.

    D_y(i, j) = L / n_ij * sum_k v_ik v_jk (y_ik - y_jk)^2,   n_ij = sum_k v_ik v_jk

with v the visibility masks (all ones: the plain squared L2 sum_k (y_ik - y_jk)^2).
"""

import tensorflow as tf

from keras_dml import ops
from keras_dml.label_distances._tensors import _float_tensor, _nonzero

__all__ = ["squared_l2"]


def _expand_visibility(visibility, num_coords, dtype, name):
    """Per-joint [N, J] or per-coordinate [N, L] visibility -> [N, L] in dtype."""
    v = tf.convert_to_tensor(visibility)
    if v.shape.rank != 2:
        raise ValueError(f"{name} must have shape [N, J] or [N, L]; got {v.shape}.")
    v = tf.cast(_nonzero(v), dtype)
    width = v.shape[1]
    if width is None:
        raise ValueError(f"The width of {name} must be known.")
    if width != num_coords:
        if width == 0 or num_coords % width:
            raise ValueError(
                f"{name} has {width} columns; it must have one per coordinate "
                f"({num_coords}) or one per joint (a divisor of {num_coords}).")
        v = tf.repeat(v, num_coords // width, axis=1)   # joint-major layout
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
        coordinate. None (default): such a pair is an error.
    Returns:
      [N1, N2] tensor, in the float dtype of ``y1`` (float32 for int input).
    """
    self_distances = y2 is None
    y1 = _float_tensor(y1, "y1")
    if y1.shape.rank == 1:
        y1 = y1[:, None]
    if y1.shape.rank != 2:
        raise ValueError(f"pose labels must have shape [N, L]; got {y1.shape}.")
    if self_distances:
        y2 = y1
    else:
        y2 = tf.cast(_float_tensor(y2, "y2"), y1.dtype)
        if y2.shape.rank == 1:
            y2 = y2[:, None]
    if visibility is None and visibility2 is None:
        # Distances are translation invariant: centring first keeps the
        # |y1|^2 + |y2|^2 - 2 y1.y2 form from cancelling catastrophically.
        center = tf.reduce_mean(y1, axis=0, keepdims=True)
        if self_distances:
            return ops.pairwise_squared_distances(y1 - center)
        return ops.pairwise_squared_distances(y1 - center, y2 - center)

    num_coords = y1.shape[1]
    v1 = (tf.ones_like(y1) if visibility is None else
          _expand_visibility(visibility, num_coords, y1.dtype, "visibility"))
    if self_distances:
        v2 = v1
    elif visibility2 is None:
        v2 = tf.ones_like(y2)
    else:
        v2 = _expand_visibility(visibility2, num_coords, y1.dtype, "visibility2")
    # Zero the invisible coordinates (tf.where also drops NaN placeholders).
    y1m = tf.where(v1 > 0, y1, tf.zeros_like(y1))
    y2m = tf.where(v2 > 0, y2, tf.zeros_like(y2))
    count1 = tf.reduce_sum(v1, axis=0, keepdims=True)
    center = tf.math.divide_no_nan(tf.reduce_sum(y1m, axis=0, keepdims=True), count1)
    y1m = (y1m - center) * v1
    y2m = (y2m - center) * v2
    # sum_k v1 v2 (y1 - y2)^2 = (v1 y1^2) v2^T + v1 (v2 y2^2)^T - 2 (v1 y1)(v2 y2)^T
    s = (tf.matmul(tf.square(y1m), v2, transpose_b=True)
         + tf.matmul(v1, tf.square(y2m), transpose_b=True)
         - 2.0 * tf.matmul(y1m, y2m, transpose_b=True))
    s = tf.maximum(s, 0.0)
    n = tf.matmul(v1, v2, transpose_b=True)
    has_overlap = n > 0
    if no_overlap_value is None:
        tf.debugging.assert_equal(
            tf.reduce_all(has_overlap), True,
            message="squared_l2: a pair of labels has no jointly visible "
                    "coordinate; pass no_overlap_value= to give such pairs a "
                    "distance")
        fill = tf.zeros_like(s)
    else:
        fill = tf.fill(tf.shape(s), tf.cast(no_overlap_value, s.dtype))
    d = tf.where(has_overlap,
                 tf.cast(num_coords, s.dtype) * tf.math.divide_no_nan(s, n), fill)
    if self_distances:
        d = tf.linalg.set_diag(d, tf.where(tf.linalg.diag_part(has_overlap),
                                           tf.zeros_like(tf.linalg.diag_part(d)),
                                           tf.linalg.diag_part(d)))
    return d
