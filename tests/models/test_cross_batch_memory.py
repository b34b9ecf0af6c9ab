"""Cross-batch memory (MetricModel(memory_size=M)) against PML's
CrossBatchMemory: loss values and weights after SGD steps on a tiny linear
embedder, over batches that wrap the queue around; the memory is saved with
the model; its footprint is M x D with [B, M] pair tensors, never [B, M, M]
(except the triplets' anchor blocks).

Backend-neutral: keras_dml trains on the Keras backend in use (float64);
PML runs on PyTorch.
"""

import keras
import numpy as np
import pytest

import keras_dml as kd
from backend_tools import BACKEND, float64, largest_tensor, tensor, to_numpy
from references import reference

pytestmark = pytest.mark.backends

torch = reference("torch", "pytorch-metric-learning CrossBatchMemory parity")
pml_losses = reference("pytorch_metric_learning.losses", "CrossBatchMemory parity")
pml_miners = reference("pytorch_metric_learning.miners", "CrossBatchMemory parity")

D_IN, DIM, MEMORY, BATCH, STEPS, LR = 6, 4, 20, 8, 6, 0.5
# float64 end to end, except under PyTorch, where Keras 3.15 runs some float64
# ops (the Dense matmul among them) in float32 (see kd.ops.matmul_t): there
# the float32 tolerance (measured max relative difference 1.6e-6).
TOL = (dict(rtol=1e-7, atol=1e-9) if BACKEND != "torch"
       else dict(rtol=2e-5, atol=1e-6))


@pytest.fixture
def f64():
    # The dtype policy too: a global policy set earlier in the process (an
    # explicit "float32") would otherwise build the models in float32.
    policy = keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    with float64():
        yield
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy(policy)


def _pml(name):
    """PML loss (and miner) as keras_dml's loss of the same name computes it."""
    if name == "contrastive":
        return pml_losses.ContrastiveLoss(neg_margin=0.5), None
    if name == "multi_similarity":
        return (pml_losses.MultiSimilarityLoss(2, 50, 0.5),
                pml_miners.MultiSimilarityMiner(0.1))
    if name == "triplet_semihard":
        return (pml_losses.TripletMarginLoss(margin=0.1),
                pml_miners.TripletMarginMiner(0.1, type_of_triplets="semihard"))
    if name == "triplet_all":
        return (pml_losses.TripletMarginLoss(margin=0.1),
                pml_miners.TripletMarginMiner(0.1, type_of_triplets="all"))
    if name == "circle":
        return pml_losses.CircleLoss(), None
    raise KeyError(name)


def _kd(name):
    if name.startswith("triplet"):
        return kd.losses.TripletLoss(0.1, name.split("_")[1])
    return kd.losses.get(name)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=(D_IN, DIM))
    centres = rng.normal(size=(3, D_IN)) * 1.5
    labels = rng.integers(0, 3, size=(STEPS, BATCH))
    x = centres[labels] + rng.normal(size=(STEPS, BATCH, D_IN))
    return w0, x, labels


def _pml_run(name, w0, x, labels):
    loss, miner = _pml(name)
    xbm = pml_losses.CrossBatchMemory(loss, DIM, memory_size=MEMORY, miner=miner)
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    values = []
    for xb, yb in zip(x, labels):
        value = xbm(torch.tensor(xb) @ w, torch.tensor(yb))
        values.append(float(value.detach()))
        if value.requires_grad:
            value.backward()
            with torch.no_grad():
                w -= LR * w.grad
            w.grad = None
    return np.array(values), w.detach().numpy()


def _model(w0, memory=MEMORY):
    embedder = keras.Sequential([keras.Input((D_IN,)),
                                 keras.layers.Dense(DIM, use_bias=False)])
    embedder.layers[-1].kernel.assign(w0)
    return kd.models.MetricModel(embedder, memory_size=memory)


def _kd_run(name, w0, x, labels):
    model = _model(w0)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss=_kd(name))
    values = [model.train_on_batch(xb, yb, return_dict=True)["loss"]
              for xb, yb in zip(x, labels)]
    return np.array(values, np.float64), to_numpy(model.embedder.layers[-1].kernel), model


@pytest.mark.parametrize("name", ["contrastive", "multi_similarity",
                                  "triplet_semihard", "triplet_all", "circle"])
