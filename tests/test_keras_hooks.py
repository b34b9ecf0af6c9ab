"""Every Keras private internal keras_dml relies on still works as assumed.

One test per hook in keras_dml/_keras_hooks.py. A Keras upgrade that removes
or changes one fails here with the hook's name (see BUILD_NOTES.md, "Keras
hooks"), instead of somewhere inside a distributed training step.
"""

import inspect
import pathlib
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_dml import _keras_hooks as hooks

PACKAGE = pathlib.Path(hooks.__file__).parent


def _fail(hook, message):
    pytest.fail(f"Keras hook keras_dml._keras_hooks.{hook}: {message} "
                f"(Keras {keras.__version__}). See BUILD_NOTES.md, "
                "'Keras hooks'.", pytrace=False)


def _parameters(fn):
    return list(inspect.signature(fn).parameters)


def test_every_hook_has_a_test():
    public = sorted(name for name, obj in vars(hooks).items()
                    if inspect.isfunction(obj) and not name.startswith("_")
                    and obj.__module__ == hooks.__name__)
    assert public == sorted(hooks.HOOKS), (
        "keras_dml._keras_hooks.HOOKS must list every hook function")
    tests = {name for name in globals() if name.startswith("test_")}
    missing = [h for h in hooks.HOOKS if f"test_{h}" not in tests]
    assert not missing, f"hooks without a test here: {missing}"


# Private Keras names that may appear only in _keras_hooks.py.
_PRIVATE = ("_all_reduce_sum_gradients", "_var_key", "_iterations",
            "_learning_rate", "_maybe_symbolic_build", "_compile_loss",
            "_loss_tracker", "_in_multi_worker_mode", "_compile_metrics",
            "_distribute_strategy", "_exclude_from_weight_decay",
            "_trainable_variables", "_variables")


def test_private_keras_names_only_in_the_hooks_module():
    pattern = re.compile(r"\.(" + "|".join(_PRIVATE) + r")\b|\.fset\(")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_keras_hooks.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{number}: "
                             f"{line.strip()}")
    assert not found, ("Keras internals used outside keras_dml/_keras_hooks.py "
                       "(put them behind a hook there):\n" + "\n".join(found))


def test_skip_cross_replica_gradient_sum():
    hook = "skip_cross_replica_gradient_sum"
    method = getattr(keras.optimizers.Optimizer, "_all_reduce_sum_gradients",
                     None)
    if method is None:
        _fail(hook, "keras.optimizers.Optimizer has no "
              "_all_reduce_sum_gradients any more")
    if _parameters(method) != ["self", "grads_and_vars"]:
        _fail(hook, "_all_reduce_sum_gradients's signature changed to "
              f"{inspect.signature(method)}")

    # apply() must still route the gradients through that method...
    variable = keras.Variable(np.ones(3, "float32"))
    optimizer = keras.optimizers.SGD(0.5)
    hooks.skip_cross_replica_gradient_sum(optimizer)
    installed = optimizer._all_reduce_sum_gradients
    seen = []

    def spy(grads_and_vars):
        seen.append(len(list(grads_and_vars)))
        return installed(grads_and_vars)

    optimizer._all_reduce_sum_gradients = spy
    optimizer.apply([tf.constant([1.0, 2.0, 4.0])], [variable])
    if not seen:
        _fail(hook, "Optimizer.apply no longer calls "
              "_all_reduce_sum_gradients, so the hook has no effect: the "
              "optimiser's own cross-replica sum may be back")
    # ...and the hook passes them through unchanged.
    np.testing.assert_allclose(variable.numpy(), [0.5, 0.0, -1.0],
                               err_msg=f"{hook}: wrong update")


def test_configured_learning_rate():
    hook = "configured_learning_rate"
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)

    def rate():
        return 0.25

    try:
        constant = hooks.configured_learning_rate(keras.optimizers.SGD(0.1))
        scheduled = hooks.configured_learning_rate(keras.optimizers.Adam(schedule))
        called = hooks.configured_learning_rate(keras.optimizers.Adam(rate))
    except AttributeError as e:
        _fail(hook, f"optimisers have no _learning_rate any more ({e})")
    if not isinstance(constant, keras.Variable) or not np.isclose(
            float(constant.numpy()), 0.1):
        _fail(hook, f"a constant rate is no longer a keras.Variable: {constant!r}")
    if scheduled is not schedule:
        _fail(hook, "a LearningRateSchedule is no longer kept as given")
    if called is not rate:
        _fail(hook, "a callable learning rate is no longer kept as given")


def test_copy_weight_decay_exclusions():
    hook = "copy_weight_decay_exclusions"
    kernel = keras.Variable(np.ones(2, "float32"), name="kernel")
    bias = keras.Variable(np.ones(2, "float32"), name="bias")
    listed = keras.Variable(np.ones(2, "float32"), name="scale")
    source = keras.optimizers.AdamW(0.1, weight_decay=0.5)
    source.exclude_from_weight_decay(var_list=[listed], var_names=["bias"])
    for attr in ("_exclude_from_weight_decay",
                 "_exclude_from_weight_decay_pattern"):
        if not hasattr(source, attr):
            _fail(hook, f"exclude_from_weight_decay no longer sets {attr}")

    clone = type(source).from_config(source.get_config())
    hooks.copy_weight_decay_exclusions(source, clone)
    zeros = [tf.zeros(2)] * 3   # Adam's step is 0: only weight decay moves
    clone.apply(zeros, [kernel, bias, listed])
    if np.allclose(kernel.numpy(), 1.0):
        _fail(hook, "weight decay did not apply to a variable not excluded")
    if not np.allclose(bias.numpy(), 1.0):
        _fail(hook, "the clone decayed a variable excluded by name: the "
              "copied pattern is no longer read")
    if not np.allclose(listed.numpy(), 1.0):
        _fail(hook, "the clone decayed a variable excluded by var_list: the "
              "copied variable keys are no longer read")


def test_build_from_first_replica_batch():
    hook = "build_from_first_replica_batch"
    method = getattr(keras.Model, "_maybe_symbolic_build", None)
    if method is None:
        _fail(hook, "keras.Model has no _maybe_symbolic_build any more")
    if _parameters(method) != ["self", "iterator", "data_batch"]:
        _fail(hook, "_maybe_symbolic_build's signature changed to "
              f"{inspect.signature(method)}")
    if keras.Sequential()._distribute_strategy is not None:
        _fail(hook, "Model._distribute_strategy is gone or not None outside "
              "a strategy scope")

    calls = []

    class Probe(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            calls.append((iterator, data_batch))
            return super()._maybe_symbolic_build(iterator=iterator,
                                                 data_batch=data_batch)

    @hooks.build_from_first_replica_batch
    class Hooked(Probe):
        pass

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = Hooked()
        model.compile(optimizer="sgd", loss="mse")
    x = np.ones((4, 3), "float32")
    y = np.zeros((4, 2), "float32")
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    if not calls:
        _fail(hook, "fit no longer calls _maybe_symbolic_build")
    iterator, batch = calls[0]
    if iterator is not None or batch is None:
        _fail(hook, "the override did not turn fit's iterator into a first "
              "batch: Keras no longer passes it as iterator=")
    shapes = [tuple(t.shape) for t in tf.nest.flatten(batch)]
    if shapes != [(2, 3), (2, 2)]:
        _fail(hook, f"the first batch taken from fit's iterator has shapes "
              f"{shapes}, not the (x, y) batch")
    if not model.built or not model.optimizer.built:
        _fail(hook, "Keras did not build the model from the batch given")
