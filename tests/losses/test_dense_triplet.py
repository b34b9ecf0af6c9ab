"""DenseTripletLoss and BinaryTripletLoss vs numpy loop references, on every
Keras backend (``pytest.mark.backends``)."""

import math

import keras
import numpy as np
import pytest
from keras import ops

import keras_dml as kd
from backend_tools import BACKEND, compiled, graph, tensor, to_numpy, value_and_grads
from continuous_tools import (
    assert_close,
    compiled_value_and_grad,
    eager_value_and_grad,
    value_and_grad64,
)
from finite_difference import finite_difference_grad
from keras_dml.losses.binary_triplet import binary_triplet_loss
from keras_dml.losses.dense_triplet import dense_triplet_loss
from keras_dml.losses.triplet_hinge import chunked_triplet_hinge

pytestmark = pytest.mark.backends


# ---------------------------------------------------------------- references

def ref_sq_l2(y):
    n = len(y)
    return np.array([[sum((y[i, k] - y[j, k]) ** 2 for k in range(y.shape[1]))
                      for j in range(n)] for i in range(n)])


def ref_dist(f, a, i, squared, normalize):
    fa, fi = f[a], f[i]
    if normalize:
        fa = fa / math.sqrt(sum(v * v for v in fa))
        fi = fi / math.sqrt(sum(v * v for v in fi))
    s = sum((fa[k] - fi[k]) ** 2 for k in range(len(fa)))
    return s if squared else math.sqrt(s)


def ref_dense(f, dy, margin=0.03, squared=True, normalize=True, anchors="all",
              strict=True):
    b = len(f)
    total, count = 0.0, 0
    for a in ([0] if anchors == "first" else range(b)):
        for i in range(b):
            for j in range(b):
                if i == a or j == a or i == j:
                    continue
                if not (dy[a, i] < dy[a, j] if strict else dy[a, i] <= dy[a, j]):
                    continue
                h = (ref_dist(f, a, i, squared, normalize)
                     - ref_dist(f, a, j, squared, normalize) + margin)
                total += max(h, 0.0)
                count += 1
    return total / count if count else 0.0


def ref_binary_masks(dy, positives, threshold, a):
    b = dy.shape[1]
    others = [i for i in range(b) if i != a]
    if threshold is None:
        ranked = sorted(others, key=lambda i: (dy[a, i], i))
        pos = set(ranked[:positives])
    else:
        pos = {i for i in others if dy[a, i] <= threshold}
    neg = set(others) - pos
    return pos, neg


def ref_binary(f, dy, positives=5, margin=0.2, threshold=None, squared=True,
               normalize=True, anchors="all"):
    b = len(f)
    total, count = 0.0, 0
    for a in ([0] if anchors == "first" else range(b)):
        pos, neg = ref_binary_masks(dy, positives, threshold, a)
        for p in sorted(pos):
            for n in sorted(neg):
                h = (ref_dist(f, a, p, squared, normalize)
                     - ref_dist(f, a, n, squared, normalize) + margin)
                total += max(h, 0.0)
                count += 1
    return total / count if count else 0.0


def tf_value_and_grad(fn, f, dy, **kw):
    """Value and gradient in f of fn(f, dy) by the backend's autodiff, float64."""
    return value_and_grad64(lambda x, d: fn(x, d, **kw), f, dy)


DENSE_CASES = [
    dict(),
    dict(squared=False),
    dict(normalize=False, margin=0.5),
    dict(anchors="first"),
    dict(anchors="first", squared=False, normalize=False, margin=1.0),
]


# ---------------------------------------------------------------- dense

@pytest.mark.parametrize("kw", DENSE_CASES)
@pytest.mark.parametrize("block_size", [None, 1, 3])
def test_dense_value_and_gradient(rng, kw, block_size):
    f = rng.normal(size=(7, 3))
    dy = ref_sq_l2(rng.normal(size=(7, 2)))
    ref = ref_dense(f, dy, **kw)
    got, grad = tf_value_and_grad(dense_triplet_loss, f, dy, block_size=block_size, **kw)
    assert_close(got, ref, rtol=1e-10)
    assert ref > 0
    num = finite_difference_grad(lambda x: ref_dense(x, dy, **kw), f)
    assert_close(grad, num, rtol=1e-5, atol=1e-8)
    assert np.abs(grad).max() > 1e-4


