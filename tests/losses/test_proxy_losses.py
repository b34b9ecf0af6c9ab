"""Proxy losses against slow numpy references written from the formulas.

Backend-neutral: values and gradients come from the backend's own autodiff
(tests/backend_tools.py), in float64 and float32 (loss_cases.DTYPES).
"""

import math

import numpy as np
import pytest
from keras import ops as kops

import keras_dml as kd
from backend_tools import BACKEND, compiled, float64, graph, tensor, to_numpy, value_and_grads
from finite_difference import finite_difference_grad
from loss_cases import DTYPES, check_value_and_grad

pytestmark = pytest.mark.backends


@pytest.fixture(autouse=True)
def _float64():
    with float64():
        yield


# ---------------------------------------------------------------- references
def ref_proxy_anchor(labels, cos, alpha=32.0, margin=0.1):
    batch, classes = cos.shape
    pos_sum, neg_sum, with_pos = 0.0, 0.0, 0
    for p in range(classes):
        pos = [math.exp(-alpha * (cos[i, p] - margin))
               for i in range(batch) if labels[i] == p]
        neg = [math.exp(alpha * (cos[j, p] + margin))
               for j in range(batch) if labels[j] != p]
        if pos:
            with_pos += 1
            pos_sum += math.log(1.0 + sum(pos))
        neg_sum += math.log(1.0 + sum(neg))
    return (pos_sum / with_pos if with_pos else 0.0) + neg_sum / classes


def ref_proxy_nca(labels, cos, scale=32.0):
    total = 0.0
    for i in range(cos.shape[0]):
        # squared L2 between unit vectors = 2 - 2 cos
        logits = [-scale * (2.0 - 2.0 * c) for c in cos[i]]
        m = max(logits)
        log_z = m + math.log(sum(math.exp(v - m) for v in logits))
        total += log_z - logits[labels[i]]
    return total / cos.shape[0]


def ref_soft_triple(labels, cos, k=10, la=20.0, gamma=0.1, margin=0.01):
    batch = cos.shape[0]
    classes = cos.shape[1] // k
    total = 0.0
    for i in range(batch):
        logits = []
        for c in range(classes):
            s = [cos[i, c * k + j] for j in range(k)]
            w = [math.exp(v / gamma) for v in s]
            relaxed = sum(wj * sj for wj, sj in zip(w, s)) / sum(w)
            logits.append(la * (relaxed - (margin if c == labels[i] else 0.0)))
        m = max(logits)
        total += m + math.log(sum(math.exp(v - m) for v in logits)) - logits[labels[i]]
    return total / batch


CASES = {
    # name: labels (class count inferred by the caller)
    "several_per_class": [0, 0, 1, 1, 2, 2, 3, 3],
    "singleton_class": [0, 0, 0, 1, 2, 2, 3, 4],
    "one_class": [2, 2, 2, 2],
    "unused_proxies": [0, 0, 1, 1],
}

LOSSES = {
    "proxy_anchor": (kd.losses.proxy_anchor_loss, ref_proxy_anchor, 1),
    "proxy_nca": (kd.losses.proxy_nca_loss, ref_proxy_nca, 1),
    "soft_triple": (lambda y, c: kd.losses.soft_triple_loss(y, c, 3),
                    lambda y, c: ref_soft_triple(y, c, 3), 3),
}


def random_cosines(rng, batch, columns):
    # Realistic spread: cosines of random unit vectors in a small dimension,
    # rounded to float32 so that both dtypes see the same input.
    emb = rng.normal(size=(batch, 6))
    prox = rng.normal(size=(columns, 6))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    prox /= np.linalg.norm(prox, axis=1, keepdims=True)
    return (emb @ prox.T).astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_value_and_gradient_match_reference(loss_name, case, seed):
    fn, ref, k = LOSSES[loss_name]
    labels = np.array(CASES[case], np.int32)
    classes = 6
    cos = random_cosines(np.random.default_rng(seed), len(labels), classes * k)
    expected = ref(labels, cos)
    expected_grad = finite_difference_grad(lambda c: ref(labels, c), cos)
    for dtype in DTYPES:
        check_value_and_grad(lambda c: fn(tensor(labels), c), [cos], expected,
                             [expected_grad], dtype, f"{loss_name} {case}")


