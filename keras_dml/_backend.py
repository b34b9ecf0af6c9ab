"""The one module that knows which Keras backend runs: dispatch and input checks.

Dispatch: ``name`` / ``is_tensorflow`` (which backend), ``tf_of`` /
``is_tf_tensor`` (is a value a TensorFlow tensor, e.g. from ``tf.data``,
without importing TensorFlow), ``to_numpy`` (any backend's tensor, or a TF
tensor under another backend, to numpy) and ``function`` (compile where
cheap). Other modules ask these instead of calling
``keras.backend.backend()`` or looking for TensorFlow themselves
(``tests/test_backend_boundary.py`` enforces it).

Everything else in the numeric core (ops, losses, layers, label distances,
metrics, top-k) is written with ``keras.ops``. What ``keras.ops`` cannot say
is how to refuse bad input, because that depends on whether values are
concrete:

* eagerly (TensorFlow eager, JAX outside ``jit``, PyTorch) a failed check
  raises ``ValueError`` at once;
* in a TensorFlow graph (``tf.function``) it becomes a ``tf.debugging.Assert``
  that raises ``InvalidArgumentError`` when the graph runs;
* where nothing can raise (``jax.jit``, XLA, which drops assertions) the
  check is recorded, and a loss computed inside :func:`collect_checks`
  becomes NaN when one fails (``MetricLoss`` does this), never a silent 0.

TensorFlow, JAX and PyTorch are imported only when their backend is the one
in use, so ``import keras_dml`` under JAX does not import TensorFlow.
"""

import contextlib
import sys
import threading

import keras
import numpy as np
from keras import ops

_state = threading.local()


def name() -> str:
    """The Keras backend in use: "tensorflow", "jax" or "torch"."""
    return keras.backend.backend()


def is_tensorflow() -> bool:
    """Whether the Keras backend is TensorFlow."""
    return name() == "tensorflow"


