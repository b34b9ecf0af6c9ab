"""LogRatioLoss(ratio="plain"): the plain-ratio ablation vs numpy loops."""

import numpy as np
import pytest
import tensorflow as tf

import keras_dml as kd
from finite_difference import finite_difference_grad
from keras_dml.losses.log_ratio import log_ratio_loss


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
    value = log_ratio_loss(tf.constant(f), tf.constant(dy), anchors, squared, ratio="plain")
    ref = ref_plain_ratio(f, dy, anchors, squared)
    np.testing.assert_allclose(float(value), ref, rtol=1e-9)
    x = tf.constant(f)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = log_ratio_loss(x, tf.constant(dy), anchors, squared, ratio="plain")
    grad = tape.gradient(loss, x).numpy()
    num = finite_difference_grad(lambda v: ref_plain_ratio(v, dy, anchors, squared), f)
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-7)


def test_plain_ratio_is_zero_when_ratios_match_and_keras_class(rng):
    f, y, _ = data(rng, b=6)
    dy = ((f[:, None] - f[None]) ** 2).sum(-1) * 3.0     # proportional: ratios equal
    assert abs(float(log_ratio_loss(tf.constant(f), tf.constant(dy), ratio="plain"))) < 1e-9
    loss = kd.losses.LogRatioLoss(ratio="plain")
    assert loss.get_config()["ratio"] == "plain"
    assert kd.losses.LogRatioLoss.from_config(loss.get_config()).ratio == "plain"
    value = loss(tf.constant(y, tf.float32), tf.constant(f, tf.float32))
    ref = ref_plain_ratio(f, ((y[:, None] - y[None]) ** 2).sum(-1))
    np.testing.assert_allclose(float(value), ref, rtol=2e-4)
    assert float(log_ratio_loss(tf.constant(f[:2]), tf.constant(dy[:2, :2]),
                                ratio="plain")) == 0.0
    with pytest.raises(ValueError, match="ratio must be one of"):
        kd.losses.LogRatioLoss(ratio="linear")
