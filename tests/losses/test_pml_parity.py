"""keras_dml losses against the real pytorch-metric-learning (PML).

PML is configured as the Proxy Anchor authors configure it
(github.com/tjddus9597/Proxy-Anchor-CVPR2020, code/losses.py); the lifted
structure loss, absent there, uses PML's defaults. Values and gradients with
respect to the embeddings (and proxies) are compared in float64.
Outside CI these tests skip where torch or pytorch-metric-learning is not
installed; under CI=true a missing reference fails the run (``references``).
Backend-neutral: keras_dml runs on the Keras backend in use (inputs numpy,
outputs compared as numpy); PML always runs on PyTorch.
"""

import math

import numpy as np
import pytest

from backend_tools import float64, tensor, to_numpy, value_and_grads
from references import reference  # noqa: E402

pytestmark = pytest.mark.backends

torch = reference("torch", "pytorch-metric-learning parity")
pml = reference("pytorch_metric_learning", "pytorch-metric-learning parity")
from pytorch_metric_learning import distances as pml_distances  # noqa: E402
from pytorch_metric_learning import losses as pml_losses  # noqa: E402
from pytorch_metric_learning import miners as pml_miners  # noqa: E402

import keras_dml as kd  # noqa: E402

ATOL = 1e-6


@pytest.fixture(autouse=True)
def _float64():
    with float64():
        yield


def _pml_triplet(mining, margin=0.1):
    miner = pml_miners.TripletMarginMiner(margin, type_of_triplets=mining)
    loss = pml_losses.TripletMarginLoss(margin=margin)
    return lambda emb, lab: loss(emb, lab, miner(emb, lab))


def _pml_ms(alpha=2, beta=50, base=0.5, epsilon=0.1):
    loss = pml_losses.MultiSimilarityLoss(alpha, beta, base)
    if epsilon is None:
        return loss
    miner = pml_miners.MultiSimilarityMiner(epsilon=epsilon)
    return lambda emb, lab: loss(emb, lab, miner(emb, lab))


# name -> (PML callable(embeddings, labels), keras_dml loss)
PAIRS = {
    "triplet_semihard": (_pml_triplet("semihard"),
                         kd.losses.TripletLoss(0.1, "semihard", dtype="float64")),
    "triplet_hard": (_pml_triplet("hard"),
                     kd.losses.TripletLoss(0.1, "hard", dtype="float64")),
    "triplet_all": (_pml_triplet("all"),
                    kd.losses.TripletLoss(0.1, "all", dtype="float64")),
    "triplet_all_m0.2": (_pml_triplet("all", 0.2),
                         kd.losses.TripletLoss(0.2, "all", dtype="float64")),
    "contrastive": (pml_losses.ContrastiveLoss(neg_margin=0.5),
                    kd.losses.ContrastiveLoss(dtype="float64")),
    "contrastive_m": (pml_losses.ContrastiveLoss(pos_margin=0.2, neg_margin=1.0),
                      kd.losses.ContrastiveLoss(0.2, 1.0, dtype="float64")),
    "ms": (_pml_ms(), kd.losses.MultiSimilarityLoss(dtype="float64")),
    "ms_eps0.3": (_pml_ms(3, 20, 0.4, 0.3),
                  kd.losses.MultiSimilarityLoss(3., 20., 0.4, 0.3, dtype="float64")),
    "ms_nomining": (_pml_ms(epsilon=None),
                    kd.losses.MultiSimilarityLoss(epsilon=None, dtype="float64")),
    # The authors' NPairsLoss(normalize_embeddings=False), in PML 2.x terms.
    "npair": (pml_losses.NPairsLoss(
        distance=pml_distances.DotProductSimilarity(normalize_embeddings=False)),
        kd.losses.NPairLoss(dtype="float64")),
    "lifted": (pml_losses.LiftedStructureLoss(neg_margin=1, pos_margin=0),
               kd.losses.LiftedStructureLoss(dtype="float64")),
    "lifted_m": (pml_losses.LiftedStructureLoss(neg_margin=0.8, pos_margin=0.1),
                 kd.losses.LiftedStructureLoss(0.8, 0.1, dtype="float64")),
}


