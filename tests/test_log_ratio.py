"""LogRatioLoss vs a brute-force triplet enumeration (numpy float64 loops)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dml as kd
from finite_difference import finite_difference_grad
from keras_dml.losses.log_ratio import log_ratio_loss


# ---------------------------------------------------------------- references

def ref_sq_l2(y):
    n = len(y)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            out[i, j] = sum((y[i, k] - y[j, k]) ** 2 for k in range(y.shape[1]))
    return out


def ref_log_ratio(f, dy, anchors="all", squared=True, eps=1e-6, de=None):
    """Explicit loops over anchors a and unordered pairs {i, j} of the others."""
    b, dim = f.shape
    if de is None:
        de = 0.0 if squared else 1e-4 / dim

    def dist(a, i):
        s = sum((f[a, k] - f[i, k]) ** 2 for k in range(dim)) + de
        return s if squared else math.sqrt(s)

    anchor_list = [0] if anchors == "first" else list(range(b))
    total = 0.0
    for a in anchor_list:
        acc, count = 0.0, 0
        for i in range(b):
            for j in range(i + 1, b):
                if i == a or j == a:
                    continue
                t = ((math.log(dist(a, i) + eps) - math.log(dist(a, j) + eps))
                     - (math.log(dy[a, i] + eps) - math.log(dy[a, j] + eps)))
                acc += t * t
                count += 1
        total += acc / count if count else 0.0
    return total / len(anchor_list)


def authors_log_ratio(f, gt_dist):
    """The authors' LogRatioLoss.forward transcribed to numpy (float64).

    input = f (row 0 the anchor), gt_dist = label distances of rows 1..m to
    the anchor; L2dist adds 1e-4 / x1.size(0) (x1 is the 1-D anchor, so
    1e-4 / dim) before the square root; uniform weights over i < j.
    """
    m = f.shape[0] - 1
    a, p = f[0], f[1:]
    idxs = np.arange(1, m + 1)
    indc = np.tile(idxs, (m, 1)).T < np.tile(idxs, (m, 1))
    epsilon = 1e-6
    dist = np.power((np.abs(a - p) ** 2).sum(axis=1) + 1e-4 / a.shape[0], 0.5)
    log_dist = np.log(dist + epsilon)
    log_gt = np.log(gt_dist + epsilon)
    diff_log_dist = np.tile(log_dist, (m, 1)).T - np.tile(log_dist, (m, 1))
    diff_log_gt = np.tile(log_gt, (m, 1)).T - np.tile(log_gt, (m, 1))
    wgt = indc.astype(np.float64)
    wgt = wgt / wgt.sum()
    return float(((diff_log_dist - diff_log_gt) ** 2 * wgt).sum())


def tf_value_and_grad(f, dy, **kw):
    ft = tf.constant(f)
    with tf.GradientTape() as tape:
        tape.watch(ft)
        loss = log_ratio_loss(ft, tf.constant(dy), **kw)
    return float(loss), tape.gradient(loss, ft).numpy()


MODES = [(a, s) for a in ("all", "first") for s in (True, False)]


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("anchors,squared", MODES)
def test_value_matches_brute_force_float64(rng, anchors, squared):
    f = rng.normal(size=(7, 3))
    y = rng.normal(size=(7, 2))
    dy = ref_sq_l2(y)
    ref = ref_log_ratio(f, dy, anchors, squared)
    got, _ = tf_value_and_grad(f, dy, anchors=anchors, squared=squared)
    np.testing.assert_allclose(got, ref, rtol=1e-10)


@pytest.mark.parametrize("anchors,squared", MODES)
def test_keras_loss_float32_from_label_vectors(rng, anchors, squared):
    f = rng.normal(size=(9, 4))
    y = rng.uniform(size=(9, 3))
    ref = ref_log_ratio(f, ref_sq_l2(y), anchors, squared)
    loss = kd.losses.LogRatioLoss(anchors=anchors, squared=squared)
    got = float(loss(y.astype("float32"), f.astype("float32")))
    np.testing.assert_allclose(got, ref, rtol=2e-4)


@pytest.mark.parametrize("anchors,squared", MODES)
def test_gradient_matches_finite_differences(rng, anchors, squared):
    f = rng.normal(size=(6, 3))
    dy = ref_sq_l2(rng.normal(size=(6, 2)))
    _, grad = tf_value_and_grad(f, dy, anchors=anchors, squared=squared)
    num = finite_difference_grad(lambda x: ref_log_ratio(x, dy, anchors, squared), f)
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-7)
    assert np.abs(grad).max() > 1e-3     # not vacuous


def test_first_nonsquared_is_the_authors_code(rng):
    f = rng.normal(size=(12, 16))
    gt = rng.uniform(0.1, 3.0, size=11)
    ref = authors_log_ratio(f, gt)
    # y_true as the authors' row of label distances (entry 0: anchor to itself).
    row = np.concatenate([[0.0], gt])
    got = kd.losses.LogRatioLoss(anchors="first", squared=False,
                                 label_distance="precomputed")
    value64 = log_ratio_loss(tf.constant(f), tf.constant(row[None, :]),
                             anchors="first", squared=False)
    np.testing.assert_allclose(float(value64), ref, rtol=1e-12)
    np.testing.assert_allclose(float(got(row.astype("float32"), f.astype("float32"))),
                               ref, rtol=1e-4)
    # And the reference of the formula agrees with the transcription.
    dy = np.zeros((12, 12))
    dy[0, 1:] = dy[1:, 0] = gt
    np.testing.assert_allclose(ref_log_ratio(f, dy, "first", False), ref, rtol=1e-12)


def test_precomputed_matrix_equals_label_vectors(rng):
    f = rng.normal(size=(8, 5)).astype("float32")
    y = rng.normal(size=(8, 3)).astype("float32")
    dy = ref_sq_l2(y.astype(np.float64)).astype("float32")
    for anchors in ("all", "first"):
        a = kd.losses.LogRatioLoss(anchors=anchors)(y, f)
        b = kd.losses.LogRatioLoss(anchors=anchors, label_distance="precomputed")(dy, f)
        np.testing.assert_allclose(float(a), float(b), rtol=1e-5)


def test_callable_and_named_label_distances(rng):
    f = rng.normal(size=(6, 3)).astype("float32")
    maps = rng.integers(0, 3, size=(6, 4, 4))
    by_name = kd.losses.LogRatioLoss(label_distance="one_minus_miou",
                                     label_distance_kwargs={"num_classes": 3})
    by_callable = kd.losses.LogRatioLoss(
        label_distance=lambda a, b=None: kd.label_distances.one_minus_miou(a, b, num_classes=3))
    dy = kd.label_distances.one_minus_miou(maps, num_classes=3).numpy()
    ref = ref_log_ratio(f.astype(np.float64), dy.astype(np.float64))
    np.testing.assert_allclose(float(by_name(maps, f)), ref, rtol=1e-4)
    np.testing.assert_allclose(float(by_callable(maps, f)), ref, rtol=1e-4)


def test_float32_stable_far_from_origin(rng):
    # Centring before the |x|^2 + |y|^2 - 2xy form keeps float32 accurate.
    f = rng.normal(size=(10, 8)) + 300.0
    y = rng.normal(size=(10, 2)) + 500.0
    ref = ref_log_ratio(f, ref_sq_l2(y))
    got = kd.losses.LogRatioLoss()(y.astype("float32"), f.astype("float32"))
    np.testing.assert_allclose(float(got), ref, rtol=1e-3)


# ---------------------------------------------------------------- O(B^2)

def test_graph_has_no_cubic_tensor():
    b, dim = 64, 8

    @tf.function(input_signature=[tf.TensorSpec([b, 2]), tf.TensorSpec([b, dim])])
    def step(y, f):
        with tf.GradientTape() as tape:
            tape.watch(f)
            loss = kd.losses.LogRatioLoss(anchors="all")(y, f)
        return loss, tape.gradient(loss, f)

    graph = step.get_concrete_function().graph
    biggest = 0
    for op in graph.get_operations():
        for t in op.outputs:
            if t.shape.rank is not None and t.shape.is_fully_defined():
                biggest = max(biggest, t.shape.num_elements())
    assert biggest > 0
    assert biggest <= b * b, f"largest tensor has {biggest} elements (B^3 = {b ** 3})"


# ---------------------------------------------------------------- degenerate input

@pytest.mark.parametrize("anchors,squared", MODES)
def test_coincident_embeddings_finite_gradient(rng, anchors, squared):
    f = rng.normal(size=(6, 3)).astype("float32")
    f[1] = f[0]
    f[3] = f[2]
    y = rng.normal(size=(6, 2)).astype("float32")
    for de in ("auto", 0.0):
        ft = tf.constant(f)
        with tf.GradientTape() as tape:
            tape.watch(ft)
            loss = kd.losses.LogRatioLoss(anchors=anchors, squared=squared,
                                          distance_epsilon=de)(y, ft)
        g = tape.gradient(loss, ft).numpy()
        assert np.isfinite(float(loss))
        assert np.all(np.isfinite(g))


@pytest.mark.parametrize("b", [0, 1, 2])
@pytest.mark.parametrize("anchors", ["all", "first"])
def test_small_batch_is_zero_with_zero_gradient(b, anchors):
    f = tf.constant(np.arange(b * 3, dtype="float32").reshape(b, 3))
    y = tf.constant(np.arange(b * 2, dtype="float32").reshape(b, 2))
    with tf.GradientTape() as tape:
        tape.watch(f)
        loss = kd.losses.LogRatioLoss(anchors=anchors)(y, f)
    assert float(loss) == 0.0
    g = tape.gradient(loss, f)
    assert g is None or np.all(g.numpy() == 0)


def test_three_samples_is_exact(rng):
    f = rng.normal(size=(3, 2))
    dy = ref_sq_l2(rng.normal(size=(3, 2)))
    got, _ = tf_value_and_grad(f, dy)
    np.testing.assert_allclose(got, ref_log_ratio(f, dy), rtol=1e-10)
    assert got > 0


def test_nan_inputs_raise():
    f = np.ones((4, 2), "float32")
    f[0] = np.arange(2)
    y = np.arange(8, dtype="float32").reshape(4, 2)
    bad_f = f.copy()
    bad_f[1, 0] = np.nan
    with pytest.raises(ValueError, match="LogRatioLoss: y_pred contains NaN"):
        kd.losses.LogRatioLoss()(y, bad_f)
    bad_y = y.copy()
    bad_y[2, 1] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels"):
        kd.losses.LogRatioLoss()(bad_y, f)
    dy = np.abs(y[:, :1] - y[:, :1].T)
    dy[0, 1] = -1.0
    with pytest.raises(tf.errors.InvalidArgumentError, match=">= 0"):
        kd.losses.LogRatioLoss(label_distance="precomputed")(dy, f)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="anchors"):
        kd.losses.LogRatioLoss(anchors="some")
    with pytest.raises(ValueError, match="epsilon"):
        kd.losses.LogRatioLoss(epsilon=0.0)
    with pytest.raises(ValueError, match="Unknown label distance"):
        kd.losses.LogRatioLoss(label_distance="nope")
    f = np.zeros((4, 2), "float32")
    with pytest.raises(ValueError, match="square"):
        kd.losses.LogRatioLoss(label_distance="precomputed")(np.zeros((4, 3), "float32"), f)
    with pytest.raises(ValueError, match=r"\[batch, dim\]"):
        kd.losses.LogRatioLoss()(np.zeros((4, 2), "float32"), np.zeros((4,), "float32"))
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="batch size"):
        kd.losses.LogRatioLoss()(np.zeros((5, 2), "float32"), f)
    with pytest.raises(ValueError, match="sample_weight"):
        kd.losses.LogRatioLoss()(np.zeros((4, 2), "float32"), f, sample_weight=np.ones(4))


def test_config_round_trip(tmp_path):
    loss = kd.losses.LogRatioLoss(anchors="first", squared=False, epsilon=1e-5,
                                  label_distance="one_minus_miou",
                                  label_distance_kwargs={"num_classes": 4})
    clone = kd.losses.LogRatioLoss.from_config(loss.get_config())
    for key in ("anchors", "squared", "epsilon", "label_distance",
                "distance_epsilon", "label_distance_kwargs"):
        assert getattr(clone, key) == getattr(loss, key)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, kd.losses.LogRatioLoss)
    assert restored.label_distance_kwargs == {"num_classes": 4}
