"""Inputs for driving any keras_dml loss by its short name, built from the
loss's own attributes (takes_proxies, continuous_labels, proxies_per_class)."""

import numpy as np

import keras_dml as kd
from backend_tools import BACKEND, value_and_grads

# The dtypes the references are compared in (float64 needs x64 on under
# JAX: backend_tools.float64()). The TensorFlow pass checks both; the JAX and
# PyTorch passes check float32, the contract's dtype (Keras 3.15 computes some
# float64 ops in float32 under PyTorch, and each extra dtype is another JAX
# compile per case, which would double the JAX pass).
DTYPES = ("float64", "float32") if BACKEND == "tensorflow" else ("float32",)
# float64: rounding far below the finite-difference error (~1e-9).
# float32: the contract, 1e-5 relative; gradients relative to their largest
# entry (a component near 0 has no meaningful relative error).
VALUE_RTOL = {"float64": 1e-9, "float32": 1e-5}
GRAD_RTOL = {"float64": 1e-5, "float32": 1e-5}


def check_value_and_grad(fn, inputs, expected, expected_grads, dtype,
                         what="", value_atol=1e-10):
    """``fn(*inputs)`` computed in ``dtype`` by the backend's autodiff
    equals the float64 reference ``expected`` and its finite-difference
    gradients ``expected_grads`` (one per input)."""
    arrays = [np.asarray(x, dtype) for x in inputs]
    value, grads = value_and_grads(fn, *arrays)
    assert str(value.dtype) == dtype, (value.dtype, dtype)
    np.testing.assert_allclose(value, expected, rtol=VALUE_RTOL[dtype],
                               atol=value_atol, err_msg=f"{what} {dtype}")
    for g, ref in zip(grads, expected_grads):
        scale = float(np.max(np.abs(ref))) if np.size(ref) else 0.0
        np.testing.assert_allclose(
            g, ref, rtol=GRAD_RTOL[dtype],
            atol=1e-6 if dtype == "float64" else 1e-5 * max(scale, 1e-3),
            err_msg=f"{what} gradient {dtype}")
    return value, grads

NUM_CLASSES = 4
# Constructor arguments that keep the tests small.
ARGS = {"soft_triple": {"centers_per_class": 2},
        "subcenter_arcface": {"sub_centers": 2}}


def make_loss(name, **kwargs):
    return kd.losses.get(name, **{**ARGS.get(name, {}), **kwargs})


def kind(loss):
    """"proxy" (cosines to proxies), "continuous" (label vectors) or "pair"."""
    if loss.takes_proxies:
        return "proxy"
    return "continuous" if loss.continuous_labels else "pair"


def batch(loss, n=16, dim=6, seed=0):
    """A random (y_true, y_pred) batch of the shapes ``loss`` takes."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % NUM_CLASSES
    if kind(loss) == "proxy":
        width = NUM_CLASSES * loss.proxies_per_class
        return labels.astype("int32"), rng.uniform(-1, 1, (n, width)).astype("float32")
    emb = rng.normal(size=(n, dim)).astype("float32")
    if kind(loss) == "continuous":
        return rng.normal(size=(n, 2)).astype("float32"), emb
    return labels.astype("int32"), emb