def _batch(seed, batch=32, dim=8, classes=6):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=batch)
    emb = rng.normal(size=(batch, dim))
    if seed % 2:   # loosely clustered, so that mining has work to do
        emb = 0.7 * emb + 1.2 * rng.normal(size=(classes, dim))[labels]
    return labels, emb


def _pml_value_and_grad(fn, labels, emb):
    x = torch.tensor(emb, dtype=torch.float64, requires_grad=True)
    value = fn(x, torch.tensor(labels, dtype=torch.long))
    if value.requires_grad:
        value.backward()
        grad = x.grad.numpy() if x.grad is not None else np.zeros_like(emb)
    else:
        grad = np.zeros_like(emb)
    return float(value.detach()), grad


def _kd_value_and_grad(loss, labels, emb):
    value, (grad,) = value_and_grads(lambda x: loss(tensor(labels), x),
                                     np.asarray(emb, np.float64))
    return float(value), grad


def _check(name, labels, emb):
    pml_fn, kd_loss = PAIRS[name]
    expected, expected_grad = _pml_value_and_grad(pml_fn, labels, emb)
    value, grad = _kd_value_and_grad(kd_loss, labels, emb)
    np.testing.assert_allclose(value, expected, rtol=1e-6, atol=ATOL,
                               err_msg=name)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=ATOL,
                               err_msg=name + " gradient")
    return expected


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_pair_loss_equals_pml(name):
    values = [_check(name, *_batch(seed)) for seed in range(6)]
    assert sum(v != 0 for v in values) >= 5, values


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_pair_loss_equals_pml_on_degenerate_batches(name):
    rng = np.random.default_rng(7)
    emb = rng.normal(size=(6, 5))
    for labels in ([0, 1, 2, 3, 4, 5], [2] * 6, [0, 0, 1, 2, 3, 4]):
        _check(name, np.array(labels), emb)


def test_multi_similarity_quirk_equals_pml():
    # Anchor 0 keeps one positive and one negative pair, nothing else is kept:
    # PML's GenericPairLoss then returns 0.
    angles = [0.0, 0.5, -0.52]
    emb = np.array([[math.cos(t), math.sin(t)] for t in angles])
    assert _check("ms", np.array([0, 0, 1]), emb) == 0.0


def test_npair_with_authors_normalize_false_is_not_cosine():
    """Guard the configuration: PML's default DotProductSimilarity normalises."""
    labels, emb = _batch(1)
    emb = emb * 3.0
    default = pml_losses.NPairsLoss()
    expected, _ = _pml_value_and_grad(default, labels, emb)
    ours = float(to_numpy(kd.losses.NPairLoss(dtype="float64")(labels, emb)))
    assert abs(ours - expected) > 1e-3


# ------------------------------------------------------------ proxy losses
def _proxy_case(seed, batch=24, dim=8, classes=5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=batch)
    emb = rng.normal(size=(batch, dim))
    return labels, emb, rng


def _kd_proxy_value_and_grads(loss, labels, emb, proxies):
    value, (gx, gw) = value_and_grads(
        lambda x, w: loss(tensor(labels), kd.ops.cosine_similarity(x, w)),
        np.asarray(emb, np.float64), np.asarray(proxies, np.float64))
    return float(value), gx, gw


def _torch_value_and_grads(pml_loss, param, labels, emb):
    x = torch.tensor(emb, dtype=torch.float64, requires_grad=True)
    value = pml_loss(x, torch.tensor(labels, dtype=torch.long))
    value.backward()
    return float(value.detach()), x.grad.numpy(), param.grad.numpy()


def _proxy_anchor_labels(case, rng, batch, classes):
    """Batch compositions: every class present, a class absent, a class with a
    single sample, and a batch of one class."""
    if case == "random":
        return rng.permutation(np.arange(batch) % classes)
    if case == "absent_class":           # class classes-1 never appears
        return rng.integers(0, classes - 1, size=batch)
    if case == "singleton_class":        # class 0 has exactly one sample
        labels = rng.integers(1, classes, size=batch)
        labels[rng.integers(batch)] = 0
        return labels
    return np.full(batch, 2)             # "one_class"


