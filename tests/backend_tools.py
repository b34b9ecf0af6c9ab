"""Backend-neutral test helpers, for the test modules marked
``pytestmark = pytest.mark.backends`` that CI runs under every Keras backend
(TensorFlow, JAX, PyTorch), each in its own process.

    KERAS_BACKEND=jax .venv/bin/python -m pytest -q -rs -m backends tests
"""

import keras
import numpy as np
from keras import ops

BACKEND = keras.backend.backend()


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def tensor(a, dtype=None):
    return ops.convert_to_tensor(np.asarray(a), dtype=dtype)


def value_and_grads(fn, *arrays):
    """``fn(*tensors)`` (a scalar) and its gradients with respect to every
    argument, computed by the backend's own autodiff; all as numpy."""
    if BACKEND == "tensorflow":
        import tensorflow as tf
        xs = [tf.constant(a) for a in arrays]
        with tf.GradientTape() as tape:
            for x in xs:
                tape.watch(x)
            value = fn(*xs)
        grads = tape.gradient(value, xs)
    elif BACKEND == "jax":
        import jax
        xs = [ops.convert_to_tensor(a) for a in arrays]
        step = jax.value_and_grad(lambda *xs: fn(*xs), argnums=tuple(range(len(xs))))
        # One jitted program: eager JAX compiles every op for every new shape,
        # which made the JAX test pass several times slower than TensorFlow's.
        # Functions that read values on the host fall back to eager.
        try:
            value, grads = jax.jit(step)(*xs)
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
                jax.errors.TracerBoolConversionError, jax.errors.TracerIntegerConversionError):
            value, grads = step(*xs)
    elif BACKEND == "torch":
        import torch
        xs = [torch.tensor(np.asarray(a), requires_grad=True) for a in arrays]
        value = fn(*xs)
        grads = torch.autograd.grad(value, xs, allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, xs)]
    else:
        raise NotImplementedError(BACKEND)
    return to_numpy(value), [to_numpy(g) for g in grads]


def grads(fn, *arrays):
    return value_and_grads(fn, *arrays)[1]


def compiled(fn):
    """``fn`` compiled where nothing can raise: XLA under TensorFlow,
    ``jax.jit`` under JAX; None under PyTorch (which runs eagerly)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf
        return tf.function(fn, jit_compile=True)
    if BACKEND == "jax":
        import jax
        return jax.jit(fn)
    return None


def graph(fn):
    """``fn`` as a TensorFlow graph (``tf.function`` without XLA); None on
    other backends."""
    if BACKEND == "tensorflow":
        import tensorflow as tf
        return tf.function(fn)
    return None


def float64():
    """A context in which float64 tensors stay float64: JAX computes in
    float32 (with a warning) unless x64 is on; elsewhere a no-op. The
    float64 reference comparisons of the loss tests run inside it."""
    if BACKEND == "jax":
        import jax
        return jax.enable_x64(True)
    import contextlib
    return contextlib.nullcontext()


def largest_tensor(fn, y, f):
    """Elements of the largest tensor in the traced gradient step of
    ``fn(y, f)`` (loop bodies included): the TensorFlow graph or the JAX
    jaxpr; None under PyTorch (no graph to read)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        # Class ids stay int32; continuous labels are traced as float32.
        integer = np.issubdtype(np.asarray(y).dtype, np.integer)
        label_dtype = tf.int32 if integer else tf.float32

        @tf.function(input_signature=[tf.TensorSpec(y.shape, label_dtype),
                                      tf.TensorSpec(f.shape)])
        def step(y, f):
            with tf.GradientTape() as tape:
                tape.watch(f)
                loss = fn(y, f)
            return loss, tape.gradient(loss, f)

        graph = step.get_concrete_function().graph
        graphs = [graph] + [g for g in _tf_function_graphs(graph)]
        biggest = 0
        for g in graphs:
            for op in g.get_operations():
                for t in op.outputs:
                    if t.shape.rank is not None and t.shape.is_fully_defined():
                        biggest = max(biggest, t.shape.num_elements())
        return biggest
    if BACKEND == "jax":
        import jax
        jaxpr = jax.make_jaxpr(jax.value_and_grad(lambda f, y: fn(y, f)))(
            tensor(f), tensor(y))
        return _jaxpr_largest(jaxpr.jaxpr)
    return None


def _tf_function_graphs(graph):
    """The function bodies (while/cond/map_fn) called from a TF graph."""
    out = []
    for fn in graph._functions.values():
        g = getattr(fn, "graph", None)
        if g is not None:
            out.append(g)
    return out


def _jaxpr_largest(jaxpr):
    biggest = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            shape = getattr(v.aval, "shape", ())
            biggest = max(biggest, int(np.prod(shape)) if shape else 1)
        for param in eqn.params.values():
            for sub in (param if isinstance(param, (list, tuple)) else [param]):
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    inner = getattr(inner, "jaxpr", inner)
                    if hasattr(inner, "eqns"):
                        biggest = max(biggest, _jaxpr_largest(inner))
    return biggest
