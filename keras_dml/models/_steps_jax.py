"""MetricModel's train/test steps under the JAX backend.

Keras' JAX trainer is stateless: ``train_step(state, data)`` gets the values
of the trainable, non-trainable, optimiser and metric variables and returns
their new values, inside ``jax.jit``. The model's own (stateful-looking)
code runs inside ``keras.StatelessScope``s that map every variable to its
value in ``state``, so the same ``_embed_for_training`` / ``_loss_of_outputs``
/ ``ParameterGroupOptimizer.apply`` as on TensorFlow trace into a pure
function. Nothing leaves the device in a step.

Distribution: under ``keras.distribution.DataParallel`` the batch is one
global array sharded over the devices and the step is one SPMD program, so
the loss *is* the loss of the global batch (no gather needed) and its
gradient is the global gradient; XLA inserts the collectives. Clipping and
the optimiser then see the global gradient, as with one device.
"""

import jax
import keras
from keras import ops


def _scope(pairs, **kwargs):
    return keras.StatelessScope(state_mapping=list(pairs), **kwargs)


def _values(scope, variables):
    return [scope.get_current_value(v) for v in variables]


def _forward(model, trainable, non_trainable, x, y, training):
    """(loss, head outputs, new non-trainable values), pure in the values."""
    mapping = (list(zip(model.trainable_variables, trainable))
               + list(zip(model.non_trainable_variables, non_trainable)))
    with _scope(mapping, collect_losses=True) as scope:
        if training:
            embeddings = model._embed_for_training(x)
        else:
            embeddings = model.embedder(x, training=False)
        outputs = model._head_outputs(embeddings)
        loss = model._loss_of_outputs(y, outputs, training=training)
    return loss, outputs, _values(scope, model.non_trainable_variables)


def _update_metrics(model, metrics_values, loss, y, outputs):
    variables = model.metrics_variables
    with _scope(zip(variables, metrics_values)) as scope:
        model._global_loss_tracker.update_state(
            loss, sample_weight=ops.shape(outputs)[0])
        logs = model.compute_metrics(None, y, outputs, None)
    return logs, _values(scope, variables)


def train_step(model, state, data):
    trainable, non_trainable, optimizer_values, metrics_values = state
    x, y = model._unpack(data)
    optimizer = model.optimizer

    def objective(trainable_values):
        loss, outputs, new_non_trainable = _forward(
            model, trainable_values, non_trainable, x, y, training=True)
        with _scope(zip(optimizer.variables, optimizer_values)):
            scaled = optimizer.scale_loss(loss)
        return scaled, (loss, outputs, new_non_trainable)

    (_, (loss, outputs, non_trainable)), grads = jax.value_and_grad(
        objective, has_aux=True)(trainable)

    # Only the step's variables (not the backbone during warm-up) get a
    # gradient; None for the others, which the optimiser then leaves alone
    # (a frozen group's clone does not count steps), as on TensorFlow.
    # stateless_apply also serves a LossScaleOptimizer around the groups.
    stepped = {id(v) for v in model._step_variables()}
    grads = [g if id(v) in stepped else None
             for g, v in zip(grads, model.trainable_variables)]
    trainable, optimizer_values = optimizer.stateless_apply(
        optimizer_values, grads, trainable)

    logs, metrics_values = _update_metrics(model, metrics_values, loss, y, outputs)
    return logs, (trainable, non_trainable, optimizer_values, metrics_values)


def test_step(model, state, data):
    trainable, non_trainable, metrics_values = state
    x, y = model._unpack(data)
    loss, outputs, non_trainable = _forward(
        model, trainable, non_trainable, x, y, training=False)
    logs, metrics_values = _update_metrics(model, metrics_values, loss, y, outputs)
    return logs, (trainable, non_trainable, metrics_values)
