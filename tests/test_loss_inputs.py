"""Every loss refuses non-finite y_pred: an error naming the loss eagerly and
inside tf.function, a NaN loss (never 0) under XLA where assertions are
dropped, so that keras.callbacks.TerminateOnNaN stops the run."""

import numpy as np
import pytest
import tensorflow as tf

import keras_dml as kd
from loss_cases import batch, make_loss

ALL = kd.losses.available()


def test_all_twelve_losses_are_checked():
    # Eight class losses and four continuous-label ones (Rank-N-Contrast the
    # twelfth); every MetricLoss class exported by kd.losses is registered.
    assert len(ALL) == 12, ALL
    assert len(kd.losses.available(continuous_labels=True)) == 4
    exported = sorted(cls.short_name for cls in vars(kd.losses).values()
                      if isinstance(cls, type) and issubclass(cls, kd.losses.MetricLoss)
                      and cls is not kd.losses.MetricLoss)
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


@pytest.mark.parametrize("name", ALL)
def test_graph_error_names_the_loss(name):
    loss = make_loss(name)
    y_true, y_pred = poisoned(loss, np.nan, "all")
    fn = tf.function(lambda a, b: loss(a, b))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"{type(loss).__name__}: y_pred contains NaN"):
        fn(tf.constant(y_true), tf.constant(y_pred))


@pytest.mark.parametrize("name", ALL)
def test_xla_gives_nan_never_zero(name):
    loss = make_loss(name)
    fn = tf.function(lambda a, b: loss(a, b), jit_compile=True)
    y_true, y_pred = batch(loss)
    finite = float(fn(tf.constant(y_true), tf.constant(y_pred)))
    assert np.isfinite(finite)
    for value in (np.nan, np.inf):
        for where in ("one", "all"):
            y_true, y_pred = poisoned(loss, value, where)
            out = float(fn(tf.constant(y_true), tf.constant(y_pred)))
            assert np.isnan(out), (value, where, out)
