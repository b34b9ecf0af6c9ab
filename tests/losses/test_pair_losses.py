"""Pair/triplet losses against slow numpy references written from the formulas.

Every reference below loops over samples, pairs and triplets explicitly in
float64 (no masks, no vectorisation) and follows the definitions stated in
the loss docstrings (the pytorch-metric-learning semantics). Values are
compared on random batches; gradients against central finite differences of
the reference. Backend-neutral: the backend's own autodiff, in float64 and
float32 (loss_cases.DTYPES).
"""

import math

import keras
import numpy as np
import pytest
from keras import ops as kops

import keras_dml as kd
from backend_tools import (
    BACKEND,
    compiled,
    float64,
    largest_tensor,
    tensor,
    to_numpy,
    value_and_grads,
)
from finite_difference import finite_difference_grad
from loss_cases import DTYPES, check_value_and_grad

pytestmark = pytest.mark.backends


@pytest.fixture(autouse=True)
def _float64():
    with float64():
        yield


# ---------------------------------------------------------------- references
def _unit(emb):
    out = []
    for row in emb:
        norm = math.sqrt(sum(v * v for v in row))
        out.append([v / norm if norm > 0 else 0.0 for v in row])
    return out


def _dist(u, v):
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v)))


def _dot(u, v):
    return sum(a * b for a, b in zip(u, v))


def _lse(values):
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def ref_triplet(labels, emb, margin=0.1, mining="semihard", block_size=None):
    del block_size      # how the loss is computed, not what it is
    x = _unit(emb)
    n = len(labels)
    losses = []
    for a in range(n):
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            for q in range(n):
                if labels[q] == labels[a]:
                    continue
                d_ap, d_an = _dist(x[a], x[p]), _dist(x[a], x[q])
                m = d_an - d_ap
                if m > margin:
                    continue
                if mining == "hard" and m > 0:
                    continue
                if mining == "semihard" and m <= 0:
                    continue
                loss = max(0.0, d_ap - d_an + margin)
                if loss > 0:
                    losses.append(loss)
    return sum(losses) / len(losses) if losses else 0.0


def ref_contrastive(labels, emb, pos_margin=0.0, neg_margin=0.5):
    x = _unit(emb)
    n = len(labels)
    pos, neg = [], []
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            d = _dist(x[i], x[j])
            if labels[i] == labels[j]:
                loss = max(0.0, d - pos_margin)
                if loss > 0:
                    pos.append(loss)
            else:
                loss = max(0.0, neg_margin - d)
                if loss > 0:
                    neg.append(loss)
    return ((sum(pos) / len(pos) if pos else 0.0)
            + (sum(neg) / len(neg) if neg else 0.0))


def ref_ms_pairs(labels, emb, epsilon):
    """Kept (anchor, positive) and (anchor, negative) pairs of the MS miner."""
    x = _unit(emb)
    n = len(labels)
    s = [[_dot(x[i], x[j]) for j in range(n)] for i in range(n)]
    pos = [(a, p) for a in range(n) for p in range(n)
           if a != p and labels[a] == labels[p]]
    neg = [(a, q) for a in range(n) for q in range(n) if labels[a] != labels[q]]
    if epsilon is None:
        return s, pos, neg
    if not pos or not neg:
        return s, [], []
    kept_pos, kept_neg = [], []
    for a in range(n):
        neg_sims = [s[a][q] for (b, q) in neg if b == a]
        pos_sims = [s[a][p] for (b, p) in pos if b == a]
        for (b, p) in pos:
            if b == a and neg_sims and s[a][p] - epsilon < max(neg_sims):
                kept_pos.append((a, p))
        for (b, q) in neg:
            if b == a and pos_sims and s[a][q] + epsilon > min(pos_sims):
                kept_neg.append((a, q))
    return s, kept_pos, kept_neg


