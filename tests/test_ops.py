"""keras_dml.ops, the shared primitives, against numpy written from the
definitions: distances, masks, masked logsumexp, safe sqrt, 16-bit means."""

import numpy as np
import pytest
from keras import ops as kops

from backend_tools import BACKEND, float64, tensor, to_numpy, value_and_grads
from keras_dml import ops

pytestmark = pytest.mark.backends


@pytest.fixture(autouse=True)
def _float64():
    with float64():
        yield


def grad(fn, x):
    value, (g,) = value_and_grads(fn, x)
    return value, g


def n(x):
    return to_numpy(x)


# ------------------------------------------------------------- distances
def test_pairwise_squared_distances_match_loops(rng):
    x = rng.normal(size=(7, 5))
    y = rng.normal(size=(4, 5))
    ref = np.array([[np.sum((a - b) ** 2) for b in y] for a in x])
    np.testing.assert_allclose(n(ops.pairwise_squared_distances(x, y)), ref,
                               rtol=1e-10)
    ref_self = np.array([[np.sum((a - b) ** 2) for b in x] for a in x])
    d = n(ops.pairwise_squared_distances(x))
    np.testing.assert_allclose(d, ref_self, rtol=1e-10, atol=1e-12)
    assert np.all(np.diag(d) == 0)            # exactly, not up to rounding


def test_squared_distances_are_clamped_at_zero():
    # |x|^2 + |y|^2 - 2xy rounds below 0 for near-identical large vectors.
    x = np.full((2, 64), 1e4, np.float32)
    x[1, 0] += 1e-3
    d = n(ops.pairwise_squared_distances(x[:1], x))
    assert np.all(d >= 0)


def test_pairwise_distances_and_safe_sqrt_gradient(rng):
    x = rng.normal(size=(5, 3))
    x[3] = x[1]                               # a zero distance off the diagonal
    d, g = grad(lambda t: kops.sum(ops.pairwise_distances(t)), x)
    ref = np.array([[np.linalg.norm(a - b) for b in x] for a in x])
    np.testing.assert_allclose(n(ops.pairwise_distances(x)), ref, atol=1e-7)
    assert np.all(np.isfinite(g))             # plain sqrt: inf/NaN here
    np.testing.assert_allclose(
        n(ops.pairwise_distances(x, squared=True)), ref ** 2, atol=1e-12)
    v, gv = grad(lambda t: kops.sum(ops.safe_sqrt(t)),
                 np.array([-1.0, 0.0, 4.0]))
    np.testing.assert_array_equal(n(ops.safe_sqrt(tensor([-1.0, 0.0, 4.0]))),
                                  [0.0, 0.0, 2.0])
    np.testing.assert_array_equal(gv, [0.0, 0.0, 0.25])


def test_cosine_similarity_and_l2_normalize(rng):
    x = rng.normal(size=(6, 4))
    y = rng.normal(size=(3, 4))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)
    np.testing.assert_allclose(n(ops.cosine_similarity(x, y)), xn @ yn.T,
                               rtol=1e-10)
    np.testing.assert_allclose(n(ops.cosine_similarity(x)), xn @ xn.T,
                               rtol=1e-10)
    np.testing.assert_allclose(n(ops.l2_normalize(x)), xn, rtol=1e-12)
    zero = n(ops.l2_normalize(np.zeros((2, 3), np.float32)))
    np.testing.assert_array_equal(zero, 0.0)  # zero rows stay zero, no NaN


def test_l2_normalize_is_exact_where_the_result_is_representable():
    # sqrt and division are correctly rounded on every CPU (rsqrt is not):
    # rows of four +-1 normalise to exactly +-0.5, of one to exactly 1.
    x = np.zeros((37, 5), np.float32)         # 37 rows: vector body and tail
    x[:, :4] = np.where(np.arange(37)[:, None] % 2, 1.0, -1.0)
    x[::3, 1:4] = 0.0
    out = n(ops.l2_normalize(x))
    expected = np.where(np.arange(37)[:, None] % 3 == 0, 1.0, 0.5) * np.sign(x)
    np.testing.assert_array_equal(out, expected)


def test_l2_normalize_float32_matches_float64_formula(rng):
    x = rng.normal(size=(50, 33)).astype(np.float32)
    x64 = x.astype(np.float64)
    ref = x64 / np.sqrt(np.maximum(np.sum(x64 ** 2, axis=1, keepdims=True), 1e-12))
    np.testing.assert_allclose(n(ops.l2_normalize(x)), ref, rtol=1e-6)


@pytest.mark.skipif(BACKEND != "tensorflow",
                    reason="compares with tf.math.l2_normalize (TensorFlow only)")
def test_l2_normalize_agrees_with_tensorflow(rng):
    import tensorflow as tf
    x = rng.normal(size=(50, 33)).astype(np.float32)
    np.testing.assert_allclose(n(ops.l2_normalize(x)),
                               tf.math.l2_normalize(x, axis=-1).numpy(), rtol=1e-6)