def test_proxy_anchor_through_proxies_layer_gradients():
    """Gradient w.r.t. embeddings and proxies, through the Proxies layer."""
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(6, 4))
    labels = np.array([0, 0, 1, 2, 2, 2], np.int32)
    layer = kd.layers.Proxies(3, dtype="float64")
    layer.build((None, 4))
    proxies = to_numpy(layer.proxies).copy()
    assert proxies.dtype == np.float64

    def ref(e, p):
        en = e / np.linalg.norm(e, axis=1, keepdims=True)
        pn = p / np.linalg.norm(p, axis=1, keepdims=True)
        return ref_proxy_anchor(labels, en @ pn.T)

    def loss(e, p):
        # The layer's own call, with its weight replaced by p (differentiable).
        cosines, _ = layer.stateless_call([p], [], e)
        return kd.losses.proxy_anchor_loss(tensor(labels), cosines)

    value, (g_emb, g_prox) = value_and_grads(loss, emb, proxies)
    tol = 1e-9
    np.testing.assert_allclose(value, ref(emb, proxies), rtol=tol)
    g_tol = dict(rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g_emb, finite_difference_grad(lambda e: ref(e, proxies), emb),
                               **g_tol)
    np.testing.assert_allclose(g_prox, finite_difference_grad(lambda p: ref(emb, p), proxies),
                               **g_tol)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_proxy_anchor_low_precision_is_finite_and_accurate(dtype):
    # Cosines near 1 for negatives make exp(32 * 1.1) ~ 2e15: overflows float16
    # (max 65504) in the authors' plain-exp form.
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3], np.int32)
    cos = np.clip(rng.uniform(0.6, 1.0, size=(8, 100)), -1, 1)
    naive_neg = np.exp(32 * (cos + 0.1)).astype(dtype if dtype == "float16" else "float32")
    if dtype == "float16":
        assert not np.all(np.isfinite(naive_neg))     # the authors' form overflows
    expected = float(ref_proxy_anchor(labels, cos))

    def as_float(x):
        return float(to_numpy(kops.cast(x, "float32")))

    low = kd.losses.proxy_anchor_loss(tensor(labels), kops.cast(tensor(cos), dtype))
    assert kd.ops.dtype_of(low) == dtype
    low = as_float(low)
    assert np.isfinite(low)
    # Inputs rounded to the dtype move the loss by about alpha * eps * |value|.
    tol = {"float16": 2e-2, "bfloat16": 1e-1}[dtype]
    np.testing.assert_allclose(low, expected, rtol=tol)
    # The Keras Loss class computed in the low dtype is finite too.
    loss = kd.losses.ProxyAnchorLoss(dtype=dtype)
    val = as_float(loss(labels, kops.cast(tensor(cos), dtype)))
    np.testing.assert_allclose(val, expected, rtol=tol)


PROXY_LOSSES = [kd.losses.ProxyAnchorLoss(), kd.losses.ProxyNCALoss(),
                kd.losses.SoftTripleLoss(centers_per_class=2)]


def _classes(loss):
    return 6 // getattr(loss, "centers_per_class", 1)


@pytest.mark.parametrize("loss", PROXY_LOSSES, ids=lambda l: type(l).__name__)
def test_labels_out_of_range_raise(loss):
    cos = np.zeros([4, 6], np.float32)
    with pytest.raises(ValueError, match="num_classes"):
        loss(np.array([0, 1, 2, _classes(loss)]), cos)
    with pytest.raises(ValueError, match=">= 0"):
        loss(np.array([0, -1, 1, 1]), cos)
    with pytest.raises(ValueError, match="whole-number"):
        loss(np.array([0.5, 1.0, 1.0, 1.0], np.float32), cos)


@pytest.mark.skipif(BACKEND == "torch",
                    reason="PyTorch runs eagerly: the eager ValueError applies "
                           "(test_labels_out_of_range_raise)")
