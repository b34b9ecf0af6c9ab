"""ArcFace, CosFace, Sub-center ArcFace and Circle: slow numpy references
written from the formulas (values and finite-difference gradients), parity
with pytorch-metric-learning (PML), 16-bit inputs and XLA / jax.jit.

Backend-neutral: keras_dml runs on the Keras backend in use; PML always
runs on PyTorch.
"""

import math

import numpy as np
import pytest
from keras import ops as kops

import keras_dml as kd
from backend_tools import compiled, float64, tensor, to_numpy, value_and_grads
from finite_difference import finite_difference_grad
from loss_cases import DTYPES, check_value_and_grad
from references import reference

pytestmark = pytest.mark.backends


@pytest.fixture(autouse=True)
def _float64():
    with float64():
        yield


# ---------------------------------------------------------------- references
def _lse(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def ref_margin_softmax(labels, cos, target, scale):
    total = 0.0
    for i, y in enumerate(labels):
        z = [scale * (target(cos[i, c]) if c == y else cos[i, c])
             for c in range(cos.shape[1])]
        total += _lse(z) - z[y]
    return total / len(labels)


def arc_target(c, margin_degrees=28.6):
    m = math.radians(margin_degrees)
    theta = math.acos(min(max(c, -1.0), 1.0))
    return math.cos(theta + m) if theta <= math.pi - m else c - m * math.sin(m)


def ref_arcface(labels, cos, margin=28.6, scale=64.0):
    return ref_margin_softmax(labels, cos, lambda c: arc_target(c, margin), scale)


def ref_cosface(labels, cos, margin=0.35, scale=64.0):
    return ref_margin_softmax(labels, cos, lambda c: c - margin, scale)


def ref_subcenter(labels, cos, k, margin=28.6, scale=64.0):
    per_class = np.array([[max(cos[i, c * k + j] for j in range(k))
                           for c in range(cos.shape[1] // k)]
                          for i in range(cos.shape[0])])
    return ref_arcface(labels, per_class, margin, scale)


def _cosines(emb):
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    return unit @ unit.T


def ref_circle(labels, emb, m=0.4, gamma=80.0, frozen=None):
    """Circle loss; the weights a_p, a_n from ``frozen`` (the point the
    gradient is taken at: they carry no gradient)."""
    s = _cosines(emb)
    s0 = _cosines(emb if frozen is None else frozen)
    losses, num_pos, num_neg = [], 0, 0
    for i in range(len(labels)):
        lp = [-gamma * max(1 + m - s0[i, j], 0) * (s[i, j] - (1 - m))
              for j in range(len(labels)) if j != i and labels[j] == labels[i]]
        ln = [gamma * max(s0[i, j] + m, 0) * (s[i, j] - m)
              for j in range(len(labels)) if labels[j] != labels[i]]
        num_pos, num_neg = num_pos + len(lp), num_neg + len(ln)
        losses.append(float(np.logaddexp(0, _lse(lp) + _lse(ln)))
                      if lp and ln else 0.0)
    if num_pos <= 1 and num_neg <= 1:
        return 0.0
    active = [v for v in losses if v > 0]
    return sum(active) / len(active) if active else 0.0


def random_cosines(rng, batch, columns):
    emb = rng.normal(size=(batch, 6))
    prox = rng.normal(size=(columns, 6))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    prox /= np.linalg.norm(prox, axis=1, keepdims=True)
    return (emb @ prox.T).astype(np.float32).astype(np.float64)


CASES = {"random": [0, 1, 2, 3, 4, 5, 0, 1, 2, 3],
         "absent_class": [0, 0, 1, 1, 2, 2, 3, 3],
         "one_class": [2] * 6}
PROXY = {
    "arcface": (kd.losses.arcface_loss, ref_arcface, 1),
    "arcface_m10_s16": (lambda y, c: kd.losses.arcface_loss(y, c, 10.0, 16.0),
                        lambda y, c: ref_arcface(y, c, 10.0, 16.0), 1),
    "cosface": (kd.losses.cosface_loss, ref_cosface, 1),
    "subcenter_arcface": (lambda y, c: kd.losses.subcenter_arcface_loss(y, c, 3),
                          lambda y, c: ref_subcenter(y, c, 3), 3),
}


@pytest.mark.parametrize("loss_name", sorted(PROXY))
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_proxy_value_and_gradient_match_reference(loss_name, case, seed):
    fn, ref, k = PROXY[loss_name]
    labels = np.array(CASES[case], np.int32)
    cos = random_cosines(np.random.default_rng(seed), len(labels), 6 * k)
    expected = ref(labels, cos)
    expected_grad = finite_difference_grad(lambda c: ref(labels, c), cos)
    for dtype in DTYPES:
        check_value_and_grad(lambda c: fn(tensor(labels), c), [cos], expected,
                             [expected_grad], dtype, f"{loss_name} {case}")


def test_arcface_beyond_pi_minus_margin_uses_the_decreasing_branch():
    # Target cosines below cos(pi - m) = -0.877: theta + m > pi, where
    # cos(theta + m) would increase again; PML switches to cos - m sin m.
    labels = np.array([0, 1, 2, 0], np.int32)
    cos = np.array([[-0.95, 0.1, 0.2], [0.3, -0.99, 0.0],
                    [0.5, 0.4, -0.9], [0.8, -0.2, 0.1]])
    expected = ref_arcface(labels, cos)
    expected_grad = finite_difference_grad(lambda c: ref_arcface(labels, c), cos)
    for dtype in DTYPES:
        check_value_and_grad(lambda c: kd.losses.arcface_loss(tensor(labels), c),
                             [cos], expected, [expected_grad], dtype, "arcface far")
    # The two branches differ there: the fallback is really taken.
    m = math.radians(28.6)
    assert abs(arc_target(-0.95) - math.cos(math.acos(-0.95) + m)) > 0.05


def test_arcface_gradient_is_finite_at_cosine_one():
    labels = np.array([0, 1], np.int32)
    cos = np.array([[1.0, 0.2], [-0.3, -1.0]])
    _, (grad,) = value_and_grads(
        lambda c: kd.losses.arcface_loss(tensor(labels), c), cos)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("case", ["random", "absent_class", "one_class", "singletons"])
@pytest.mark.parametrize("seed", [0, 1])
def test_circle_value_and_gradient_match_reference(case, seed):
    rng = np.random.default_rng(seed)
    labels = np.array({"singletons": [0, 1, 2, 3, 4, 5, 0]}.get(case, CASES.get(case)),
                      np.int32)
    emb = rng.normal(size=(len(labels), 5))
    expected = ref_circle(labels, emb)
    expected_grad = finite_difference_grad(
        lambda e: ref_circle(labels, e, frozen=emb), emb)
    for dtype in DTYPES:
        check_value_and_grad(lambda e: kd.losses.circle_loss(tensor(labels), e),
                             [emb], expected, [expected_grad], dtype, f"circle {case}")


# -------------------------------------------------------------------- PML
torch = reference("torch", "pytorch-metric-learning parity")
pml_losses = reference("pytorch_metric_learning.losses",
                       "pytorch-metric-learning parity")


def _pml_proxy(name, classes, dim, **kwargs):
    cls = {"arcface": pml_losses.ArcFaceLoss, "cosface": pml_losses.CosFaceLoss,
           "subcenter_arcface": pml_losses.SubCenterArcFaceLoss}[name]
    return cls(num_classes=classes, embedding_size=dim, **kwargs)


PML_PROXY = {   # name -> (PML name, PML kwargs, keras_dml loss, K)
    "arcface": ("arcface", {}, kd.losses.ArcFaceLoss(dtype="float64"), 1),
    "arcface_m20_s30": ("arcface", {"margin": 20.0, "scale": 30.0},
                        kd.losses.ArcFaceLoss(20.0, 30.0, dtype="float64"), 1),
    "cosface": ("cosface", {}, kd.losses.CosFaceLoss(dtype="float64"), 1),
    "cosface_m0.2_s10": ("cosface", {"margin": 0.2, "scale": 10.0},
                         kd.losses.CosFaceLoss(0.2, 10.0, dtype="float64"), 1),
    "subcenter_arcface": ("subcenter_arcface", {"sub_centers": 3},
                          kd.losses.SubCenterArcFaceLoss(dtype="float64"), 3),
}


@pytest.mark.parametrize("name", sorted(PML_PROXY))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_proxy_loss_equals_pml(name, seed):
    """Value, d/d embeddings and d/d proxies; PML's W = the proxies^T."""
    pml_name, kwargs, loss, k = PML_PROXY[name]
    rng = np.random.default_rng(seed)
    batch, classes, dim = 20, 5, 8
    labels = rng.integers(0, classes, size=batch)
    proxies = rng.normal(size=(classes * k, dim))
    emb = proxies[labels * k] + 1.5 * rng.normal(size=(batch, dim))
    if seed == 2:   # far from the proxies: ArcFace's theta + m > pi branch
        emb = -proxies[labels * k] + 0.1 * rng.normal(size=(batch, dim))
    pml = _pml_proxy(pml_name, classes, dim, **kwargs).to(torch.float64)
    pml.W.data = torch.tensor(proxies.T.copy(), dtype=torch.float64)
    x = torch.tensor(emb, dtype=torch.float64, requires_grad=True)
    expected = pml(x, torch.tensor(labels, dtype=torch.long))
    expected.backward()
    value, (gx, gw) = value_and_grads(
        lambda e, w: loss(tensor(labels), kd.ops.cosine_similarity(e, w)),
        emb, proxies)
    np.testing.assert_allclose(value, float(expected.detach()), rtol=1e-6)
    np.testing.assert_allclose(gx, x.grad.numpy(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(gw, pml.W.grad.numpy().T, rtol=1e-5, atol=1e-8)


def _pair_batch(seed, batch=32, dim=8, classes=6):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=batch)
    emb = rng.normal(size=(batch, dim))
    if seed % 2:
        emb = 0.7 * emb + 1.2 * rng.normal(size=(classes, dim))[labels]
    return labels, emb


@pytest.mark.parametrize("m,gamma", [(0.4, 80.0), (0.25, 256.0), (0.3, 10.0)])
def test_circle_equals_pml(m, gamma):
    pml = pml_losses.CircleLoss(m=m, gamma=gamma)
    loss = kd.losses.CircleLoss(m, gamma, dtype="float64")
    batches = [_pair_batch(seed) for seed in range(4)]
    rng = np.random.default_rng(9)
    emb6 = rng.normal(size=(6, 5))
    batches += [(np.array(l), emb6) for l in
                ([0, 1, 2, 3, 4, 5], [2] * 6, [0, 0, 1, 2, 3, 4], [0, 0, 1, 1, 2, 3])]
    for labels, emb in batches:
        x = torch.tensor(emb, dtype=torch.float64, requires_grad=True)
        expected = pml(x, torch.tensor(labels, dtype=torch.long))
        grad = np.zeros_like(emb)
        if expected.requires_grad:
            expected.backward()
            grad = x.grad.numpy() if x.grad is not None else grad
        value, (g,) = value_and_grads(lambda e: loss(tensor(labels), e), emb)
        np.testing.assert_allclose(value, float(expected.detach()), rtol=1e-6,
                                   atol=1e-9, err_msg=str(labels))
        np.testing.assert_allclose(g, grad, rtol=1e-5, atol=1e-8, err_msg=str(labels))


@pytest.mark.parametrize("threshold", [75.0, 40.0])
def test_subcenter_outliers_equal_pml(threshold):
    rng = np.random.default_rng(3)
    classes, k, dim, n = 5, 3, 6, 60
    labels = rng.integers(0, classes - 1, size=n)       # the last class absent
    proxies = rng.normal(size=(classes * k, dim))
    emb = proxies[labels * k + rng.integers(0, k, size=n)] + rng.normal(size=(n, dim))
    pml = pml_losses.SubCenterArcFaceLoss(num_classes=classes, embedding_size=dim,
                                          sub_centers=k).to(torch.float64)
    pml.W.data = torch.tensor(proxies.T.copy(), dtype=torch.float64)
    expected, expected_centers = pml.get_outliers(
        torch.tensor(emb), torch.tensor(labels), threshold=threshold)
    loss = kd.losses.SubCenterArcFaceLoss(sub_centers=k)
    outliers, centers = loss.get_outliers(emb, labels, proxies, threshold=threshold)
    np.testing.assert_array_equal(outliers, expected.numpy())
    assert 0 < len(outliers) < n
    present = np.unique(labels)
    np.testing.assert_allclose(centers[present], expected_centers.numpy().T[present])
    assert np.all(np.isnan(centers[classes - 1]))


def test_subcenter_outliers_refuse_bad_input():
    emb, labels = np.zeros((4, 3)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="multiple"):
        kd.losses.subcenter_outliers(emb + 1, labels, np.ones((5, 3)), 2)
    with pytest.raises(ValueError, match="labels"):
        kd.losses.subcenter_outliers(emb + 1, labels + 5, np.ones((4, 3)), 2)
    with pytest.raises(ValueError, match="NaN"):
        kd.losses.subcenter_outliers(emb * np.nan, labels, np.ones((4, 3)), 2)


# ------------------------------------------------ 16-bit inputs and XLA / jit
LOW = {"float16": 2e-2, "bfloat16": 1e-1}


@pytest.mark.parametrize("dtype", sorted(LOW))
@pytest.mark.parametrize("name", ["arcface", "cosface", "subcenter_arcface", "circle"])
def test_low_precision_is_finite_and_accurate(name, dtype):
    rng = np.random.default_rng(0)
    labels = np.arange(16) % 4
    loss = kd.losses.get(name, **({"sub_centers": 2} if name.startswith("sub") else {}))
    if name == "circle":
        x = rng.normal(size=(16, 8))
        ref = ref_circle
    else:
        x = random_cosines(rng, 16, 4 * loss.proxies_per_class)
        ref = {"arcface": ref_arcface, "cosface": ref_cosface,
               "subcenter_arcface": lambda y, c: ref_subcenter(y, c, 2)}[name]
    low = kops.cast(tensor(x), dtype)
    rounded = to_numpy(kops.cast(low, "float32")).astype(np.float64)
    expected = ref(labels, rounded)
    value = loss(labels, low)
    out = float(to_numpy(kops.cast(value, "float32")))
    assert np.isfinite(out) and expected > 0.5
    np.testing.assert_allclose(out, expected, rtol=LOW[dtype])
    _, (grad,) = value_and_grads(
        lambda c: kops.cast(loss(labels, kops.cast(c, dtype)), "float32"),
        rounded.astype("float32"))
    assert np.all(np.isfinite(np.asarray(grad, np.float32)))


@pytest.mark.parametrize("name", ["arcface", "cosface", "subcenter_arcface", "circle"])
def test_compiled_equals_eager(name):
    loss = kd.losses.get(name, **({"sub_centers": 2} if name.startswith("sub") else {}))
    fn = compiled(lambda a, b: loss(a, b))
    if fn is None:
        pytest.skip("PyTorch runs eagerly: no XLA / jit to compare")
    rng = np.random.default_rng(1)
    labels = (np.arange(12) % 4).astype("int32")
    width = 8 if name == "circle" else 4 * loss.proxies_per_class
    x = (random_cosines(rng, 12, width) if name != "circle"
         else rng.normal(size=(12, width))).astype("float32")
    eager = float(to_numpy(loss(labels, x)))
    np.testing.assert_allclose(float(to_numpy(fn(tensor(labels), tensor(x)))),
                               eager, rtol=1e-5)