def test_dense_keras_loss_from_labels(rng):
    f = rng.normal(size=(10, 4))
    y = rng.normal(size=(10, 3))
    ref = ref_dense(f, ref_sq_l2(y))
    got = kd.losses.DenseTripletLoss()(y.astype("float32"), f.astype("float32"))
    assert_close(float(got), ref, rtol=1e-4)


def test_dense_ties_give_no_triplet():
    f = np.random.default_rng(3).normal(size=(5, 2))
    dy = np.array([[0, 1, 1, 2, 2],
                   [1, 0, 1, 1, 3],
                   [1, 1, 0, 2, 2],
                   [2, 1, 2, 0, 1],
                   [2, 3, 2, 1, 0]], np.float64)
    ref = ref_dense(f, dy)
    got, _ = tf_value_and_grad(dense_triplet_loss, f, dy)
    assert_close(got, ref, rtol=1e-10)
    # Without ties each unordered pair {i, j} of an anchor's others gives one
    # triplet (5 anchors x 6 pairs); the tied pairs give none here.
    counts = sum(1 for a in range(5) for i in range(5) for j in range(5)
                 if i != a and j != a and dy[a, i] < dy[a, j])
    assert counts == 30 - 10
    # Counting tied pairs as triplets (both ways) would give another value.
    assert abs(ref_dense(f, dy, strict=False) - ref) > 1e-6


def authors_dense_triplet(f, margin=0.03):
    """The authors' Dense_TripletLoss.forward in numpy: anchor row 0, pairs
    i < j by batch position, Squared_L2dist (+1e-4/dim), clamp(min=1e-12),
    uniform weights."""
    m = f.shape[0] - 1
    a, p = f[0], f[1:]
    idxs = np.arange(1, m + 1)
    indc = np.tile(idxs, (m, 1)).T < np.tile(idxs, (m, 1))
    dist = (np.abs(a - p) ** 2).sum(axis=1) + 1e-4 / a.shape[0]
    wgt = indc.astype(np.float64)
    wgt = wgt / wgt.sum()
    loss = np.tile(dist, (m, 1)).T - np.tile(dist, (m, 1)) + margin
    loss = np.maximum(loss, 1e-12)
    return float((loss * wgt).sum())


def test_dense_first_is_the_authors_code_on_a_sorted_batch(rng):
    f = rng.normal(size=(12, 8))
    f /= np.linalg.norm(f, axis=1, keepdims=True)        # their is_norm model
    gt = np.sort(rng.uniform(0.1, 5.0, size=11))          # batch sorted by D_y
    row = np.concatenate([[0.0], gt])
    ref = authors_dense_triplet(f)
    got, _ = tf_value_and_grad(dense_triplet_loss, f, row[None, :], anchors="first")
    # Their clamp adds at most 1e-12 per inactive triplet.
    assert_close(got, ref, rtol=0, atol=1e-11)
    assert ref > 1e-3


def test_chunked_hinge_visits_bounded_blocks(rng):
    b, block = 23, 4
    d = rng.uniform(size=(b, b))
    shapes = []

    def valid_fn(anchors, rows):
        # Shapes are static on every backend (traced once under jax.jit /
        # lax.map, once per block elsewhere).
        shapes.append((tuple(anchors.shape), tuple(rows[0].shape)))
        # Only even anchors: checks that each block gets its own anchor ids.
        even = ops.equal(anchors % 2, 0)
        return ops.broadcast_to(even[:, None, None], (block, b, b))

    loss, g = value_and_grad64(
        lambda x: chunked_triplet_hinge(x, [x], valid_fn, 0.1, block_size=block), d)
    # Six blocks of 4 anchors; the last is padded (anchor 23 does not exist
    # and contributes no triplet).
    assert shapes and set(shapes) == {((block,), (block, b))}
    # Reference over (a, i, j) with a even: mean of relu(d[a,i] - d[a,j] + 0.1).
    h = d[:, :, None] - d[:, None, :] + 0.1
    even = (np.arange(b) % 2 == 0)[:, None, None]
    count = even.sum() * b * b
    assert_close(loss, (np.maximum(h, 0) * even).sum() / count, rtol=1e-10)
    act = (h > 0) & even
    assert_close(g, (act.sum(2) - act.sum(1)) / count, rtol=1e-10)


