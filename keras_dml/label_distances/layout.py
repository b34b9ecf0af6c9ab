"""Layout label distance: one minus the mean IoU of two segmentation maps.

    D_y(A, B) = 1 - mean_{c present in A or B} |{A = c} & {B = c}| / |{A = c} | {B = c}|
"""

from keras import ops

from keras_dml.label_distances._tensors import _nonzero, _rank, _set_zero_diagonal
from keras_dml.ops import is_float

__all__ = ["one_minus_miou"]


def one_minus_miou(maps1, maps2=None, num_classes=None, mask1=None, mask2=None):
    """``1 - mIoU`` between integer segmentation maps, [N1, N2].

        IoU_c(A, B) = |{A = c} & {B = c}| / |{A = c} | {B = c}|
        mIoU(A, B)  = mean of IoU_c over the classes c present in A or in B
        D_y(A, B)   = 1 - mIoU(A, B)

    Pixels whose value is outside [0, num_classes) (e.g. an ignore label 255
    or -1), or where a mask is 0, belong to no class and are ignored. Two maps
    with no class present at all are at distance 0.

    Args:
      maps1: [N1, H, W] integer class maps (floats holding whole numbers are
        accepted: Keras casts ``y_true`` to float).
      maps2: [N2, H, W] maps or None (within ``maps1``).
      num_classes: the number of layout classes (required).
      mask1, mask2: optional [N, H, W] pixel masks (nonzero = used).
    Returns:
      [N1, N2] float32 tensor in [0, 1].
    """
    if num_classes is None or int(num_classes) < 1:
        raise ValueError("one_minus_miou needs num_classes >= 1.")
    num_classes = int(num_classes)

    def one_hot(maps, mask, name):
        maps = ops.convert_to_tensor(maps)
        if _rank(maps) == 2:           # a single map [H, W] is refused
            raise ValueError(f"{name} must be a batch of maps [N, H, W]; "
                             f"got {tuple(maps.shape)}.")
        if _rank(maps) != 3:
            raise ValueError(f"{name} must have shape [N, H, W]; got {tuple(maps.shape)}.")
        if is_float(maps):
            maps = ops.round(maps)
        flat = ops.cast(ops.reshape(maps, (ops.shape(maps)[0], -1)), "int32")
        # [N, P, C]; a pixel outside [0, C) matches no class.
        classes = ops.arange(num_classes, dtype="int32")
        oh = ops.cast(ops.equal(ops.expand_dims(flat, 2), classes), "float32")
        if mask is not None:
            m = ops.cast(ops.reshape(_nonzero(mask), (ops.shape(maps)[0], -1)), "float32")
            oh = oh * ops.expand_dims(m, 2)
        return oh

    self_distances = maps2 is None
    a = one_hot(maps1, mask1, "maps1")
    b = a if self_distances else one_hot(maps2, mask2, "maps2")
    # Per-class intersections as a batched matmul over classes: [C, N1, N2].
    at = ops.transpose(a, (2, 0, 1))
    bt = ops.transpose(b, (2, 0, 1))
    inter = ops.matmul(at, ops.transpose(bt, (0, 2, 1)))
    area1 = ops.sum(at, axis=2)                    # [C, N1]
    area2 = ops.sum(bt, axis=2)                    # [C, N2]
    union = ops.expand_dims(area1, 2) + ops.expand_dims(area2, 1) - inter
    present = ops.cast(union > 0, "float32")
    iou = ops.divide_no_nan(inter, union)
    n_present = ops.sum(present, axis=0)
    miou = ops.divide_no_nan(ops.sum(iou * present, axis=0), n_present)
    d = ops.where(n_present > 0, 1.0 - miou, ops.zeros_like(miou))
    if self_distances:
        d = _set_zero_diagonal(d)
    return d
