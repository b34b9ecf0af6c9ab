"""The Keras private internals keras_dml still needs, each behind one function.

Everything else in keras_dml uses public Keras 3 API. What is left here has
no public equivalent in Keras 3.15; each function says why it is needed.
``tests/test_keras_hooks.py`` checks every hook against the installed Keras
(attribute present, same signature, same behaviour), so a Keras upgrade that
removes or changes one fails there with the hook's name, not somewhere deep
in a training step. BUILD_NOTES.md ("Keras hooks") lists them too.

Keep this module small: a new private use goes here, with its reason and a
check in the test.
"""

# TensorFlow is imported only where a tf.distribute strategy is in use, so
# that importing keras_dml under JAX or PyTorch does not load it.

# Names of the hooks below, for the test's completeness check.
HOOKS = ("skip_cross_replica_gradient_sum", "configured_learning_rate",
         "copy_weight_decay_exclusions", "build_from_first_replica_batch")


def _gradients_already_summed(grads_and_vars):
    return list(grads_and_vars)


def skip_cross_replica_gradient_sum(optimizer):
    """Make ``optimizer.apply`` use the gradients as given under tf.distribute.

    Private: ``TFOptimizer._all_reduce_sum_gradients(grads_and_vars)``, which
    Keras' TensorFlow optimiser calls inside ``apply`` to sum the gradients
    over replicas, *after* clipping them per replica.

    Only the TensorFlow optimiser has this method; on JAX and PyTorch the
    attribute is set and never read (their optimisers do not sum over
    replicas inside ``apply``: under JAX's ``DataParallel`` the gradient is
    that of the global batch already).

    Why: ``MetricModel.train_step`` sums the gradients over replicas once,
    itself, before clipping and the optimiser step, so that value clipping,
    global-norm clipping and the loss-scale finiteness check see the global
    gradient (the update then equals one device on the whole batch). The
    optimiser must not sum them a second time. Keras has no public switch
    for this.
    """
    optimizer._all_reduce_sum_gradients = _gradients_already_summed
    return optimizer


def configured_learning_rate(optimizer):
    """The learning rate an optimiser was created with, not evaluated.

    Private: ``BaseOptimizer._learning_rate``: a ``keras.Variable`` for a
    constant rate, else the ``LearningRateSchedule`` or callable itself.

    Why: the parameter-group optimiser gives each group the *same* schedule
    (times its multiplier) evaluated at the global step. The public
    ``optimizer.learning_rate`` evaluates a schedule at the optimiser's own
    step and returns a tensor; ``get_config()`` round-trips only registered
    schedules and named functions (an unregistered schedule subclass or a
    lambda would be lost).
    """
    return optimizer._learning_rate


def copy_weight_decay_exclusions(source, target):
    """Give ``target`` the variables and name patterns that ``source``
    excludes from weight decay (set with ``exclude_from_weight_decay``).

    Private: ``_exclude_from_weight_decay`` (a set of variable keys) and
    ``_exclude_from_weight_decay_pattern`` (a compiled regex), the state
    that the public ``exclude_from_weight_decay(var_list, var_names)``
    writes; Keras has no public getter to read them back.

    Why: each parameter group trains with a clone of the user's optimiser
    made from its config, and the config does not hold the exclusions: an
    AdamW told not to decay biases would decay them in every clone.
    """
    for attr in ("_exclude_from_weight_decay",
                 "_exclude_from_weight_decay_pattern"):
        if hasattr(source, attr):
            setattr(target, attr, getattr(source, attr))
    return target


def build_from_first_replica_batch(model_class):
    """Class decorator: under a tf.distribute strategy, build the model from
    the first replica's first batch instead of Keras' cross-replica mean.

    Private: ``Trainer._maybe_symbolic_build(iterator=None,
    data_batch=None)`` (overridden) and ``Trainer._distribute_strategy``
    (read: whether the model was created under a strategy, which the public
    ``distribute_strategy`` does not tell, as it falls back to the default).

    Why: with a strategy, Keras 3.15's ``fit``/``evaluate`` take the first
    batch and reduce it with ``strategy.reduce("MEAN", batch)`` to get
    shapes for a symbolic build. That fails under
    ``MultiWorkerMirroredStrategy`` and averages int labels. The build only
    needs shapes, so the first replica's batch does.
    """
    keras_build = getattr(model_class, "_maybe_symbolic_build", None)
    if keras_build is None:
        # Only Keras' TensorFlow trainer has it (and tf.distribute): on JAX
        # and PyTorch the class is left as it is.
        return model_class

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Only the TensorFlow trainer has a strategy (JAX and PyTorch: None).
        if getattr(self, "_distribute_strategy", None) is None or iterator is None:
            return keras_build(self, iterator=iterator, data_batch=data_batch)
        import tensorflow as tf

        strategy = self.distribute_strategy
        for _, _, it in iterator:
            data_batch = next(it)
            break

        def first_replica(value):
            if isinstance(value, tf.distribute.DistributedValues):
                return strategy.experimental_local_results(value)[0]
            return value

        data_batch = tf.nest.map_structure(first_replica, data_batch)
        return keras_build(self, data_batch=data_batch)

    _maybe_symbolic_build.__doc__ = build_from_first_replica_batch.__doc__
    model_class._maybe_symbolic_build = _maybe_symbolic_build
    return model_class