def test_memory_training_equals_pml(name, f64):
    w0, x, labels = _data()
    expected_values, expected_w = _pml_run(name, w0, x, labels)
    values, w, model = _kd_run(name, w0, x, labels)
    # Six batches of 8 in a memory of 20: the queue wraps at the third.
    assert STEPS * BATCH > 2 * MEMORY
    assert np.count_nonzero(expected_values) >= STEPS - 1, expected_values
    np.testing.assert_allclose(values, expected_values, **TOL)
    np.testing.assert_allclose(w, expected_w, **TOL)
    assert np.max(np.abs(w - w0)) > 1e-3
    memory = model.memory
    assert int(to_numpy(memory.position)) == STEPS * BATCH % MEMORY
    assert int(to_numpy(memory.filled)) == MEMORY
    np.testing.assert_array_equal(
        to_numpy(memory.labels)[:STEPS * BATCH % MEMORY],
        labels.reshape(-1)[2 * MEMORY:])


def test_without_memory_the_same_model_differs(f64):
    """Guard: the memory changes the training (not a no-op)."""
    w0, x, labels = _data()
    with_memory, _, _ = _kd_run("contrastive", w0, x, labels)
    model = _model(w0, memory=None)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss=_kd("contrastive"))
    plain = [model.train_on_batch(xb, yb, return_dict=True)["loss"]
             for xb, yb in zip(x, labels)]
    np.testing.assert_allclose(plain[0], with_memory[0], rtol=1e-9)
    assert np.max(np.abs(np.array(plain[2:]) - with_memory[2:])) > 1e-3


def test_memory_is_saved_and_resume_is_exact(tmp_path):
    w0, x, labels = _data(1)
    model = _model(w0)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=kd.losses.MultiSimilarityLoss())
    for xb, yb in zip(x[:3], labels[:3]):
        model.train_on_batch(xb, yb)
    path = tmp_path / "xbm.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert restored.memory_size == MEMORY
    for name in ("embeddings", "labels", "position", "filled"):
        np.testing.assert_array_equal(to_numpy(getattr(restored.memory, name)),
                                      to_numpy(getattr(model.memory, name)))
    a = [model.train_on_batch(xb, yb) for xb, yb in zip(x[3:], labels[3:])]
    b = [restored.train_on_batch(xb, yb) for xb, yb in zip(x[3:], labels[3:])]
    np.testing.assert_allclose(b, a, rtol=1e-6)


def test_bad_configurations_are_refused():
    w0, x, labels = _data()
    model = _model(w0, memory=4)
    with pytest.raises(ValueError, match="cross-batch memory"):
        model.compile(optimizer="sgd", loss=kd.losses.NPairLoss())
    model.compile(optimizer="sgd", loss=kd.losses.ContrastiveLoss())
    with pytest.raises(ValueError, match="does not fit"):
        model.train_on_batch(x[0], labels[0])
    with pytest.raises(ValueError, match="proxies"):
        kd.models.MetricModel(model.embedder, proxies=kd.layers.Proxies(3),
                              memory_size=8)
    with pytest.raises(ValueError, match="reference"):
        kd.losses.ProxyAnchorLoss()(labels[0], np.zeros((8, 3), "float32"),
                                    references=kd.losses.References(
                                        np.zeros((4, 3), "float32"), np.zeros(4)))


@pytest.mark.skipif(BACKEND == "torch", reason="no graph to read under PyTorch")
@pytest.mark.parametrize("name", ["contrastive", "multi_similarity", "circle",
                                  "triplet_semihard"])
def test_footprint_is_batch_by_memory(name):
    """The largest tensor of a loss step against a memory is
    [B, M] (B = 16, M = 512) for the pair losses; the triplet blocks of anchors hold
    block * M * M < B * M * M."""
    m, b, d = 512, 16, 8
    rng = np.random.default_rng(0)
    memory = rng.normal(size=(m, d)).astype("float32")
    memory_labels = rng.integers(0, 4, size=m).astype("int32")
    refs = kd.losses.References(tensor(memory), tensor(memory_labels),
                                tensor(np.arange(m) < 400),
                                tensor(np.arange(b, dtype="int32")))
    loss = _kd(name)
    y = rng.integers(0, 4, size=b).astype("int32")
    f = rng.normal(size=(b, d)).astype("float32")
    largest = largest_tensor(lambda y, f: loss(y, f, references=refs), y, f)
    if name.startswith("triplet"):
        assert largest < b * m * m, largest
    else:
        assert largest <= b * m, largest
