"""L1 (Manhattan) label distance between label vectors.

    D_y(i, j) = sum_k |y_ik - y_jk|

The label distance of Rank-N-Contrast (Zha et al., NeurIPS 2023; the
authors' ``label_diff="l1"``): ages, angles, any vector of continuous labels.
"""

from keras import ops

from keras_dml.label_distances._tensors import _float_tensor, _rank

__all__ = ["l1"]


def _as_matrix(y, name):
    y = _float_tensor(y, name)
    if _rank(y) == 1:
        y = ops.expand_dims(y, 1)
    if _rank(y) != 2:
        raise ValueError(f"{name} must be label vectors of shape [N, L] (or [N]); "
                         f"got shape {tuple(y.shape)}.")
    return y


def l1(y1, y2=None):
    """L1 distances between label vectors, [N1, N2].

        D_y(i, j) = sum_k |y1_ik - y2_jk|

    Computed from direct differences, one coordinate at a time (memory
    N1 x N2, never N1 x N2 x L when L is known): no cancellation, so
    ``D_y(i, j) == D_y(j, i)`` exactly and equal label gaps give exactly
    equal distances (the ties that rank-based losses read).

    Args:
      y1: [N1, L] (or [N1] for scalar labels) float labels (ints become
        float32).
      y2: [N2, L] labels, or None for distances within ``y1`` (the diagonal
        is then exactly 0).
    Returns:
      [N1, N2] tensor in the float dtype of ``y1``.
    """
    y1 = _as_matrix(y1, "y1")
    y2 = y1 if y2 is None else ops.cast(_as_matrix(y2, "y2"), y1.dtype)
    width = y1.shape[1]
    if y2.shape[1] is not None and width is not None and y2.shape[1] != width:
        raise ValueError(f"y1 has {width} label coordinates and y2 has {y2.shape[1]}.")
    if width is None:
        # Unknown label width (a TensorFlow graph): one [N1, N2, L] tensor.
        return ops.sum(ops.abs(ops.expand_dims(y1, 1) - ops.expand_dims(y2, 0)), axis=2)
    if width == 0:
        return ops.zeros((ops.shape(y1)[0], ops.shape(y2)[0]), y1.dtype)
    # L is a small static number (label coordinates), not the batch.
    d = ops.abs(y1[:, :1] - ops.transpose(y2[:, :1]))
    for k in range(1, width):
        d = d + ops.abs(y1[:, k:k + 1] - ops.transpose(y2[:, k:k + 1]))
    return d
