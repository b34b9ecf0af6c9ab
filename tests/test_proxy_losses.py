"""Proxy losses against slow numpy references written from the formulas."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dml as kd
from finite_difference import finite_difference_grad


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
    # Realistic spread: cosines of random unit vectors in a small dimension.
    emb = rng.normal(size=(batch, 6))
    prox = rng.normal(size=(columns, 6))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    prox /= np.linalg.norm(prox, axis=1, keepdims=True)
    return emb @ prox.T


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_value_and_gradient_match_reference(loss_name, case, seed):
    fn, ref, k = LOSSES[loss_name]
    labels = np.array(CASES[case])
    classes = 6
    cos = random_cosines(np.random.default_rng(seed), len(labels), classes * k)
    x = tf.constant(cos, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = fn(tf.constant(labels), x)
    grad = tape.gradient(value, x).numpy()
    expected = ref(labels, cos)
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-10, atol=1e-10)
    expected_grad = finite_difference_grad(lambda c: ref(labels, c), cos)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-6)


def test_proxy_anchor_through_proxies_layer_gradients():
    """Gradient w.r.t. embeddings and proxies, through the Proxies layer."""
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(6, 4))
    labels = np.array([0, 0, 1, 2, 2, 2])
    layer = kd.layers.Proxies(3, dtype="float64")
    layer.build((None, 4))
    proxies = layer.proxies.numpy().copy()

    def ref(e, p):
        en = e / np.linalg.norm(e, axis=1, keepdims=True)
        pn = p / np.linalg.norm(p, axis=1, keepdims=True)
        return ref_proxy_anchor(labels, en @ pn.T)

    x = tf.constant(emb)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = kd.losses.proxy_anchor_loss(tf.constant(labels), layer(x))
    g_emb, g_prox = tape.gradient(value, [x, layer.proxies])
    np.testing.assert_allclose(value.numpy(), ref(emb, proxies), rtol=1e-9)
    np.testing.assert_allclose(g_emb.numpy(), finite_difference_grad(lambda e: ref(e, proxies), emb),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g_prox.numpy(), finite_difference_grad(lambda p: ref(emb, p), proxies),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_proxy_anchor_low_precision_is_finite_and_accurate(dtype):
    # Cosines near 1 for negatives make exp(32 * 1.1) ~ 2e15: overflows float16
    # (max 65504) in the authors' plain-exp form.
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    cos = np.clip(rng.uniform(0.6, 1.0, size=(8, 100)), -1, 1)
    naive_neg = np.exp(32 * (cos + 0.1)).astype(dtype if dtype == "float16" else "float32")
    if dtype == "float16":
        assert not np.all(np.isfinite(naive_neg))     # the authors' form overflows
    expected = kd.losses.proxy_anchor_loss(tf.constant(labels), tf.constant(cos, tf.float32))
    low = kd.losses.proxy_anchor_loss(tf.constant(labels), tf.constant(cos, dtype))
    assert low.dtype == tf.as_dtype(dtype)
    low = float(tf.cast(low, tf.float32))
    assert np.isfinite(low)
    # Inputs rounded to the dtype move the loss by about alpha * eps * |value|.
    tol = {"float16": 2e-2, "bfloat16": 1e-1}[dtype]
    np.testing.assert_allclose(low, float(expected), rtol=tol)
    # The Keras Loss class computed in the low dtype is finite too.
    loss = kd.losses.ProxyAnchorLoss(dtype=dtype)
    val = float(tf.cast(loss(labels, tf.constant(cos, dtype)), tf.float32))
    np.testing.assert_allclose(val, float(expected), rtol=tol)


@pytest.mark.parametrize("loss", [kd.losses.ProxyAnchorLoss(),
                                  kd.losses.ProxyNCALoss(),
                                  kd.losses.SoftTripleLoss(centers_per_class=2)])
def test_labels_out_of_range_raise(loss):
    cos = tf.zeros([4, 6])
    classes = 6 // getattr(loss, "centers_per_class", 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
        loss(np.array([0, 1, 2, classes]), cos)
    with pytest.raises(tf.errors.InvalidArgumentError, match=">= 0"):
        loss(np.array([0, -1, 1, 1]), cos)


def test_labels_out_of_range_raise_inside_tf_function():
    loss = kd.losses.ProxyAnchorLoss()
    fn = tf.function(lambda y, c: loss(y, c))
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
        fn(tf.constant([0, 9]), tf.zeros([2, 4]))


def test_bad_widths_and_shapes_raise():
    with pytest.raises(ValueError, match="multiple of centers_per_class"):
        kd.losses.SoftTripleLoss(centers_per_class=4)(np.array([0, 1]), tf.zeros([2, 10]))
    with pytest.raises(ValueError, match="num_classes"):
        kd.losses.ProxyAnchorLoss(num_classes=5)(np.array([0, 1]), tf.zeros([2, 4]))
    with pytest.raises(ValueError, match="shape"):
        kd.losses.ProxyAnchorLoss()(np.zeros([2, 2, 2]), tf.zeros([2, 4]))
    with pytest.raises(ValueError, match="batch sizes"):
        kd.losses.ProxyAnchorLoss()(np.array([0, 1, 2]), tf.zeros([2, 4]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="whole-number"):
        kd.losses.ProxyAnchorLoss()(np.array([0.5, 1.0]), tf.zeros([2, 4]))
    with pytest.raises(ValueError, match="sample_weight"):
        kd.losses.ProxyAnchorLoss()(np.array([0, 1]), tf.zeros([2, 4]),
                                    sample_weight=np.ones(2))


@pytest.mark.parametrize("fn", [kd.losses.proxy_anchor_loss, kd.losses.proxy_nca_loss])
def test_empty_batch_is_zero_and_has_a_gradient_of_its_shape(fn):
    x = tf.zeros([0, 5])
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = fn(tf.zeros([0], tf.int32), x)
    assert float(value) == 0.0
    assert tape.gradient(value, x).shape == (0, 5)


def test_proxies_layer_shapes_init_and_config():
    layer = kd.layers.Proxies(50, proxies_per_class=3)
    out = layer(tf.random.normal([4, 16]))
    assert out.shape == (4, 150)
    assert layer.proxies.shape == (150, 16)
    # authors' kaiming_normal_(mode="fan_out") on [rows, D]: std sqrt(2 / rows)
    np.testing.assert_allclose(np.std(layer.proxies.numpy()), math.sqrt(2 / 150), rtol=0.05)
    assert np.all(np.abs(out.numpy()) <= 1 + 1e-6)
    clone = kd.layers.Proxies.from_config(layer.get_config())
    assert clone.num_classes == 50 and clone.proxies_per_class == 3
    with pytest.raises(ValueError):
        kd.layers.Proxies(0)


def test_embedding_head_gap_plus_gmp():
    head = kd.layers.EmbeddingHead(8)
    fmap = tf.random.normal([2, 3, 3, 5])
    out = head(fmap).numpy()
    pooled = fmap.numpy().mean(axis=(1, 2)) + fmap.numpy().max(axis=(1, 2))
    w, b = head.dense.kernel.numpy(), head.dense.bias.numpy()
    expected = pooled @ w + b
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert not np.any(b)
    with pytest.raises(ValueError, match="feature map"):
        head(tf.zeros([2, 5]))
