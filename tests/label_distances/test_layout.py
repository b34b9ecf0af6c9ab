"""label_distances/layout.py: 1 - mIoU vs a numpy reference and hand-made layouts."""

import numpy as np
import pytest

from backend_tools import to_numpy
from continuous_tools import assert_close
from keras_dml import label_distances as ld
from keras_dml._backend import full_precision

pytestmark = pytest.mark.backends


@pytest.fixture(autouse=True)
def _float64():
    # float64 inputs stay float64 under JAX too (x64 for each test; PyTorch
    # computes them in float32: Keras 3.15 maps 64-bit to 32-bit there).
    with full_precision():
        yield


def ref_one_minus_miou(a, b, num_classes):
    ious = []
    for c in range(num_classes):
        inter = np.logical_and(a == c, b == c).sum()
        union = np.logical_or(a == c, b == c).sum()
        if union > 0:
            ious.append(inter / union)
    return 1.0 - np.mean(ious) if ious else 0.0


def test_miou_hand_made_layouts():
    left_right = np.array([[0, 0, 1, 1]] * 4)
    all_zero = np.zeros((4, 4), int)
    # A three-wall layout: ceiling row, two walls, floor row.
    room = np.array([[0, 0, 0, 0],
                     [1, 1, 2, 2],
                     [1, 1, 2, 2],
                     [3, 3, 3, 3]])
    shifted = np.array([[0, 0, 0, 0],
                        [1, 2, 2, 2],
                        [1, 2, 2, 2],
                        [3, 3, 3, 3]])
    maps = np.stack([left_right, all_zero, room, shifted])
    d = to_numpy(ld.one_minus_miou(maps, num_classes=4))
    # left_right vs all_zero: classes {0, 1}: IoU_0 = 8/16, IoU_1 = 0 -> 0.75.
    assert d[0, 1] == pytest.approx(0.75)
    # room vs shifted: IoU_0 = 1, IoU_1 = 2/4, IoU_2 = 4/6, IoU_3 = 1.
    assert d[2, 3] == pytest.approx(1 - (1 + 0.5 + 4 / 6 + 1) / 4)
    # left_right vs room: classes 0..3 all present: IoU_0 = 2/(8+4-2) = 0.2
    # (row 0, columns 0-1); class 1 is the right half in one map and the
    # left wall in the other: IoU_1 = 0; IoU_2 = IoU_3 = 0.
    assert d[0, 2] == pytest.approx(1 - 0.2 / 4)
    assert np.all(np.diag(d) == 0)
    assert_close(d, d.T)


def test_miou_random_vs_reference_and_ignore(rng):
    a = rng.integers(0, 5, size=(6, 7, 5))
    b = rng.integers(0, 5, size=(4, 7, 5))
    a[0, :2] = 255                            # ignore label: no class
    b[1, 3:] = -1
    got = to_numpy(ld.one_minus_miou(a, b, num_classes=5))
    ref = np.array([[ref_one_minus_miou(x, y, 5) for y in b] for x in a])
    assert_close(got, ref, rtol=1e-6, atol=1e-7)
    # Keras hands y_true over as float: whole-number floats are accepted.
    got_f = to_numpy(ld.one_minus_miou(a.astype("float32"), b.astype("float32"), num_classes=5))
    assert_close(got_f, got)
    # Pixel masks act like the ignore label.
    mask = np.ones_like(a)
    mask[0, :2] = 0
    a2 = a.copy()
    a2[0, :2] = 3
    assert_close(
        to_numpy(ld.one_minus_miou(a2, b, num_classes=5, mask1=mask)), got, atol=1e-7)


def test_miou_errors():
    with pytest.raises(ValueError, match="num_classes"):
        ld.one_minus_miou(np.zeros((2, 3, 3), int))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        ld.one_minus_miou(np.zeros((3, 3), int), num_classes=2)