def test_blockwise_gradient_equals_plain_autodiff(rng):
    # The custom blockwise gradient against autodiff of the same hinge
    # written as one [A, B, B] tensor, on this backend.
    f = rng.normal(size=(9, 3))
    dy = rng.uniform(size=(9, 9))
    dy = dy + dy.T

    def plain(x, dyt):
        dist = kd.losses.dense_triplet.triplet_distances(x)
        h = dist[:, :, None] - dist[:, None, :] + 0.03
        closer = dyt[:, :, None] < dyt[:, None, :]
        not_a = ~np.eye(9, dtype=bool)
        valid = ops.logical_and(closer, tensor(not_a[:, :, None] & not_a[:, None, :]))
        count = ops.sum(ops.cast(valid, h.dtype))
        return ops.sum(ops.where(valid, ops.relu(h), ops.zeros_like(h))) / count

    ref_value, ref_grad = value_and_grad64(plain, f, dy)
    for block in (1, 4, None):
        value, grad = tf_value_and_grad(dense_triplet_loss, f, dy, block_size=block)
        assert_close(value, ref_value, rtol=1e-12)
        assert_close(grad, ref_grad, rtol=1e-10, atol=1e-14)
    assert np.abs(ref_grad).max() > 1e-3
    # And in float32 (the 1e-5 cross-backend tolerance).
    value32, (grad32,) = value_and_grads(
        lambda x: dense_triplet_loss(x, tensor(dy.astype("float32")), block_size=2),
        f.astype("float32"))
    assert_close(value32, ref_value, rtol=1e-5)
    assert_close(grad32, ref_grad, rtol=1e-4, atol=1e-6)


def test_default_blocks_at_batch_150(rng):
    from keras_dml.losses import triplet_hinge
    b = 150
    per_block = triplet_hinge.DEFAULT_TRIPLET_BUDGET // (b * b)
    assert 1 <= per_block < b                     # blocked, at most budget floats
    f = rng.normal(size=(b, 16)).astype("float32")
    y = rng.normal(size=(b, 4)).astype("float32")
    default = kd.losses.DenseTripletLoss()(y, f)
    whole = kd.losses.DenseTripletLoss(block_size=b)(y, f)
    small = kd.losses.DenseTripletLoss(block_size=7)(y, f)
    assert_close(float(default), float(whole), rtol=1e-5)
    assert_close(float(small), float(whole), rtol=1e-5)


@pytest.mark.skipif(BACKEND != "tensorflow",
                    reason="tf.function graphs with an unknown batch size are "
                           "TensorFlow's; test_xla_matches_eager covers XLA and jax.jit")
