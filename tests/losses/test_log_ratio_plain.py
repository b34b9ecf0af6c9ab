"""LogRatioLoss(ratio="plain"): the plain-ratio ablation vs numpy loops."""

import numpy as np
import pytest

import keras_dml as kd
from continuous_tools import FLOAT64, assert_close, value_and_grad64
from finite_difference import finite_difference_grad
from keras_dml.losses.log_ratio import log_ratio_loss

pytestmark = pytest.mark.backends


def ref_plain_ratio(f, dy, anchors="all", squared=True, eps=1e-6):
    """Loops: per anchor, the mean over ordered pairs (i, j) of the others of
    (x_i / x_j - y_i / y_j)^2 with x = D + eps, y = D_y + eps."""
    b, dim = f.shape
    de = 0.0 if squared else 1e-4 / dim
    total, anchor_list = 0.0, [0] if anchors == "first" else range(b)
    for a in anchor_list:
        acc, count = 0.0, 0
        for i in range(b):
            for j in range(b):
                if a in (i, j) or i == j:
                    continue
                di = float(np.sum((f[a] - f[i]) ** 2)) + de
                dj = float(np.sum((f[a] - f[j]) ** 2)) + de
                if not squared:
                    di, dj = np.sqrt(di), np.sqrt(dj)
                t = (di + eps) / (dj + eps) - (dy[a, i] + eps) / (dy[a, j] + eps)
                acc += t * t
                count += 1
        total += acc / count
    return total / len(anchor_list)


def data(rng, b=7, dim=3, labels=2):
    f = rng.normal(size=(b, dim))
    y = rng.normal(size=(b, labels))
    dy = ((y[:, None] - y[None]) ** 2).sum(-1)
    return f, y, dy


@pytest.mark.parametrize("anchors", ["all", "first"])
@pytest.mark.parametrize("squared", [True, False])
def test_plain_ratio_matches_loops_values_and_gradients(rng, anchors, squared):
    f, _, dy = data(rng)
    value, grad = value_and_grad64(
        lambda x, d: log_ratio_loss(x, d, anchors, squared, ratio="plain"), f, dy)
    ref = ref_plain_ratio(f, dy, anchors, squared)
    assert_close(value, ref, rtol=1e-9)
    num = finite_difference_grad(lambda v: ref_plain_ratio(v, dy, anchors, squared), f)
    assert_close(grad, num, rtol=1e-5, atol=1e-7)


def test_plain_ratio_is_zero_when_ratios_match_and_keras_class(rng):
    f, y, _ = data(rng, b=6)
    dy = ((f[:, None] - f[None]) ** 2).sum(-1) * 3.0     # proportional: ratios equal
    matched, _ = value_and_grad64(lambda x, d: log_ratio_loss(x, d, ratio="plain"), f, dy)
    assert abs(matched) < (1e-9 if FLOAT64 else 1e-5)
    loss = kd.losses.LogRatioLoss(ratio="plain")
    assert loss.get_config()["ratio"] == "plain"
    assert kd.losses.LogRatioLoss.from_config(loss.get_config()).ratio == "plain"
    value = loss(y.astype("float32"), f.astype("float32"))
    ref = ref_plain_ratio(f, ((y[:, None] - y[None]) ** 2).sum(-1))
    assert_close(float(value), ref, rtol=2e-4)
    assert float(log_ratio_loss(f[:2], dy[:2, :2], ratio="plain")) == 0.0
    with pytest.raises(ValueError, match="ratio must be one of"):
        kd.losses.LogRatioLoss(ratio="linear")