def ref_multi_similarity(labels, emb, alpha=2.0, beta=50.0, base=0.5,
                         epsilon=0.1, pml_quirk=True):
    s, kept_pos, kept_neg = ref_ms_pairs(labels, emb, epsilon)
    if pml_quirk and len(kept_pos) <= 1 and len(kept_neg) <= 1:
        return 0.0
    n = len(labels)
    total = 0.0
    for a in range(n):
        pos_sum = sum(math.exp(-alpha * (s[a][p] - base))
                      for (b, p) in kept_pos if b == a)
        neg_sum = sum(math.exp(beta * (s[a][q] - base))
                      for (b, q) in kept_neg if b == a)
        total += math.log(1.0 + pos_sum) / alpha + math.log(1.0 + neg_sum) / beta
    return total / n


def ref_npair(labels, emb):
    anchors, positives = [], []
    for c in dict.fromkeys(labels):          # classes in order of appearance
        members = [i for i, lab in enumerate(labels) if lab == c]
        if len(members) >= 2:
            anchors.append(members[0])
            positives.append(members[1])
    if not anchors:
        return 0.0
    total = 0.0
    for i, a in enumerate(anchors):
        logits = [_dot(emb[a], emb[p]) for p in positives]
        total += _lse(logits) - logits[i]
    return total / len(anchors)


def ref_lifted(labels, emb, neg_margin=1.0, pos_margin=0.0):
    x = _unit(emb)
    n = len(labels)
    if len(set(labels)) < 2:
        return 0.0
    losses = []
    for a in range(n):
        for p in range(n):
            if a == p or labels[a] != labels[p]:
                continue
            terms = [neg_margin - _dist(x[a], x[q])
                     for q in range(n) if labels[q] != labels[a]]
            terms += [neg_margin - _dist(x[p], x[q])
                      for q in range(n) if labels[q] != labels[p]]
            j = _lse(terms) + _dist(x[a], x[p]) - pos_margin
            losses.append(max(0.0, j) ** 2 / 2)
    return sum(losses) / len(losses) if losses else 0.0


# ------------------------------------------------------------ the test cases
# name -> (keras_dml functional core, numpy reference, kwargs)
CASES = {
    "triplet_semihard": (kd.losses.triplet_loss, ref_triplet,
                         dict(margin=0.1, mining="semihard")),
    "triplet_hard": (kd.losses.triplet_loss, ref_triplet,
                     dict(margin=0.1, mining="hard")),
    "triplet_all": (kd.losses.triplet_loss, ref_triplet,
                    dict(margin=0.1, mining="all")),
    "triplet_semihard_blocks3": (kd.losses.triplet_loss, ref_triplet,
                                 dict(margin=0.1, mining="semihard", block_size=3)),
    "triplet_all_m0.3": (kd.losses.triplet_loss, ref_triplet,
                         dict(margin=0.3, mining="all")),
    "contrastive": (kd.losses.contrastive_loss, ref_contrastive,
                    dict(pos_margin=0.0, neg_margin=0.5)),
    "contrastive_m": (kd.losses.contrastive_loss, ref_contrastive,
                      dict(pos_margin=0.3, neg_margin=1.2)),
    "ms": (kd.losses.multi_similarity_loss, ref_multi_similarity,
           dict(alpha=2.0, beta=50.0, base=0.5, epsilon=0.1)),
    "ms_eps0.3": (kd.losses.multi_similarity_loss, ref_multi_similarity,
                  dict(alpha=3.0, beta=20.0, base=0.4, epsilon=0.3)),
    "ms_nomining": (kd.losses.multi_similarity_loss, ref_multi_similarity,
                    dict(alpha=2.0, beta=50.0, base=0.5, epsilon=None)),
    "npair": (kd.losses.npair_loss, ref_npair, {}),
    "lifted": (kd.losses.lifted_structure_loss, ref_lifted,
               dict(neg_margin=1.0, pos_margin=0.0)),
    "lifted_m": (kd.losses.lifted_structure_loss, ref_lifted,
                 dict(neg_margin=0.7, pos_margin=0.2)),
}

# Batches with several classes of several samples, some with singletons.
COMPOSITIONS = {
    "mixed_with_singletons": [0, 0, 0, 1, 1, 1, 2, 2, 3, 4],
    "shuffled": [2, 0, 1, 0, 2, 1, 1, 0, 2, 3],
    "pairs": [5, 5, 7, 7, 1, 1, 9, 9],
}
SEEDS = (0, 1, 2)


