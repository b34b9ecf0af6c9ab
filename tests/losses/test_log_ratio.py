"""LogRatioLoss vs a brute-force triplet enumeration (numpy float64 loops),
on every Keras backend (``pytest.mark.backends``)."""

import math

import keras
import numpy as np
import pytest

import keras_dml as kd
from backend_tools import BACKEND, compiled, largest_tensor, to_numpy
from continuous_tools import assert_close, eager_value_and_grad, value_and_grad64
from finite_difference import finite_difference_grad
from keras_dml.losses.log_ratio import log_ratio_loss

pytestmark = pytest.mark.backends


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
    """Value and gradient of log_ratio_loss in f (float64 where available)."""
    return value_and_grad64(lambda x, d: log_ratio_loss(x, d, **kw), f, dy)


MODES = [(a, s) for a in ("all", "first") for s in (True, False)]


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("anchors,squared", MODES)
def test_value_matches_brute_force_float64(rng, anchors, squared):
    f = rng.normal(size=(7, 3))
    y = rng.normal(size=(7, 2))
    dy = ref_sq_l2(y)
    ref = ref_log_ratio(f, dy, anchors, squared)
    got, _ = tf_value_and_grad(f, dy, anchors=anchors, squared=squared)
    assert_close(got, ref, rtol=1e-10)


@pytest.mark.parametrize("anchors,squared", MODES)
def test_keras_loss_float32_from_label_vectors(rng, anchors, squared):
    f = rng.normal(size=(9, 4))
    y = rng.uniform(size=(9, 3))
    ref = ref_log_ratio(f, ref_sq_l2(y), anchors, squared)
    loss = kd.losses.LogRatioLoss(anchors=anchors, squared=squared)
    got = float(loss(y.astype("float32"), f.astype("float32")))
    assert_close(got, ref, rtol=2e-4)


@pytest.mark.parametrize("anchors,squared", MODES)
def test_gradient_matches_finite_differences(rng, anchors, squared):
    f = rng.normal(size=(6, 3))
    dy = ref_sq_l2(rng.normal(size=(6, 2)))
    _, grad = tf_value_and_grad(f, dy, anchors=anchors, squared=squared)
    num = finite_difference_grad(lambda x: ref_log_ratio(x, dy, anchors, squared), f)
    assert_close(grad, num, rtol=1e-5, atol=1e-7)
    assert np.abs(grad).max() > 1e-3     # not vacuous


def test_first_nonsquared_is_the_authors_code(rng):
    f = rng.normal(size=(12, 16))
    gt = rng.uniform(0.1, 3.0, size=11)
    ref = authors_log_ratio(f, gt)
    # y_true as the authors' row of label distances (entry 0: anchor to itself).
    row = np.concatenate([[0.0], gt])
    got = kd.losses.LogRatioLoss(anchors="first", squared=False,
                                 label_distance="precomputed")
    value64, _ = tf_value_and_grad(f, row[None, :], anchors="first", squared=False)
    assert_close(value64, ref, rtol=1e-12)
    assert_close(float(got(row.astype("float32"), f.astype("float32"))),
                               ref, rtol=1e-4)
    # And the reference of the formula agrees with the transcription.
    dy = np.zeros((12, 12))
    dy[0, 1:] = dy[1:, 0] = gt
    assert_close(ref_log_ratio(f, dy, "first", False), ref, rtol=1e-12)


def test_precomputed_matrix_equals_label_vectors(rng):
    f = rng.normal(size=(8, 5)).astype("float32")
    y = rng.normal(size=(8, 3)).astype("float32")
    dy = ref_sq_l2(y.astype(np.float64)).astype("float32")
    for anchors in ("all", "first"):
        a = kd.losses.LogRatioLoss(anchors=anchors)(y, f)
        b = kd.losses.LogRatioLoss(anchors=anchors, label_distance="precomputed")(dy, f)
        assert_close(float(a), float(b), rtol=1e-5)


