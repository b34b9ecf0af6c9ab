"""Backend-neutral helpers of the continuous-label loss tests
(test_log_ratio*, test_dense_triplet, test_rank_n_contrast): float64
references and compiled gradients (the largest tensor of a gradient step is
backend_tools.largest_tensor)."""

import numpy as np

from backend_tools import BACKEND, tensor, to_numpy, value_and_grads
from keras_dml._backend import full_precision


def value_and_grad64(fn, f, *consts):
    """``fn(f, *consts)`` and its gradient in ``f``, in float64 where the
    backend has it (JAX with x64 for the call; float32 under PyTorch, see
    ``FLOAT64``), as (float, numpy)."""
    dtype = np.float64 if FLOAT64 else np.float32
    with full_precision():
        consts = [tensor(np.asarray(c, dtype)) for c in consts]
        if BACKEND == "jax":
            # One compiled program instead of one compilation per eager op
            # (JAX compiles each op for each new shape: ~10x the time here).
            import jax
            value, grad = jax.jit(jax.value_and_grad(lambda x: fn(x, *consts)))(
                tensor(np.asarray(f, dtype)))
            return float(value), to_numpy(grad).astype(np.float64)
        value, (grad,) = value_and_grads(lambda x: fn(x, *consts),
                                         np.asarray(f, dtype))
    return float(value), grad.astype(np.float64)


def compiled_value_and_grad(fn):
    """``(y, f) -> (fn(y, f), d fn / d f)`` compiled where nothing can raise:
    XLA under TensorFlow, ``jax.jit`` under JAX; None under PyTorch (eager)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def step(y, f):
            with tf.GradientTape() as tape:
                tape.watch(f)
                value = fn(y, f)
            return value, tape.gradient(value, f)
        return lambda y, f: tuple(to_numpy(t) for t in step(tensor(y), tensor(f)))
    if BACKEND == "jax":
        import jax
        step = jax.jit(jax.value_and_grad(lambda f, y: fn(y, f)))
        return lambda y, f: tuple(to_numpy(t) for t in step(tensor(f), tensor(y)))
    return None


def eager_value_and_grad(fn, y, f):
    """``(fn(y, f), d fn / d f)`` by the backend's autodiff, eagerly."""
    y = tensor(y)
    value, (grad,) = value_and_grads(lambda x: fn(y, x), f)
    return value, grad


#: Whether the backend computes float64 through keras.ops. Not PyTorch:
#: Keras 3.15's ``result_type`` maps 64-bit to 32-bit on non-TensorFlow
#: backends and its torch ops (matmul, maximum, ...) follow it; JAX keeps
#: float64 under ``full_precision`` (x64). There the references are compared
#: in float32, at float32 tolerances.
FLOAT64 = BACKEND in ("tensorflow", "jax")


def assert_close(actual, desired, rtol=1e-7, atol=0.0):
    """``assert_allclose``, at float32 tolerances (2e-5 relative, 2e-6 of
    the largest entry absolute) where the backend has no float64."""
    if not FLOAT64:
        desired_arr = np.asarray(desired, np.float64)
        scale = float(np.abs(desired_arr).max()) if desired_arr.size else 0.0
        rtol, atol = max(rtol, 2e-5), max(atol, 2e-6 * scale)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol)