def _embeddings(seed, labels, dim=4):
    """Random embeddings; half the seeds loosely clustered by class."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(len(labels), dim))
    if seed % 2:
        centres = rng.normal(size=(max(labels) + 1, dim))
        emb = emb * 0.6 + 1.5 * centres[np.asarray(labels)]
    # Representable in float32: both dtypes see the same input.
    return emb.astype(np.float32).astype(np.float64)


def _value_and_grad(fn, labels, emb, kwargs):
    value, (grad,) = value_and_grads(
        lambda x: fn(tensor(np.asarray(labels, np.int32)), x, **kwargs), emb)
    return value, grad


def _fd_grad(ref, labels, emb, kwargs, h=1e-6):
    return finite_difference_grad(lambda e: ref(labels, e.tolist(), **kwargs), emb, h)


@pytest.mark.parametrize("name", sorted(CASES))
def test_value_and_gradient_match_reference(name):
    fn, ref, kwargs = CASES[name]
    nonzero = 0
    for comp, labels in COMPOSITIONS.items():
        for seed in SEEDS:
            emb = _embeddings(seed, labels)
            expected = ref(labels, emb.tolist(), **kwargs)
            expected_grad = _fd_grad(ref, labels, emb, kwargs)
            lab = tensor(np.asarray(labels, np.int32))
            for dtype in DTYPES:
                check_value_and_grad(lambda x: fn(lab, x, **kwargs), [emb],
                                     expected, [expected_grad], dtype,
                                     f"{name} {comp} seed {seed}")
            nonzero += expected != 0
    # The cases must exercise the loss, not only its empty branch.
    assert nonzero >= len(COMPOSITIONS) * len(SEEDS) - 2


def _zero_case(fn, labels, emb, kwargs):
    value, grad = _value_and_grad(fn, labels, emb, kwargs)
    assert value == 0.0
    assert np.all(grad == 0.0)


# Degenerate batches: which losses vanish on them (with a zero gradient).
ALL_SINGLETONS = list(range(8))
SINGLE_CLASS = [3] * 8


@pytest.mark.parametrize("name", ["triplet_semihard", "triplet_hard",
                                  "triplet_all", "ms", "ms_eps0.3", "npair",
                                  "lifted", "lifted_m"])
def test_all_singletons_give_zero(name):
    fn, ref, kwargs = CASES[name]
    emb = _embeddings(0, ALL_SINGLETONS)
    assert ref(ALL_SINGLETONS, emb.tolist(), **kwargs) == 0.0
    _zero_case(fn, ALL_SINGLETONS, emb, kwargs)


@pytest.mark.parametrize("name", ["triplet_semihard", "triplet_hard",
                                  "triplet_all", "ms", "ms_eps0.3", "npair",
                                  "lifted", "lifted_m"])
def test_single_class_gives_zero(name):
    fn, ref, kwargs = CASES[name]
    emb = _embeddings(1, SINGLE_CLASS)
    assert ref(SINGLE_CLASS, emb.tolist(), **kwargs) == pytest.approx(0.0, abs=1e-12)
    value, grad = _value_and_grad(fn, SINGLE_CLASS, emb, kwargs)
    # N-pair on one class is one pair: cross-entropy of a 1x1 logit matrix.
    np.testing.assert_allclose(value, 0.0, atol=1e-12)
    np.testing.assert_allclose(grad, 0.0, atol=1e-12)


@pytest.mark.parametrize("name", ["contrastive", "contrastive_m", "ms_nomining"])
def test_degenerate_batches_with_one_kind_of_pair(name):
    """Contrastive / unmined MS keep the terms of the pairs that exist."""
    fn, ref, kwargs = CASES[name]
    for labels in (ALL_SINGLETONS, SINGLE_CLASS):
        emb = _embeddings(2, labels)
        expected = ref(labels, emb.tolist(), **kwargs)
        value, grad = _value_and_grad(fn, labels, emb, kwargs)
        np.testing.assert_allclose(value, expected, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(grad, _fd_grad(ref, labels, emb, kwargs),
                                   rtol=1e-5, atol=1e-6)


def test_contrastive_all_terms_inactive_gives_zero_gradient():
    # Two classes far apart on the unit circle, each class at one point:
    # positive distances 0 (loss 0) and negative distances 2 > neg_margin.
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])
    _zero_case(kd.losses.contrastive_loss, [0, 0, 1, 1], emb, {})


def test_multi_similarity_pml_quirk_one_pair_of_each():
    """The miner keeps exactly one positive and one negative pair -> 0 (PML)."""
    angles = [0.0, 0.5, -0.52]            # anchor 0 sees both others alike
    emb = np.array([[math.cos(t), math.sin(t)] for t in angles])
    labels = [0, 0, 1]
    _, kept_pos, kept_neg = ref_ms_pairs(labels, emb.tolist(), 0.1)
    assert kept_pos == [(0, 1)] and kept_neg == [(0, 2)]
    # Without the quirk the formula would not vanish.
    assert ref_multi_similarity(labels, emb.tolist(), pml_quirk=False) > 0.01
    _zero_case(kd.losses.multi_similarity_loss, labels, emb, {})


def test_multi_similarity_pairs_match_reference_miner():
    for seed in SEEDS:
        labels = COMPOSITIONS["shuffled"]
        emb = _embeddings(seed, labels)
        s = kd.ops.cosine_similarity(tensor(emb))
        kept_pos, kept_neg = kd.losses.multi_similarity_pairs(
            tensor(np.asarray(labels, np.int32)), s, 0.1)
        _, ref_pos, ref_neg = ref_ms_pairs(labels, emb.tolist(), 0.1)
        assert sorted(map(tuple, np.argwhere(to_numpy(kept_pos)))) == sorted(ref_pos)
        assert sorted(map(tuple, np.argwhere(to_numpy(kept_neg)))) == sorted(ref_neg)
        assert ref_pos and ref_neg


@pytest.mark.parametrize("name", sorted(CASES))
def test_coinciding_and_zero_embeddings_stay_finite(name):
    fn, ref, kwargs = CASES[name]
    labels = [0, 0, 1, 1, 2, 2, 0]
    emb = _embeddings(3, labels)
    emb[1] = emb[0]          # same class, same point: distance 0
    emb[3] = emb[0]          # other class, same point
    emb[5] = emb[4]
    value, grad = _value_and_grad(fn, labels, emb, kwargs)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, ref(labels, emb.tolist(), **kwargs),
                               rtol=1e-7, atol=1e-7)
    emb[6] = 0.0             # an all-zero embedding
    value, grad = _value_and_grad(fn, labels, emb, kwargs)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


# ------------------------------------------------- Keras classes and config
CLASSES = {
    "TripletLoss": (kd.losses.TripletLoss,
                    dict(margin=0.2, mining="hard", block_size=3),
                    "triplet_loss", ref_triplet),
    "ContrastiveLoss": (kd.losses.ContrastiveLoss,
                        dict(pos_margin=0.1, neg_margin=0.8),
                        "contrastive_loss", ref_contrastive),
    "MultiSimilarityLoss": (kd.losses.MultiSimilarityLoss,
                            dict(alpha=3.0, beta=40.0, base=0.4, epsilon=0.2),
                            "multi_similarity_loss", ref_multi_similarity),
    "NPairLoss": (kd.losses.NPairLoss, {}, "npair_loss", ref_npair),
    "LiftedStructureLoss": (kd.losses.LiftedStructureLoss,
                            dict(neg_margin=0.8, pos_margin=0.1),
                            "lifted_structure_loss", ref_lifted),
}


def test_defaults_are_the_authors_configuration():
    assert kd.losses.TripletLoss().get_config()["margin"] == 0.1
    assert kd.losses.TripletLoss().mining == "semihard"
    c = kd.losses.ContrastiveLoss()
    assert (c.pos_margin, c.neg_margin) == (0.0, 0.5)
    m = kd.losses.MultiSimilarityLoss()
    assert (m.alpha, m.beta, m.base, m.epsilon) == (2.0, 50.0, 0.5, 0.1)
    lifted = kd.losses.LiftedStructureLoss()
    assert (lifted.neg_margin, lifted.pos_margin) == (1.0, 0.0)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_class_matches_reference_with_label_shapes(name):
    cls, kwargs, _, ref = CLASSES[name]
    labels = COMPOSITIONS["shuffled"]
    emb = _embeddings(1, labels)
    expected = ref(labels, emb.tolist(), **kwargs)
    assert expected != 0
    loss64 = cls(**kwargs, dtype="float64")
    for y in (np.array(labels), np.array(labels)[:, None],
              np.array(labels, np.float32)):
        np.testing.assert_allclose(to_numpy(loss64(y, emb)), expected, rtol=1e-9)
    loss32 = cls(**kwargs)
    out = loss32(np.array(labels), emb.astype(np.float32))
    assert kd.ops.dtype_of(out) == "float32"
    np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-5, atol=1e-6)


NOT_COMPILED = pytest.mark.skipif(
    BACKEND == "torch", reason="PyTorch runs eagerly: no XLA / jax.jit form")


@NOT_COMPILED
@pytest.mark.parametrize("name", sorted(CLASSES))
def test_compiled_matches_eager(name):
    """XLA under TensorFlow, jax.jit under JAX."""
    cls, kwargs, _, _ = CLASSES[name]
    loss = cls(**kwargs)
    labels = np.array(COMPOSITIONS["mixed_with_singletons"])
    emb = _embeddings(0, labels).astype(np.float32)
    fn = compiled(lambda y, x: loss(y, x))
    np.testing.assert_allclose(to_numpy(fn(tensor(labels), tensor(emb))),
                               to_numpy(loss(labels, emb)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_config_round_trip_and_serialization(name):
    cls, kwargs, default_name, _ = CLASSES[name]
    loss = cls(**kwargs)
    config = loss.get_config()
    assert config["name"] == default_name
    for key, value in kwargs.items():
        assert config[key] == value
    clone = cls.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss))
    assert type(restored) is cls and restored.get_config() == config
    labels = np.array(COMPOSITIONS["pairs"])
    emb = _embeddings(1, labels).astype(np.float32)
    assert (float(to_numpy(restored(labels, emb)))
            == pytest.approx(float(to_numpy(loss(labels, emb)))))


@pytest.mark.parametrize("name", ["TripletLoss", "MultiSimilarityLoss"])
def test_compile_fit_save_load(name, tmp_path):
    cls, kwargs, _, _ = CLASSES[name]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = np.repeat(np.arange(4), 4)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5)])
    model.compile(optimizer="sgd", loss=cls(**kwargs))
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.loss) is cls
    assert loaded.loss.get_config() == model.loss.get_config()


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_bad_inputs_raise(name):
    cls, kwargs, _, _ = CLASSES[name]
    loss = cls(**kwargs)
    labels = np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="shape"):
        loss(labels, np.zeros((4, 3, 2), np.float32))
    with pytest.raises(ValueError, match="shape"):
        loss(labels, np.zeros((4,), np.float32))
    with pytest.raises(ValueError, match="batch sizes"):
        loss(labels, np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="class ids"):
        loss(np.zeros((4, 2)), np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="sample_weight"):
        loss(labels, np.zeros((4, 3), np.float32), sample_weight=np.ones(4))


def test_triplet_rejects_unknown_mining():
    with pytest.raises(ValueError, match="mining"):
        kd.losses.TripletLoss(mining="easy")
    with pytest.raises(ValueError, match="mining"):
        kd.losses.triplet_loss(tensor([0, 0, 1]), np.ones((3, 2), np.float32),
                               mining="semi-hard")


@pytest.mark.parametrize("name", sorted(CLASSES))
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_is_finite_and_close(name, dtype):
    cls, kwargs, _, _ = CLASSES[name]
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=32)
    emb = rng.normal(size=(32, 16))
    reference = float(to_numpy(cls(**kwargs, dtype="float64")(labels, emb)))
    loss = cls(**kwargs, dtype=dtype)
    assert kd.ops.dtype_of(loss(labels, kops.cast(tensor(emb), dtype))) == dtype
    # Gradient with respect to a float32 input cast to the 16-bit dtype.
    value, (grad,) = value_and_grads(
        lambda x: kops.cast(loss(labels, kops.cast(x, dtype)), "float32"),
        emb.astype(np.float32))
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(float(value), reference, rtol=3e-2)


# ------------------------------------------- TripletLoss anchor blocks
def _triplet_value_and_grad(labels, emb, **kwargs):
    return _value_and_grad(kd.losses.triplet_loss, labels, emb, kwargs)


@pytest.mark.parametrize("mining", ["semihard", "hard", "all"])
def test_triplet_blocks_give_the_same_value_and_gradient(mining):
    # 20 samples, 5 classes, loosely clustered: every mining keeps triplets.
    labels = [i % 5 for i in range(20)]
    b = len(labels)
    for seed in (1, 3):
        emb = _embeddings(seed, labels, dim=6)
        whole, whole_grad = _triplet_value_and_grad(labels, emb, mining=mining,
                                                    block_size=b)
        expected = ref_triplet(labels, emb.tolist(), mining=mining)
        assert expected > 0
        np.testing.assert_allclose(whole, expected, rtol=1e-12)
        assert np.any(whole_grad != 0)
        # Block sizes dividing B, not dividing it (padded last block), the
        # automatic one and one larger than the batch.
        for block in (1, 3, 4, 6, 7, 19, None, 64):
            value, grad = _triplet_value_and_grad(labels, emb, mining=mining,
                                                  block_size=block)
            np.testing.assert_allclose(value, whole, rtol=1e-13, atol=0,
                                       err_msg=f"block {block}")
            np.testing.assert_allclose(grad, whole_grad, rtol=1e-12, atol=1e-15,
                                       err_msg=f"grad block {block}")


def test_triplet_blocks_empty_block_and_no_triplet():
    # Anchors 0-3 are singletons (no triplet in their blocks of 2); the last
    # block is padded. No kept triplet at all: 0 with a zero gradient.
    labels = [0, 1, 2, 3, 4, 4, 5, 5, 6]
    emb = _embeddings(1, labels)
    for block in (2, 4, None):
        value, grad = _triplet_value_and_grad(labels, emb, mining="all",
                                              block_size=block)
        np.testing.assert_allclose(value, ref_triplet(labels, emb.tolist(), mining="all"),
                                   rtol=1e-12)
    value, grad = _triplet_value_and_grad([0, 1, 2, 3], emb[:4], block_size=3)
    assert value == 0.0 and np.all(grad == 0.0)


def _compiled_value_and_grad(fn):
    """``x -> (fn(x), dfn/dx)`` compiled: XLA under TensorFlow, jax.jit under
    JAX (None under PyTorch)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = fn(x)
            return value, tape.gradient(value, x)
        return tf.function(step, jit_compile=True)
    if BACKEND == "jax":
        import jax
        return jax.jit(jax.value_and_grad(fn))
    return None