def test_callable_and_named_label_distances(rng):
    f = rng.normal(size=(6, 3)).astype("float32")
    maps = rng.integers(0, 3, size=(6, 4, 4))
    by_name = kd.losses.LogRatioLoss(label_distance="one_minus_miou",
                                     label_distance_kwargs={"num_classes": 3})
    by_callable = kd.losses.LogRatioLoss(
        label_distance=lambda a, b=None: kd.label_distances.one_minus_miou(a, b, num_classes=3))
    dy = to_numpy(kd.label_distances.one_minus_miou(maps, num_classes=3))
    ref = ref_log_ratio(f.astype(np.float64), dy.astype(np.float64))
    assert_close(float(by_name(maps, f)), ref, rtol=1e-4)
    assert_close(float(by_callable(maps, f)), ref, rtol=1e-4)


def test_float32_stable_far_from_origin(rng):
    # Centring before the |x|^2 + |y|^2 - 2xy form keeps float32 accurate.
    f = rng.normal(size=(10, 8)) + 300.0
    y = rng.normal(size=(10, 2)) + 500.0
    ref = ref_log_ratio(f, ref_sq_l2(y))
    got = kd.losses.LogRatioLoss()(y.astype("float32"), f.astype("float32"))
    assert_close(float(got), ref, rtol=1e-3)


# ---------------------------------------------------------------- O(B^2)

@pytest.mark.skipif(BACKEND == "torch", reason="PyTorch runs eagerly: no graph to read")
def test_graph_has_no_cubic_tensor():
    # The traced gradient step (TensorFlow graph / JAX jaxpr) holds no
    # tensor larger than B^2.
    b, dim = 64, 8
    rng = np.random.default_rng(0)
    y = rng.normal(size=(b, 2)).astype("float32")
    f = rng.normal(size=(b, dim)).astype("float32")
    biggest = largest_tensor(kd.losses.LogRatioLoss(anchors="all"), y, f)
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
        loss, g = eager_value_and_grad(
            kd.losses.LogRatioLoss(anchors=anchors, squared=squared, distance_epsilon=de),
            y, f)
        assert np.isfinite(float(loss))
        assert np.all(np.isfinite(g))


@pytest.mark.parametrize("b", [0, 1, 2])
@pytest.mark.parametrize("anchors", ["all", "first"])
def test_small_batch_is_zero_with_zero_gradient(b, anchors):
    f = np.arange(b * 3, dtype="float32").reshape(b, 3)
    y = np.arange(b * 2, dtype="float32").reshape(b, 2)
    loss, g = eager_value_and_grad(kd.losses.LogRatioLoss(anchors=anchors), y, f)
    assert float(loss) == 0.0
    assert g.shape == f.shape and np.all(g == 0)


def test_three_samples_is_exact(rng):
    f = rng.normal(size=(3, 2))
    dy = ref_sq_l2(rng.normal(size=(3, 2)))
    got, _ = tf_value_and_grad(f, dy)
    assert_close(got, ref_log_ratio(f, dy), rtol=1e-10)
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
    with pytest.raises(ValueError, match="labels"):
        kd.losses.LogRatioLoss()(bad_y, f)
    dy = np.abs(y[:, :1] - y[:, :1].T)
    dy[0, 1] = -1.0
    with pytest.raises(ValueError, match=">= 0"):
        kd.losses.LogRatioLoss(label_distance="precomputed")(dy, f)
    # Where nothing can raise (XLA, jax.jit) the loss is NaN, never 0.
    fn = compiled(lambda a, b: kd.losses.LogRatioLoss()(a, b))
    if fn is not None:
        assert np.isfinite(float(to_numpy(fn(y, f))))
        assert np.isnan(float(to_numpy(fn(bad_y, f))))
        fn = compiled(lambda a, b: kd.losses.LogRatioLoss(label_distance="precomputed")(a, b))
        assert np.isnan(float(to_numpy(fn(dy, f))))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="anchors"):
        kd.losses.LogRatioLoss(anchors="some")
    with pytest.raises(ValueError, match="epsilon"):
        kd.losses.LogRatioLoss(epsilon=0.0)
    with pytest.raises(ValueError, match="unknown label distance"):
        kd.losses.LogRatioLoss(label_distance="nope")
    f = np.zeros((4, 2), "float32")
    with pytest.raises(ValueError, match="square"):
        kd.losses.LogRatioLoss(label_distance="precomputed")(np.zeros((4, 3), "float32"), f)
    with pytest.raises(ValueError, match=r"\[batch, dim\]"):
        kd.losses.LogRatioLoss()(np.zeros((4, 2), "float32"), np.zeros((4,), "float32"))
    with pytest.raises(ValueError, match="batch size"):
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
