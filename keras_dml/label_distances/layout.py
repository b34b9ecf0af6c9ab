"""Layout label distance: one minus the mean IoU of two segmentation maps.

    D_y(A, B) = 1 - mean_{c present in A or B} |{A = c} & {B = c}| / |{A = c} | {B = c}|
"""

import tensorflow as tf

from keras_dml.label_distances._tensors import _nonzero

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
        maps = tf.convert_to_tensor(maps)
        if maps.shape.rank == 2:           # a single map [H, W] is refused
            raise ValueError(f"{name} must be a batch of maps [N, H, W]; got {maps.shape}.")
        if maps.shape.rank != 3:
            raise ValueError(f"{name} must have shape [N, H, W]; got {maps.shape}.")
        if maps.dtype.is_floating:
            maps = tf.cast(tf.round(maps), tf.int32)
        else:
            maps = tf.cast(maps, tf.int32)
        flat = tf.reshape(maps, [tf.shape(maps)[0], -1])
        oh = tf.one_hot(flat, num_classes, dtype=tf.float32)    # [N, P, C]; out of range -> 0
        if mask is not None:
            m = tf.reshape(tf.cast(_nonzero(mask), tf.float32),
                           [tf.shape(maps)[0], -1])
            oh = oh * m[:, :, None]
        return oh

    self_distances = maps2 is None
    a = one_hot(maps1, mask1, "maps1")
    b = a if self_distances else one_hot(maps2, mask2, "maps2")
    # Per-class intersections as a batched matmul over classes: [C, N1, N2].
    at = tf.transpose(a, [2, 0, 1])
    bt = tf.transpose(b, [2, 0, 1])
    inter = tf.matmul(at, bt, transpose_b=True)
    area1 = tf.reduce_sum(at, axis=2)                    # [C, N1]
    area2 = tf.reduce_sum(bt, axis=2)                    # [C, N2]
    union = area1[:, :, None] + area2[:, None, :] - inter
    present = tf.cast(union > 0, tf.float32)
    iou = tf.math.divide_no_nan(inter, union)
    n_present = tf.reduce_sum(present, axis=0)
    miou = tf.math.divide_no_nan(tf.reduce_sum(iou * present, axis=0), n_present)
    d = tf.where(n_present > 0, 1.0 - miou, tf.zeros_like(miou))
    if self_distances:
        d = tf.linalg.set_diag(d, tf.zeros(tf.shape(d)[:1], d.dtype))
    return d