@NOT_COMPILED
def test_triplet_blocks_compiled_matches_eager():
    labels = np.array([i % 6 for i in range(22)])
    emb = _embeddings(1, labels, dim=8).astype(np.float32)
    for block in (5, None):
        loss = kd.losses.TripletLoss(mining="semihard", block_size=block)
        fn = lambda x: loss(tensor(labels), x)        # noqa: E731
        eager = value_and_grads(fn, emb)
        value, grad = _compiled_value_and_grad(fn)(tensor(emb))
        assert float(eager[0]) > 0
        np.testing.assert_allclose(to_numpy(value), eager[0], rtol=1e-5)
        np.testing.assert_allclose(to_numpy(grad), eager[1][0], rtol=1e-4, atol=1e-7)


@pytest.mark.skipif(BACKEND != "tensorflow",
                    reason="an unknown static batch size exists only in "
                           "TensorFlow graphs (JAX and PyTorch shapes are concrete)")
def test_triplet_unknown_batch_size_in_graph():
    import tensorflow as tf
    labels = np.array([i % 4 for i in range(13)])
    emb = _embeddings(3, labels).astype(np.float32)
    loss = kd.losses.TripletLoss(mining="all", block_size=4)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32),
                                  tf.TensorSpec([None, 4], tf.float32)])
    def step(y, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = loss(y, x)
        return value, tape.gradient(value, x)

    value, grad = step(labels, emb)
    np.testing.assert_allclose(float(value), ref_triplet(labels.tolist(), emb.tolist(),
                                                         mining="all"), rtol=1e-5)
    _, whole_grad = _triplet_value_and_grad(labels.tolist(), emb.astype(np.float64),
                                            mining="all", block_size=13)
    np.testing.assert_allclose(grad.numpy(), whole_grad, rtol=1e-4, atol=1e-6)


def _largest_traced_tensor(fn, labels, emb):
    """Elements of the largest tensor that the loss and its gradient create,
    forward and backward (``backend_tools.largest_tensor``: the TensorFlow
    graph or the JAX jaxpr), or under PyTorch the total of the tensors saved
    for backward (each one lives until the backward pass, so they add up)."""
    if BACKEND != "torch":
        return largest_tensor(fn, labels, emb)
    import torch
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    x = torch.tensor(emb, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn(torch.tensor(labels), x)
    loss.backward()
    return sum(saved)


@pytest.mark.parametrize("block", [4, None])
def test_triplet_memory_is_bounded_by_a_block(block):
    # B = 160: the automatic block is 1M // B^2 = 40 anchors (< B).
    b, dim = 160, 8
    labels = np.repeat(np.arange(b // 4), 4).astype(np.int32)
    f = _embeddings(1, labels, dim=dim).astype(np.float32)

    def fn(y, x):
        return kd.losses.TripletLoss(mining="all", block_size=block)(y, x)

    biggest = _largest_traced_tensor(fn, labels, f)
    block_elems = (block or 40) * b * b
    if BACKEND == "torch":
        # All saved tensors together: a few [B, B]-sized ones (distances,
        # masks, the gradient) and at most one block, not all B / block
        # blocks (B^3 elements).
        assert biggest <= block_elems + 16 * b * b < b ** 3, (biggest, block_elems, b ** 3)
    else:
        assert biggest == block_elems, (
            f"largest tensor has {biggest} elements (block*B^2 = {block_elems}, "
            f"B^3 = {b ** 3})")
    assert np.isfinite(float(to_numpy(fn(tensor(labels), tensor(f)))))


def test_triplet_bad_block_size():
    with pytest.raises(ValueError, match="block_size"):
        kd.losses.TripletLoss(block_size=0)
    with pytest.raises(ValueError, match="block_size"):
        kd.losses.triplet_loss(tensor([0, 0, 1]), np.ones((3, 2), np.float32),
                               block_size=-1)
    assert kd.losses.TripletLoss().get_config()["block_size"] is None


def test_float16_counts_past_65504_triplets_stay_finite():
    """Hundreds of thousands of active triplets: the count must not overflow
    float16 (max 65504); sums and counts accumulate in float32."""
    rng = np.random.default_rng(0)
    labels = tensor(np.repeat(np.arange(30), 6).astype(np.int32))   # B = 180
    emb = rng.normal(size=(180, 16)).astype(np.float32)
    ref = float(to_numpy(kd.losses.triplet_loss(labels, tensor(emb), mining="all")))
    low = kd.losses.triplet_loss(labels, kops.cast(tensor(emb), "float16"), mining="all")
    assert kd.ops.dtype_of(low) == "float16"
    value, (grad,) = value_and_grads(
        lambda x: kops.cast(kd.losses.triplet_loss(labels, kops.cast(x, "float16"),
                                                   mining="all"), "float32"), emb)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(float(value), ref, rtol=2e-2)
    contrastive = kd.losses.contrastive_loss(labels, kops.cast(tensor(emb), "float16"))
    np.testing.assert_allclose(
        float(to_numpy(kops.cast(contrastive, "float32"))),
        float(to_numpy(kd.losses.contrastive_loss(labels, tensor(emb)))), rtol=2e-2)
