"""RankNContrastLoss vs a brute-force loop over anchors, pairs and negatives
(numpy float64), written from the paper's formula."""

import math

import keras
import numpy as np
import pytest
from keras import ops

import keras_dml as kd
from backend_tools import (
    BACKEND,
    compiled,
    graph,
    largest_tensor,
    tensor,
    to_numpy,
    value_and_grads,
)
from continuous_tools import (
    assert_close,
    compiled_value_and_grad,
    eager_value_and_grad,
    value_and_grad64,
)
from finite_difference import finite_difference_grad
from keras_dml.losses.rank_n_contrast import rank_n_contrast_from_distances, rank_n_contrast_loss

pytestmark = pytest.mark.backends


# ---------------------------------------------------------------- references

def ref_l1(y):
    n = len(y)
    return np.array([[sum(abs(y[i, k] - y[j, k]) for k in range(y.shape[1]))
                      for j in range(n)] for i in range(n)])


def ref_rnc(f, dy, temperature=2.0):
    """1/(B(B-1)) sum_i sum_{j!=i} -log(exp s_ij / sum_{k!=i, d_ik>=d_ij} exp s_ik),
    s_ij = -||f_i - f_j|| / temperature: explicit loops."""
    b, dim = f.shape

    def s(i, j):
        return -math.sqrt(sum((f[i, c] - f[j, c]) ** 2 for c in range(dim))) / temperature

    total, count = 0.0, 0
    for i in range(b):
        for j in range(b):
            if j == i:
                continue
            denominator = sum(math.exp(s(i, k)) for k in range(b)
                              if k != i and dy[i, k] >= dy[i, j])
            total += -(s(i, j) - math.log(denominator))
            count += 1
    return total / count if count else 0.0


def two_view_reference(views, labels, temperature=2.0):
    """The paper's two-view RnC, written with an explicit [n, n, n] negative
    mask: features [N, 2, D] -> 2N samples (view 0 of every sample, then view
    1), labels repeated, L1 label distance, mean over the 2N (2N - 1) pairs."""
    f = np.concatenate([views[:, 0], views[:, 1]], axis=0)
    y = np.concatenate([labels, labels], axis=0)
    n = len(f)
    dist = np.sqrt(((f[:, None] - f[None]) ** 2).sum(-1))
    logits = -dist / temperature
    dy = np.abs(y[:, None] - y[None]).sum(-1)
    off = ~np.eye(n, dtype=bool)
    # neg[i, j, k]: k != i is a negative of the pair (i, j).
    neg = (dy[:, None, :] >= dy[:, :, None]) & off[:, None, :]
    denominator = (np.exp(logits)[:, None, :] * neg).sum(-1)
    log_prob = logits - np.log(denominator)
    return float(-(log_prob * off).sum() / (n * (n - 1)))


def tf_value_and_grad(f, dy, temperature=2.0):
    """Value and gradient in f (float64 where the backend has it)."""
    return value_and_grad64(
        lambda x, d: rank_n_contrast_from_distances(x, d, temperature), f, dy)


