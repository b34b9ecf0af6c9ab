"""Every loss refuses non-finite y_pred: an error naming the loss eagerly (a
ValueError on every backend) and inside tf.function (InvalidArgumentError),
a NaN loss (never 0) where nothing can raise (XLA, jax.jit), so that
keras.callbacks.TerminateOnNaN stops the run."""

import numpy as np
import pytest

import keras_dml as kd
from backend_tools import BACKEND, compiled, graph, tensor, to_numpy
from loss_cases import batch, make_loss

pytestmark = pytest.mark.backends

ALL = kd.losses.available()


def test_all_sixteen_losses_are_checked():
    # Twelve class losses (ArcFace, CosFace, Sub-center ArcFace and Circle
    # the last four) and four continuous-label ones; every MetricLoss class
    # exported by kd.losses is registered.
    assert len(ALL) == 16, ALL
    assert len(kd.losses.available(continuous_labels=True)) == 4
    exported = sorted(cls.short_name for cls in vars(kd.losses).values()
                      if isinstance(cls, type) and issubclass(cls, kd.losses.MetricLoss)
                      and cls not in (kd.losses.MetricLoss, kd.losses.ContinuousLoss))
    assert exported == ALL


def poisoned(loss, value, where):
    y_true, y_pred = batch(loss)
    y_pred = y_pred.copy()
    if where == "all":
        y_pred[:] = value
    else:
        y_pred[3, 1] = value
    return y_true, y_pred


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ALL)
def test_eager_error_names_the_loss(name, value):
    loss = make_loss(name)
    for where in ("one", "all"):
        y_true, y_pred = poisoned(loss, value, where)
        with pytest.raises(ValueError, match=f"{type(loss).__name__}: y_pred "
                                             "contains NaN or Inf"):
            loss(y_true, y_pred)


@pytest.mark.skipif(BACKEND != "tensorflow",
                    reason="tf.function graph assertions exist only under TensorFlow")
@pytest.mark.parametrize("name", ALL)
def test_graph_error_names_the_loss(name):
    import tensorflow as tf
    loss = make_loss(name)
    y_true, y_pred = poisoned(loss, np.nan, "all")
    fn = graph(lambda a, b: loss(a, b))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"{type(loss).__name__}: y_pred contains NaN"):
        fn(tf.constant(y_true), tf.constant(y_pred))


@pytest.mark.skipif(BACKEND == "torch",
                    reason="PyTorch runs eagerly: the eager ValueError applies "
                           "(test_eager_error_names_the_loss)")
@pytest.mark.parametrize("name", ALL)
def test_compiled_gives_nan_never_zero(name):
    """XLA under TensorFlow, jax.jit under JAX: assertions cannot raise."""
    loss = make_loss(name)
    fn = compiled(lambda a, b: loss(a, b))
    y_true, y_pred = batch(loss)
    finite = float(to_numpy(fn(tensor(y_true), tensor(y_pred))))
    assert np.isfinite(finite)
    for value in (np.nan, np.inf):
        for where in ("one", "all"):
            y_true, y_pred = poisoned(loss, value, where)
            out = float(to_numpy(fn(tensor(y_true), tensor(y_pred))))
            assert np.isnan(out), (value, where, out)