@pytest.mark.parametrize("loss", PROXY_LOSSES, ids=lambda l: type(l).__name__)
def test_bad_labels_give_nan_where_nothing_can_raise(loss):
    """XLA / jax.jit drop assertions: labels out of range or not whole give a
    NaN loss, never a finite one trained on."""
    fn = compiled(lambda y, c: loss(y, c))
    cos = np.random.default_rng(0).uniform(-1, 1, (4, 6)).astype(np.float32)
    ok = float(to_numpy(fn(tensor(np.array([0, 1, 2, 0], np.float32)), tensor(cos))))
    assert np.isfinite(ok)
    for labels in ([0, 1, 2, _classes(loss)], [0, -1, 1, 1], [0.5, 1.0, 1.0, 1.0]):
        out = float(to_numpy(fn(tensor(np.array(labels, np.float32)), tensor(cos))))
        assert np.isnan(out), (labels, out)


@pytest.mark.skipif(BACKEND != "tensorflow",
                    reason="tf.function graph assertions exist only under TensorFlow")
def test_labels_out_of_range_raise_inside_tf_function():
    import tensorflow as tf
    loss = kd.losses.ProxyAnchorLoss()
    fn = graph(lambda y, c: loss(y, c))
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
        fn(tf.constant([0, 9]), tf.zeros([2, 4]))


def test_bad_widths_and_shapes_raise():
    z = np.zeros([2, 4], np.float32)
    with pytest.raises(ValueError, match="multiple of centers_per_class"):
        kd.losses.SoftTripleLoss(centers_per_class=4)(np.array([0, 1]),
                                                      np.zeros([2, 10], np.float32))
    with pytest.raises(ValueError, match="num_classes"):
        kd.losses.ProxyAnchorLoss(num_classes=5)(np.array([0, 1]), z)
    with pytest.raises(ValueError, match="shape"):
        kd.losses.ProxyAnchorLoss()(np.zeros([2, 2, 2]), z)
    with pytest.raises(ValueError, match="batch sizes"):
        kd.losses.ProxyAnchorLoss()(np.array([0, 1, 2]), z)
    with pytest.raises(ValueError, match="whole-number"):
        kd.losses.ProxyAnchorLoss()(np.array([0.5, 1.0]), z)
    with pytest.raises(ValueError, match="sample_weight"):
        kd.losses.ProxyAnchorLoss()(np.array([0, 1]), z, sample_weight=np.ones(2))


@pytest.mark.parametrize("fn", [kd.losses.proxy_anchor_loss, kd.losses.proxy_nca_loss,
                                lambda y, c: kd.losses.soft_triple_loss(y, c, 5)],
                         ids=["proxy_anchor", "proxy_nca", "soft_triple"])
def test_empty_batch_is_zero_and_has_a_gradient_of_its_shape(fn):
    value, (g,) = value_and_grads(lambda x: fn(tensor(np.zeros([0], np.int32)), x),
                                  np.zeros([0, 5], np.float32))
    assert float(value) == 0.0
    assert g.shape == (0, 5)


def test_proxies_layer_shapes_init_and_config():
    layer = kd.layers.Proxies(50, proxies_per_class=3)
    x = np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
    out = to_numpy(layer(x))
    assert out.shape == (4, 150)
    assert tuple(layer.proxies.shape) == (150, 16)
    # authors' kaiming_normal_(mode="fan_out") on [rows, D]: std sqrt(2 / rows)
    np.testing.assert_allclose(np.std(to_numpy(layer.proxies)), math.sqrt(2 / 150),
                               rtol=0.05)
    assert np.all(np.abs(out) <= 1 + 1e-6)
    clone = kd.layers.Proxies.from_config(layer.get_config())
    assert clone.num_classes == 50 and clone.proxies_per_class == 3
    with pytest.raises(ValueError):
        kd.layers.Proxies(0)


def test_embedding_head_gap_plus_gmp():
    head = kd.layers.EmbeddingHead(8)
    fmap = np.random.default_rng(0).normal(size=(2, 3, 3, 5)).astype(np.float32)
    out = to_numpy(head(fmap))
    pooled = fmap.mean(axis=(1, 2)) + fmap.max(axis=(1, 2))
    w, b = to_numpy(head.dense.kernel), to_numpy(head.dense.bias)
    expected = pooled @ w + b
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert not np.any(b)
    with pytest.raises(ValueError, match="feature map"):
        head(np.zeros([2, 5], np.float32))