def test_dense_in_tf_function_matches_eager(rng):
    import tensorflow as tf
    f = rng.normal(size=(9, 3)).astype("float32")
    y = rng.normal(size=(9, 2)).astype("float32")
    loss = kd.losses.DenseTripletLoss(block_size=2)

    def step(y, f):
        with tf.GradientTape() as tape:
            tape.watch(f)
            value = loss(y, f)
        return value, tape.gradient(value, f)

    eager = step(tf.constant(y), tf.constant(f))
    in_graph = graph(step)(tf.constant(y), tf.constant(f))
    assert_close(eager[0].numpy(), in_graph[0].numpy(), rtol=1e-6)
    assert_close(eager[1].numpy(), in_graph[1].numpy(), rtol=1e-5, atol=1e-7)
    # Unknown batch size (the last partial batch of model.fit).
    spec = [tf.TensorSpec([None, 2]), tf.TensorSpec([None, 3])]
    dyn = tf.function(step, input_signature=spec)(tf.constant(y), tf.constant(f))
    assert_close(eager[1].numpy(), dyn[1].numpy(), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- binary

BINARY_CASES = [
    dict(positives=2),
    dict(positives=1, margin=0.5, squared=False),
    dict(threshold=1.0),
    dict(positives=3, anchors="first", normalize=False, margin=2.0),
]


@pytest.mark.parametrize("kw", BINARY_CASES)
@pytest.mark.parametrize("block_size", [None, 2])
def test_binary_value_and_gradient(rng, kw, block_size):
    f = rng.normal(size=(8, 3))
    dy = ref_sq_l2(rng.normal(size=(8, 2)))
    ref = ref_binary(f, dy, **kw)
    got, grad = tf_value_and_grad(binary_triplet_loss, f, dy, block_size=block_size, **kw)
    assert_close(got, ref, rtol=1e-10)
    assert ref > 0
    num = finite_difference_grad(lambda x: ref_binary(x, dy, **kw), f)
    assert_close(grad, num, rtol=1e-5, atol=1e-8)


def test_binary_ties_broken_by_position():
    f = np.random.default_rng(5).normal(size=(5, 2))
    dy = np.array([[0, 1, 1, 1, 2]] * 5, np.float64)
    np.fill_diagonal(dy, 0)
    ref = ref_binary(f, dy, positives=2, anchors="first")
    got, _ = tf_value_and_grad(binary_triplet_loss, f, dy, positives=2, anchors="first")
    assert_close(got, ref, rtol=1e-10)
    pos, neg = kd.losses.binary_triplet.binary_label_masks(tensor(dy[:1]), 2)
    assert to_numpy(pos).tolist() == [[False, True, True, False, False]]
    assert to_numpy(neg).tolist() == [[False, False, False, True, True]]


def authors_naive_triplet(f, num_pos, margin=0.2):
    """The authors' naive_train + Naive_TripletLoss: anchor 0, positives rows
    1..num_pos, negatives the rest; Squared_L2dist (+1e-4/dim) per triplet,
    clamp(min=1e-12), mean over the triplets."""
    eps = 1e-4 / f.shape[1]
    terms = []
    for p in range(1, num_pos + 1):
        for n in range(num_pos + 1, len(f)):
            dp = ((f[0] - f[p]) ** 2).sum() + eps
            dn = ((f[0] - f[n]) ** 2).sum() + eps
            terms.append(max(dp - dn + margin, 1e-12))
    return float(np.mean(terms))


def test_binary_first_is_the_authors_naive_triplet(rng):
    f = rng.normal(size=(16, 8))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    # Their batch: anchor, 5 of its 30 nearest, then samples from outside the 30.
    row = np.concatenate([[0.0], rng.uniform(0, 1, 5), rng.uniform(2, 3, 10)])
    got, _ = tf_value_and_grad(binary_triplet_loss, f, row[None, :],
                               positives=5, anchors="first")
    assert_close(got, authors_naive_triplet(f, 5), rtol=0, atol=1e-11)


def test_binary_keras_loss_and_config(rng):
    f = rng.normal(size=(9, 4))
    y = rng.normal(size=(9, 2))
    ref = ref_binary(f, ref_sq_l2(y), positives=3)
    loss = kd.losses.BinaryTripletLoss(positives=3)
    assert_close(float(loss(y.astype("float32"), f.astype("float32"))),
                               ref, rtol=1e-4)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, kd.losses.BinaryTripletLoss)
    assert (restored.positives, restored.margin) == (3, 0.2)
    dense = kd.losses.DenseTripletLoss(margin=0.1, anchors="first")
    clone = kd.losses.DenseTripletLoss.from_config(dense.get_config())
    assert (clone.margin, clone.anchors) == (0.1, "first")


# ---------------------------------------------------------------- degenerate input

@pytest.mark.parametrize("cls", [kd.losses.DenseTripletLoss, kd.losses.BinaryTripletLoss])
@pytest.mark.parametrize("b", [0, 1, 2])
def test_small_batch_zero_with_zero_gradient(cls, b):
    f = np.arange(1, b * 3 + 1, dtype="float32").reshape(b, 3)
    y = np.arange(b * 2, dtype="float32").reshape(b, 2)
    loss, g = eager_value_and_grad(cls(), y, f)
    assert float(loss) == 0.0
    assert g.shape == f.shape and np.all(g == 0)