def tied_batch(rng, b=9, dim=3, duplicates=True):
    """Integer labels (many exact ties in label distance) and, optionally,
    duplicated embedding rows."""
    f = rng.normal(size=(b, dim))
    if duplicates:
        f[1] = f[0]
        f[5] = f[4]
    y = rng.integers(0, 4, size=(b, 2)).astype("float64")
    return f, y


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("temperature", [2.0, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_value_matches_loops_with_ties_and_duplicates(seed, temperature):
    rng = np.random.default_rng(seed)
    f, y = tied_batch(rng)
    dy = ref_l1(y)
    assert len(np.unique(dy[0])) < len(dy[0])       # the batch has ties
    got, _ = tf_value_and_grad(f, dy, temperature)
    # Duplicated rows: their matmul-form distance is sqrt(rounding noise)
    # ~1e-8, not 0, where XLA (jax.jit) rounds the matmul differently: 1e-9
    # relative on the loss at temperature 0.5 (measured).
    assert_close(got, ref_rnc(f, dy, temperature), rtol=1e-8)


def test_value_matches_loops_continuous_labels(rng):
    f = rng.normal(size=(11, 4))
    dy = ref_l1(rng.normal(size=(11, 2)))
    got, _ = tf_value_and_grad(f, dy)
    assert_close(got, ref_rnc(f, dy), rtol=1e-10)


@pytest.mark.parametrize("label_distance", ["l1", "squared_l2", "precomputed"])
def test_keras_loss_float32(rng, label_distance):
    f, y = tied_batch(rng, b=10, dim=4)
    if label_distance == "squared_l2":
        dy = ((y[:, None] - y[None]) ** 2).sum(-1)
    else:
        dy = ref_l1(y)
    y_true = dy if label_distance == "precomputed" else y
    loss = kd.losses.RankNContrastLoss(label_distance=label_distance)
    got = float(loss(y_true.astype("float32"), f.astype("float32")))
    assert_close(got, ref_rnc(f, dy), rtol=1e-5)
    # The functional core with labels does the same.
    core = rank_n_contrast_loss(y_true.astype("float32"), f.astype("float32"),
                                label_distance=label_distance)
    assert_close(float(core), got, rtol=1e-6)


def test_hand_computed_tie_example():
    # Anchor 0 with labels 0 | 1, 1 | 2: the tied pair (0,1), (0,2) both
    # have {1, 2, 3} as their set; (0, 3) has {3} only.
    y = np.array([[0.0], [1.0], [1.0], [2.0]])
    f = np.array([[0.0], [1.0], [2.0], [3.0]])
    s = -np.abs(f[0] - f[1:, 0]) / 2.0                 # s(0, 1..3)
    lse = np.log(np.exp(s).sum())
    anchor0 = (lse - s[0]) + (lse - s[1]) + 0.0        # + (0, 3): log 1 = 0
    dy = ref_l1(y)
    ref = ref_rnc(f, dy)
    got, _ = tf_value_and_grad(f, dy)
    assert_close(got, ref, rtol=1e-12)
    # Anchor 0's share of the 4 * 3 pairs is the hand value.
    assert_close(ref_rnc_anchors(f, dy, [0]) * 12, anchor0, rtol=1e-12)
    assert_close(ref_rnc_anchors(f, dy, range(4)), ref, rtol=1e-12)


def ref_rnc_anchors(f, dy, anchors, temperature=2.0):
    """ref_rnc restricted to some anchors, same 1/(B(B-1)) normalisation."""
    b = len(f)
    total = 0.0
    for i in anchors:
        s = -np.sqrt(((f[i] - f) ** 2).sum(-1)) / temperature
        for j in range(b):
            if j != i:
                keep = [k for k in range(b) if k != i and dy[i, k] >= dy[i, j]]
                total += np.log(np.exp(s[keep]).sum()) - s[j]
    return total / (b * (b - 1))


def test_permutation_invariant_and_reads_only_the_order(rng):
    f, y = tied_batch(rng, b=10)
    dy = ref_l1(y)
    base, _ = tf_value_and_grad(f, dy)
    perm = rng.permutation(len(f))
    permuted, _ = tf_value_and_grad(f[perm], dy[perm][:, perm])
    assert_close(permuted, base, rtol=1e-12)
    # A strictly increasing map of the label distances keeps every set (and
    # the diagonal is never read).
    warped = dy ** 3 + 2.0 * dy
    np.fill_diagonal(warped, 7.0)
    assert_close(tf_value_and_grad(f, warped)[0], base, rtol=1e-12)


def test_scalar_labels_l1_equals_squared_l2(rng):
    f = rng.normal(size=(8, 3)).astype("float32")
    y = rng.integers(0, 5, size=(8, 1)).astype("float32")
    a = kd.losses.RankNContrastLoss()(y, f)
    b = kd.losses.RankNContrastLoss(label_distance="squared_l2")(y, f)
    assert_close(float(a), float(b), rtol=1e-6)


def test_concatenated_views_are_the_papers_two_view_loss(rng):
    views = rng.normal(size=(6, 2, 5))
    labels = rng.integers(0, 3, size=(6, 1)).astype("float64")
    ref = two_view_reference(views, labels)
    f = np.concatenate([views[:, 0], views[:, 1]], axis=0)
    y = np.concatenate([labels, labels], axis=0)
    got, _ = value_and_grad64(lambda x, labels: rank_n_contrast_loss(labels, x), f, y)
    assert_close(got, ref, rtol=1e-10)
    assert_close(ref_rnc(f, ref_l1(y)), ref, rtol=1e-10)


def test_far_apart_embeddings_are_stable(rng):
    # Logit gaps of hundreds: exp underflows in float32 without the running
    # shift of the suffix logsumexp (log 0 = -inf); float64 loops are exact.
    f = rng.normal(size=(8, 3)) * 300.0
    dy = ref_l1(rng.integers(0, 4, size=(8, 1)).astype("float64"))
    ref = ref_rnc(f, dy)
    got = kd.losses.RankNContrastLoss(label_distance="precomputed")(
        dy.astype("float32"), f.astype("float32"))
    assert np.isfinite(float(got))
    assert_close(float(got), ref, rtol=1e-4)


# ---------------------------------------------------------------- gradients

@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_matches_finite_differences(seed):
    rng = np.random.default_rng(seed)
    f, y = tied_batch(rng, b=7, dim=3, duplicates=False)
    dy = ref_l1(y)
    _, grad = tf_value_and_grad(f, dy)
    num = finite_difference_grad(lambda x: ref_rnc(x, dy), f)
    assert_close(grad, num, rtol=1e-5, atol=1e-8)
    assert np.abs(grad).max() > 1e-3     # not vacuous


def test_gradient_temperature_and_continuous_labels(rng):
    f = rng.normal(size=(6, 2))
    dy = ref_l1(rng.normal(size=(6, 3)))
    _, grad = tf_value_and_grad(f, dy, temperature=0.7)
    num = finite_difference_grad(lambda x: ref_rnc(x, dy, 0.7), f)
    assert_close(grad, num, rtol=1e-5, atol=1e-8)


def test_coincident_embeddings_finite_gradient(rng):
    f, y = tied_batch(rng)
    for emb in (f, np.zeros_like(f), np.ones_like(f)):
        for dtype in ("float32", "float64"):
            loss, g = eager_value_and_grad(kd.losses.RankNContrastLoss(dtype=dtype),
                                           y.astype(dtype), emb.astype(dtype))
            assert np.isfinite(float(loss))
            assert np.all(np.isfinite(g))
    # All embeddings equal: every s = 0, the loss is the mean log |S(i, j)|.
    dy = ref_l1(y)
    assert_close(tf_value_and_grad(np.zeros_like(f), dy)[0],
                               ref_rnc(np.zeros_like(f), dy), rtol=1e-12)


@pytest.mark.parametrize("b", [0, 1, 2])
def test_small_batch_is_zero_with_zero_gradient(b):
    f = np.arange(b * 3, dtype="float32").reshape(b, 3)
    y = np.arange(b * 2, dtype="float32").reshape(b, 2)
    loss, g = eager_value_and_grad(kd.losses.RankNContrastLoss(), y, f)
    assert float(loss) == 0.0
    assert g.shape == f.shape and np.all(g == 0)


def test_three_samples_is_exact(rng):
    f = rng.normal(size=(3, 2))
    dy = ref_l1(rng.normal(size=(3, 1)))
    got, _ = tf_value_and_grad(f, dy)
    assert_close(got, ref_rnc(f, dy), rtol=1e-12)
    assert got > 0


# ---------------------------------------------------------------- graph, XLA, dtypes

@pytest.mark.skipif(BACKEND == "torch", reason="PyTorch runs eagerly: no compiled path")
def test_compiled_agrees_with_eager(rng):
    # XLA under TensorFlow, jax.jit under JAX.
    f, y = tied_batch(rng, b=12, dim=4)
    f, y = f.astype("float32"), y.astype("float32")
    loss = kd.losses.RankNContrastLoss()
    eager = eager_value_and_grad(loss, y, f)
    value, grad = compiled_value_and_grad(loss)(y, f)
    # XLA's matmul rounds differently: the duplicated rows' distance is
    # sqrt(rounding noise) there (4e-6 relative on the loss, measured).
    assert_close(float(value), float(eager[0]), rtol=2e-5)
    assert_close(grad, eager[1], rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(BACKEND != "tensorflow",
                    reason="tf.function graphs (and an unknown batch size) are "
                           "TensorFlow's; test_compiled_agrees_with_eager covers jax.jit")
def test_tf_function_agrees_with_eager(rng):
    import tensorflow as tf
    f, y = tied_batch(rng, b=12, dim=4)
    f, y = tf.constant(f.astype("float32")), tf.constant(y.astype("float32"))
    loss = kd.losses.RankNContrastLoss()

    def step(labels, emb):
        with tf.GradientTape() as tape:
            tape.watch(emb)
            value = loss(labels, emb)
        return value, tape.gradient(value, emb)

    eager = step(y, f)
    for fn in (graph(step),
               tf.function(step, input_signature=[tf.TensorSpec([None, 2]),
                                                  tf.TensorSpec([None, 4])])):
        value, grad = fn(y, f)
        assert_close(float(value), float(eager[0]), rtol=2e-5)
        assert_close(grad.numpy(), eager[1].numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(BACKEND == "torch", reason="PyTorch runs eagerly: no graph to read")
def test_graph_has_no_cubic_tensor():
    # The traced gradient step (TensorFlow graph / JAX jaxpr) holds no
    # tensor larger than B^2.
    b, dim = 64, 8
    rng = np.random.default_rng(0)
    y = rng.normal(size=(b, 2)).astype("float32")
    f = rng.normal(size=(b, dim)).astype("float32")
    biggest = largest_tensor(kd.losses.RankNContrastLoss(), y, f)
    assert biggest > 0
    assert biggest <= b * b, f"largest tensor has {biggest} elements (B^3 = {b ** 3})"


@pytest.mark.parametrize("dtype,rtol", [("float16", 2e-3), ("bfloat16", 2e-2)])
def test_half_precision_close_to_float32(rng, dtype, rtol):
    f, y = tied_batch(rng, b=16, dim=8)
    for scale in (1.0, 200.0):      # 200: squared distances past float16's max
        emb = (f * scale).astype("float32")
        dy = tensor(ref_l1(y).astype("float32"))
        values = {}
        for dt in ("float32", dtype):
            dtypes = []

            def fn(x):
                x = ops.cast(x, dt)
                value = rank_n_contrast_from_distances(x, dy)
                dtypes.append(keras.backend.standardize_dtype(value.dtype))
                return ops.cast(value, "float32")

            value, (grad,) = value_and_grads(fn, emb)
            assert dtypes[-1] == dt
            values[dt] = (float(value), grad)
        ref_value, ref_grad = values["float32"]
        value, grad = values[dtype]
        assert np.isfinite(value) and np.all(np.isfinite(grad))
        # The half-precision input itself is rounded (rel. 5e-4 / 4e-3).
        assert_close(value, ref_value, rtol=rtol)
        assert_close(grad, ref_grad, rtol=0.1,
                                   atol=0.1 * np.abs(ref_grad).max())


def test_keras_loss_dtype_float16(rng):
    f, y = tied_batch(rng)
    loss = kd.losses.RankNContrastLoss(dtype="float16")
    value = loss(y.astype("float16"), f.astype("float16"))
    assert keras.backend.standardize_dtype(value.dtype) == "float16"
    assert_close(float(value), ref_rnc(f, ref_l1(y)), rtol=5e-3)


# ---------------------------------------------------------------- bad input

def test_nan_inputs_raise():
    f = np.arange(8, dtype="float32").reshape(4, 2)
    y = np.arange(4, dtype="float32").reshape(4, 1)
    bad_f = f.copy()
    bad_f[1, 0] = np.nan
    with pytest.raises(ValueError, match="RankNContrastLoss: y_pred contains NaN"):
        kd.losses.RankNContrastLoss()(y, bad_f)
    for value in (np.nan, np.inf):
        bad_y = y.copy()
        bad_y[2, 0] = value
        with pytest.raises(ValueError, match="labels"):
            kd.losses.RankNContrastLoss()(bad_y, f)
    dy = np.abs(y - y.T)
    dy[0, 1] = -1.0
    with pytest.raises(ValueError, match=">= 0"):
        kd.losses.RankNContrastLoss(label_distance="precomputed")(dy, f)
    dy[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kd.losses.RankNContrastLoss(label_distance="precomputed")(dy, f)


@pytest.mark.skipif(BACKEND != "tensorflow",
                    reason="graph assertions are TensorFlow's; "
                           "test_nan_labels_compiled_give_nan covers jax.jit")
def test_nan_labels_in_graph_raise():
    import tensorflow as tf
    f = tf.constant(np.arange(8, dtype="float32").reshape(4, 2))
    y = np.arange(4, dtype="float32").reshape(4, 1)
    y[0, 0] = np.nan
    fn = graph(lambda a, b: kd.losses.RankNContrastLoss()(a, b))
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels"):
        fn(tf.constant(y), f)


@pytest.mark.skipif(BACKEND == "torch", reason="PyTorch runs eagerly: no compiled path")
def test_nan_labels_compiled_give_nan():
    # XLA / jax.jit: nothing can raise, the loss is NaN (never 0).
    f = np.arange(8, dtype="float32").reshape(4, 2)
    y = np.arange(4, dtype="float32").reshape(4, 1)
    fn = compiled(lambda a, b: kd.losses.RankNContrastLoss()(a, b))
    assert np.isfinite(float(to_numpy(fn(tensor(y), tensor(f)))))
    y[0, 0] = np.nan
    assert np.isnan(float(to_numpy(fn(tensor(y), tensor(f)))))


def test_bad_arguments_raise():
    for t in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            kd.losses.RankNContrastLoss(temperature=t)
        with pytest.raises(ValueError, match="temperature"):
            rank_n_contrast_loss(np.zeros((3, 1)), np.zeros((3, 2)), temperature=t)
    with pytest.raises(ValueError, match="unknown label distance"):
        kd.losses.RankNContrastLoss(label_distance="nope")
    f = np.zeros((4, 2), "float32")
    loss = kd.losses.RankNContrastLoss()
    with pytest.raises(ValueError, match="square"):
        kd.losses.RankNContrastLoss(label_distance="precomputed")(
            np.zeros((4, 3), "float32"), f)
    with pytest.raises(ValueError, match="batch size"):
        kd.losses.RankNContrastLoss(label_distance="precomputed")(
            np.zeros((5, 5), "float32"), f)
    with pytest.raises(ValueError, match=r"\[batch, dim\]"):
        loss(np.zeros((4, 2), "float32"), np.zeros((4,), "float32"))
    with pytest.raises(ValueError, match=r"\[N, L\]"):
        loss(np.zeros((4, 2, 2), "float32"), f)
    with pytest.raises(ValueError, match="batch size"):
        loss(np.zeros((5, 2), "float32"), f)
    with pytest.raises(ValueError, match="sample_weight"):
        loss(np.zeros((4, 2), "float32"), f, sample_weight=np.ones(4))


# ---------------------------------------------------------------- registry, config

def test_registry_and_attributes():
    assert "rank_n_contrast" in kd.losses.available(continuous_labels=True)
    assert "rank_n_contrast" not in kd.losses.available(continuous_labels=False)
    loss = kd.losses.get("rank_n_contrast", temperature=1.0)
    assert isinstance(loss, kd.losses.RankNContrastLoss)
    assert loss.temperature == 1.0 and loss.label_distance == "l1"
    assert loss.continuous_labels and not loss.takes_proxies
    assert loss.proxies_per_class == 1


def test_config_round_trip(tmp_path):
    loss = kd.losses.RankNContrastLoss(temperature=0.5, label_distance="one_minus_miou",
                                       label_distance_kwargs={"num_classes": 4})
    clone = kd.losses.RankNContrastLoss.from_config(loss.get_config())
    for key in ("temperature", "label_distance", "label_distance_kwargs"):
        assert getattr(clone, key) == getattr(loss, key)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, kd.losses.RankNContrastLoss)
    assert restored.get_config() == loss.get_config()

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    model.compile(optimizer="adam", loss=kd.losses.RankNContrastLoss(temperature=0.5))
    x = np.random.default_rng(0).normal(size=(12, 3)).astype("float32")
    y = np.arange(12, dtype="float32")[:, None] % 5
    before = model.evaluate(x, y, batch_size=12, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.loss, kd.losses.RankNContrastLoss)
    assert loaded.loss.temperature == 0.5
    assert_close(loaded.evaluate(x, y, batch_size=12, verbose=0), before,
                               rtol=1e-6)