# ----------------------------------------------------------------- labels
def test_flatten_labels_shapes_and_refusals():
    np.testing.assert_array_equal(n(ops.flatten_labels(tensor([[1], [2]]))), [1, 2])
    assert ops.dtype_of(ops.flatten_labels(tensor([1.0, 3.0]))) == "int32"
    with pytest.raises(ValueError, match="shape"):
        ops.flatten_labels(np.zeros((2, 2), np.float32))
    # Eagerly a ValueError on every backend (the graph form: test_loss_inputs).
    with pytest.raises(ValueError, match="whole-number"):
        ops.flatten_labels(tensor([1.0, 2.5]))


def test_label_masks_match_loops(rng):
    a = rng.integers(0, 3, 9)
    b = rng.integers(0, 3, 5)
    pos, neg = (n(m) for m in ops.label_masks(tensor(a)))
    for i in range(9):
        for j in range(9):
            assert pos[i, j] == (a[i] == a[j] and i != j)
            assert neg[i, j] == (a[i] != a[j])
    pos, neg = (n(m) for m in ops.label_masks(tensor(a), tensor(b)))
    np.testing.assert_array_equal(pos, a[:, None] == b[None, :])
    np.testing.assert_array_equal(neg, a[:, None] != b[None, :])


# -------------------------------------------------------- masked logsumexp
def lse_reference(x, mask, add_one):
    out = []
    for row, keep in zip(x, mask):
        kept = [float(v) for v, k in zip(row, keep) if k]
        if not kept:
            out.append(0.0)
            continue
        total = sum(np.exp(v) for v in kept) + (1.0 if add_one else 0.0)
        out.append(np.log(total))
    return np.array(out)


@pytest.mark.parametrize("add_one", [False, True])
def test_masked_logsumexp_matches_loops_with_zero_gradient_on_empty_rows(rng, add_one):
    x = rng.normal(size=(6, 7)) * 3
    mask = rng.random((6, 7)) < 0.5
    mask[2] = False                           # an empty row
    value, g = grad(lambda t: kops.sum(
        ops.masked_logsumexp(t, mask, add_one=add_one)), x)
    np.testing.assert_allclose(
        n(ops.masked_logsumexp(x, mask, add_one=add_one)),
        lse_reference(x, mask, add_one), rtol=1e-12)
    assert np.all(g[~mask] == 0) and np.all(g[2] == 0)
    # d/dx_j LSE = softmax over the kept entries (+1 in the denominator).
    for i in (0, 1, 3):
        e = np.where(mask[i], np.exp(x[i]), 0.0)
        np.testing.assert_allclose(g[i], e / (e.sum() + add_one), rtol=1e-10)
    keep = ops.masked_logsumexp(x, mask, add_one=add_one, keepdims=True)
    assert tuple(keep.shape) == (6, 1)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_masked_logsumexp_does_not_overflow_in_16_bits(dtype):
    # alpha = 32 times a cosine near 1: exp(32 * 1.1) overflows float16.
    x = kops.cast(tensor([[35.2, 34.0, -3.0]]), dtype)
    out = ops.masked_logsumexp(x, tensor([[True, True, False]]), add_one=True)
    assert ops.dtype_of(out) == dtype
    out = float(n(kops.cast(out, "float32"))[0])
    assert np.isfinite(out)
    ref = np.log(1 + np.exp(35.2) + np.exp(34.0))
    assert out == pytest.approx(ref, rel=1e-2)


# ------------------------------------------------- means and 16-bit sums
def test_accumulation_dtype():
    assert ops.accumulation_dtype("float16") == "float32"
    assert ops.accumulation_dtype("bfloat16") == "float32"
    assert ops.accumulation_dtype("float64") == "float64"
    assert ops.accumulation_dtype(kops.ones((1,), "float16").dtype) == "float32"


def test_masked_and_positive_mean(rng):
    v = rng.normal(size=(5, 6))
    m = rng.random((5, 6)) < 0.4
    assert float(n(ops.masked_mean(tensor(v), m))) == pytest.approx(v[m].mean())
    assert float(n(ops.positive_mean(tensor(v)))) == pytest.approx(v[v > 0].mean())
    # Nothing selected: 0 with a zero gradient (not NaN).
    value, g = grad(lambda t: ops.masked_mean(t, np.zeros((5, 6), bool)), v)
    assert float(value) == 0.0 and np.all(g == 0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_means_accumulate_in_float32(dtype):
    # 100,000 ones: a 16-bit count stops at 2048 (bfloat16: 256) or overflows
    # past 65504; accumulated in float32 the mean is exactly 1.
    ones = kops.ones((100_000,), dtype)
    out = ops.masked_mean(ones, np.ones((100_000,), bool))
    assert ops.dtype_of(out) == dtype
    assert float(n(kops.cast(out, "float32"))) == 1.0
    v = kops.cast(tensor(np.linspace(0.5, 1.5, 70_000)), dtype)
    mean = ops.positive_mean(v)
    assert float(n(kops.cast(mean, "float32"))) == pytest.approx(1.0, rel=1e-2)


def test_constant_rounds_once_in_its_dtype():
    # Cast from a Python float, TensorFlow rounds 0.1 to float32 first.
    assert float(n(ops.constant(0.1, "float64"))) == 0.1
    assert ops.dtype_of(ops.constant(2, "float16")) == "float16"
    assert float(n(ops.constant(0.1, "float32"))) == float(np.float32(0.1))