def computes_on_cpu() -> bool:
    """True when this backend has no accelerator to compute on (TensorFlow:
    no GPU/TPU logical device; JAX: the default backend is the CPU; PyTorch:
    no CUDA device)."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf
        return not (tf.config.list_logical_devices("GPU")
                    or tf.config.list_logical_devices("TPU"))
    if backend == "jax":
        import jax
        return jax.default_backend() == "cpu"
    if backend == "torch":
        import torch
        return not torch.cuda.is_available()
    return True


def tf_of(x):
    """The ``tensorflow`` module when ``x`` is a TensorFlow tensor or
    variable (a ``tf.data`` batch, a SavedModel's input), else None. Never
    imports TensorFlow: a TF tensor means it is loaded already."""
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(x, (tf.Tensor, tf.Variable)):
        return tf
    return None


def is_tf_tensor(x) -> bool:
    """Whether ``x`` is a TensorFlow tensor or variable (on any backend)."""
    return tf_of(x) is not None


def is_tf_dataset(x) -> bool:
    """Whether ``x`` is a ``tf.data.Dataset`` (without importing TensorFlow)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(x, tf.data.Dataset)


def to_numpy(x) -> np.ndarray:
    """A numpy array of ``x``: a TensorFlow tensor (on any backend), the
    backend's tensor (a PyTorch tensor is moved to the CPU first), or
    anything ``np.asarray`` takes."""
    if isinstance(x, np.ndarray):
        return x
    if is_tf_tensor(x):
        return x.numpy()
    if ops.is_tensor(x):
        return np.asarray(ops.convert_to_numpy(x))
    return np.asarray(x)


def read_bool(x):
    """``(True, bool(x))`` where the scalar ``x`` has a value now (eager
    execution, or JAX's ``grad`` outside ``jit``), ``(False, None)`` where it
    is symbolic (a TensorFlow graph, ``jax.jit``, ``torch.compile``)."""
    if isinstance(x, keras.KerasTensor):
        return False, None
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf
        if not tf.executing_eagerly():
            return False, None
    elif backend == "jax":
        import jax
        if isinstance(x, jax.core.Tracer):
            try:
                return True, bool(x)
            except (jax.errors.ConcretizationTypeError,
                    jax.errors.TracerBoolConversionError):
                return False, None
    elif backend == "torch":
        import torch
        if getattr(torch.compiler, "is_compiling", lambda: False)():
            return False, None
    return True, bool(ops.convert_to_numpy(x))


class Checks(list):
    """The scalar booleans collected by :func:`collect_checks`, with the
    ``messages`` of the checks alongside (to raise them outside a compiled
    function that cannot)."""

    def __init__(self):
        super().__init__()
        self.messages = []


@contextlib.contextmanager
def collect_checks():
    """Collect the boolean results of the :func:`check` calls made inside.

    Yields a list; after the block it holds the scalar booleans of the checks
    that could not raise (graph or ``jit``), also those of nested blocks;
    ``all_ok(checks)`` folds them.
    """
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    checks = Checks()
    stack.append(checks)
    try:
        yield checks
    finally:
        stack.pop()


def check(condition, message, error=ValueError):
    """Refuse input for which the boolean ``condition`` (any shape) is false.

    Eagerly raises ``error(message)``; in a TensorFlow graph adds an
    assertion; always records the scalar condition in the innermost
    :func:`collect_checks` block (if any) for NaN propagation. Returns the
    scalar condition.
    """
    ok = ops.all(condition)
    concrete, value = read_bool(ok)
    if concrete:
        if not value:
            raise error(message)
        return ok
    if name() == "tensorflow":
        import tensorflow as tf
        tf.debugging.Assert(ok, [message])
    # Every enclosing block records it: a block around a compiled function
    # (MetricModel's XLA loss) sees the checks of the losses inside.
    for checks in getattr(_state, "stack", None) or ():
        checks.append(ok)
        checks.messages.append(message)
    return ok


def check_finite(x, what):
    """:func:`check` that the float tensor ``x`` has no NaN or Inf."""
    x = ops.convert_to_tensor(x)
    if not _is_float(x):
        return ops.convert_to_tensor(True)
    return check(ops.all(ops.isfinite(x)), f"{what} contains NaN or Inf values.")


def all_ok(checks):
    """The conjunction of collected check results (True when there are none)."""
    ok = ops.convert_to_tensor(True)
    for c in checks:
        ok = ops.logical_and(ok, c)
    return ok


def nan_unless(ok, value):
    """``value`` where the scalar boolean ``ok`` holds, NaN otherwise."""
    value = ops.convert_to_tensor(value)
    return ops.where(ok, value, ops.cast(float("nan"), value.dtype))


@contextlib.contextmanager
def full_precision():
    """Inside, float64 tensors stay float64 on every backend: enables
    ``jax_enable_x64`` for the block under JAX (thread-local), nothing
    elsewhere. For offline numpy work that asks for float64."""
    if name() == "jax":
        import jax
        with jax.enable_x64(True):
            yield
    else:
        yield


def widest_float():
    """"float64" where the backend computes in it, else "float32" (JAX
    without ``jax_enable_x64``, where a float64 cast would silently give
    float32 with a warning)."""
    if name() == "jax":
        import jax
        if not jax.config.read("jax_enable_x64"):
            return "float32"
    return "float64"


def cumulative_logsumexp(x, axis=-1, reverse=False):
    """``log(cumsum(exp(x)))`` along ``axis`` (from the far end with
    ``reverse``), computed so that a large gap neither overflows nor
    underflows to log 0. Each backend's own op: Keras 3.15's
    ``associative_scan`` of ``logaddexp`` fails to compile under TF XLA (a
    concat of mismatched shapes in a ``tf.cond``) and its ``logaddexp``
    turns float64 into float32 under JAX and PyTorch."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf
        return tf.math.cumulative_logsumexp(x, axis=axis, reverse=reverse)
    if backend == "jax":
        import jax
        return jax.lax.cumlogsumexp(x, axis=axis % len(x.shape), reverse=reverse)
    if backend == "torch":
        import torch
        if reverse:
            return torch.flip(torch.logcumsumexp(torch.flip(x, (axis,)), axis), (axis,))
        return torch.logcumsumexp(x, axis)
    return ops.associative_scan(ops.logaddexp, x, reverse=reverse, axis=axis)


def _is_float(x):
    return "float" in keras.backend.standardize_dtype(x.dtype)


def function(fn):
    """``fn`` compiled where that is cheap and exact: ``tf.function`` under
    TensorFlow (``reduce_retracing``: a dimension that changes between calls,
    such as the rows of the last chunk, becomes unknown instead of tracing
    again), ``jax.jit`` under JAX (one compilation per input shape), ``fn``
    itself under PyTorch (eager; ``torch.compile`` costs more than it saves
    for a few large ops). Arguments are tensors, nested tuples of them, or
    None; Python constants belong in ``fn``'s closure.
    """
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf
        return tf.function(fn, reduce_retracing=True)
    if backend == "jax":
        import jax
        return jax.jit(fn)
    return fn