@pytest.mark.parametrize("cls", [kd.losses.DenseTripletLoss, kd.losses.BinaryTripletLoss])
def test_coincident_embeddings_and_nan(cls, rng):
    f = rng.normal(size=(6, 3)).astype("float32")
    f[2] = f[1]
    y = rng.normal(size=(6, 2)).astype("float32")
    _, g = eager_value_and_grad(cls(squared=False), y, f)
    assert np.all(np.isfinite(g))
    f[0, 0] = np.nan
    with pytest.raises(ValueError, match=f"{cls.__name__}: y_pred contains NaN"):
        cls()(y, f)
    bad_y = y.copy()
    bad_y[1, 1] = np.inf
    with pytest.raises(ValueError, match=f"{cls.__name__}: y_true \\(labels\\) contains NaN"):
        cls()(bad_y, np.nan_to_num(f))
    with pytest.raises(ValueError, match="batch size"):
        cls()(y[:5], np.nan_to_num(f))


@pytest.mark.skipif(compiled(lambda: 0) is None, reason="PyTorch runs eagerly: no compiled path")
@pytest.mark.parametrize("cls", [kd.losses.DenseTripletLoss, kd.losses.BinaryTripletLoss])
def test_bad_labels_give_nan_when_compiled(cls, rng):
    # Under XLA / jax.jit nothing can raise: the loss is NaN, never 0.
    f = rng.normal(size=(6, 3)).astype("float32")
    y = rng.normal(size=(6, 2)).astype("float32")
    fn = compiled(lambda a, b: cls()(a, b))
    assert np.isfinite(float(to_numpy(fn(tensor(y), tensor(f)))))
    y[2, 0] = np.nan
    assert np.isnan(float(to_numpy(fn(tensor(y), tensor(f)))))


def test_bad_arguments():
    with pytest.raises(ValueError, match="positives"):
        kd.losses.BinaryTripletLoss(positives=0)
    with pytest.raises(ValueError, match="block_size"):
        kd.losses.DenseTripletLoss(block_size=0)
    with pytest.raises(ValueError, match="anchors"):
        kd.losses.DenseTripletLoss(anchors="x")


# ---------------------------------------------------------------- XLA

XLA_LOSSES = [
    ("log_ratio", lambda: kd.losses.LogRatioLoss()),
    ("log_ratio_first", lambda: kd.losses.LogRatioLoss(anchors="first", squared=False)),
    ("dense", lambda: kd.losses.DenseTripletLoss()),
    ("dense_blocks", lambda: kd.losses.DenseTripletLoss(block_size=4)),
    ("dense_first", lambda: kd.losses.DenseTripletLoss(anchors="first")),
    ("binary", lambda: kd.losses.BinaryTripletLoss(positives=3)),
    ("binary_blocks", lambda: kd.losses.BinaryTripletLoss(positives=2, block_size=3)),
    ("binary_threshold", lambda: kd.losses.BinaryTripletLoss(threshold=1.0, block_size=5)),
]


@pytest.mark.skipif(compiled_value_and_grad(lambda y, f: 0) is None,
                    reason="PyTorch runs eagerly: no compiled path")
@pytest.mark.parametrize("name,make", XLA_LOSSES, ids=[n for n, _ in XLA_LOSSES])
def test_xla_matches_eager(rng, name, make):
    # Keras turns XLA on by default in fit() on GPU machines (jit_compile="auto");
    # jax.jit under JAX.
    loss = make()
    f = rng.normal(size=(11, 3)).astype("float32")
    y = rng.normal(size=(11, 2)).astype("float32")
    eager = eager_value_and_grad(loss, y, f)
    xla = compiled_value_and_grad(loss)(y, f)
    assert_close(xla[0], eager[0], rtol=1e-5)
    assert_close(xla[1], eager[1], rtol=1e-4, atol=1e-6)
    assert np.abs(eager[1]).max() > 1e-4