@pytest.mark.parametrize("case", ["random", "absent_class", "singleton_class",
                                  "one_class"])
@pytest.mark.parametrize("seed", [0, 1])
def test_proxy_anchor_equals_pml(case, seed):
    """PML ProxyAnchorLoss(num_classes, dim, margin=0.1, alpha=32): the loss,
    d/d embeddings and d/d proxies, float64."""
    rng = np.random.default_rng(seed)
    batch, classes, dim = 20, 6, 8
    labels = _proxy_anchor_labels(case, rng, batch, classes)
    proxies = rng.normal(size=(classes, dim))
    # Embeddings near their proxies so both terms and the margins matter.
    emb = proxies[labels] + 0.8 * rng.normal(size=(batch, dim))
    pml_loss = pml_losses.ProxyAnchorLoss(classes, dim, margin=0.1, alpha=32)
    pml_loss.proxies.data = torch.tensor(proxies, dtype=torch.float64)
    expected, gx, gw = _torch_value_and_grads(pml_loss, pml_loss.proxies,
                                              labels, emb)
    value, kx, kw = _kd_proxy_value_and_grads(
        kd.losses.ProxyAnchorLoss(alpha=32.0, margin=0.1, dtype="float64"),
        labels, emb, proxies)
    assert expected > 0
    np.testing.assert_allclose(value, expected, rtol=1e-6, atol=ATOL)
    np.testing.assert_allclose(kx, gx, rtol=1e-5, atol=ATOL)
    np.testing.assert_allclose(kw, gw, rtol=1e-5, atol=ATOL)
    if case == "absent_class":
        # An absent class's proxy is only pushed away (negative term).
        assert np.any(kw[classes - 1] != 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_proxy_nca_equals_pml(seed):
    labels, emb, rng = _proxy_case(seed)
    classes, dim = 5, emb.shape[1]
    proxies = rng.normal(size=(classes, dim))
    pml_loss = pml_losses.ProxyNCALoss(classes, dim, softmax_scale=32)
    pml_loss.proxies.data = torch.tensor(proxies, dtype=torch.float64)
    expected, gx, gw = _torch_value_and_grads(pml_loss, pml_loss.proxies,
                                              labels, emb)
    value, kx, kw = _kd_proxy_value_and_grads(
        kd.losses.ProxyNCALoss(scale=32.0, dtype="float64"), labels, emb, proxies)
    np.testing.assert_allclose(value, expected, rtol=1e-6, atol=ATOL)
    np.testing.assert_allclose(kx, gx, rtol=1e-5, atol=ATOL)
    np.testing.assert_allclose(kw, gw, rtol=1e-5, atol=ATOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_triple_equals_pml(seed):
    labels, emb, rng = _proxy_case(seed)
    classes, k, dim = 5, 10, emb.shape[1]
    fc = rng.normal(size=(dim, classes * k))          # PML layout: [D, C*K]
    pml_loss = pml_losses.SoftTripleLoss(classes, dim, centers_per_class=k,
                                         la=20, gamma=0.1, margin=0.01)
    pml_loss.fc.data = torch.tensor(fc, dtype=torch.float64)
    expected, gx, gw = _torch_value_and_grads(pml_loss, pml_loss.fc, labels, emb)
    value, kx, kw = _kd_proxy_value_and_grads(
        kd.losses.SoftTripleLoss(centers_per_class=k, la=20.0, gamma=0.1,
                                 margin=0.01, dtype="float64"),
        labels, emb, fc.T)                            # rows c*K + k
    np.testing.assert_allclose(value, expected, rtol=1e-6, atol=ATOL)
    np.testing.assert_allclose(kx, gx, rtol=1e-5, atol=ATOL)
    np.testing.assert_allclose(kw, gw.T, rtol=1e-5, atol=ATOL)
