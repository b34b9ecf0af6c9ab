"""MetricModel's train/test steps under the TensorFlow backend.

Under a ``tf.distribute`` strategy every replica all-gathers the embeddings
and labels, computes the loss of the global batch and differentiates its
share ``(L + Omega) / n``; the gradients are summed over replicas once,
before clipping and the optimiser step (see ``MetricModel``'s docstring).
"""

import weakref

import tensorflow as tf

from keras_dml import _backend
from keras_dml.models.metric_model import compiled_loss

# model -> the head + loss function its last traced step calls (the tests
# check that it is the XLA-compiled one).
HEAD_LOSS_FUNCTIONS = weakref.WeakKeyDictionary()


def _replica_context():
    ctx = tf.distribute.get_replica_context()
    return ctx, (ctx.num_replicas_in_sync if ctx is not None else 1)


def _gather(model, ctx, replicas, embeddings, y):
    """Global batch (in replica order) and this replica's row offset."""
    if replicas == 1 or not model._exact_global_batch:
        return embeddings, y, 0
    sizes = ctx.all_gather(tf.shape(embeddings)[:1], axis=0)
    start = tf.reduce_sum(sizes[:ctx.replica_id_in_sync_group])
    # Separate gathers: int labels live on the host, embeddings may not.
    # tf.identity places the input batch on this replica's device: under
    # MultiWorkerMirroredStrategy tensors straight from the distributed
    # dataset have no device, and all_gather refuses them.
    all_embeddings = ctx.all_gather(tf.identity(embeddings), axis=0)
    all_y = ctx.all_gather(tf.identity(y), axis=0)
    return all_embeddings, all_y, start


def _metrics_result(model, y, outputs, start, local_size):
    if isinstance(start, int):   # no gather: this replica's outputs
        local = outputs
    else:
        local = outputs[start:start + local_size]
    # Updates the compiled metrics (if any) and returns every result.
    logs = model.compute_metrics(None, y, local, None)
    strategy = tf.distribute.get_strategy()
    # More replicas than this worker's devices: several workers.
    if (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.num_replicas_in_sync
            > len(strategy.extended.worker_devices)):
        # Keras 3.15 reduces the logs of a multi-worker step with
        # strategy.reduce("MEAN", value, axis=0), which fails on scalars:
        # give it one-element vectors (their mean is the scalar).
        logs = {k: tf.reshape(v, [1]) if getattr(v, "shape", None) == ()
                else v for k, v in logs.items()}
    return logs


def _head_and_loss(model, embeddings, y, training=False):
    """(head outputs, loss) of the global batch: one XLA-compiled function
    (``compiled_loss``) when ``model._jit_loss`` and no tf.distribute
    strategy is in use, built at trace time so
    that no tf.function is tracked (and exported) with the model.

    XLA drops assertions, so the compiled function returns the results of
    the loss's input checks (``_backend.check``) and they are asserted here,
    in the step's graph: bad labels still raise ``InvalidArgumentError``
    instead of only making the loss NaN."""
    # Not under a tf.distribute strategy (Keras' "auto" makes the same
    # choice for the whole step): replicas stay on TensorFlow's kernels. Nor
    # for a training step that enqueues into a cross-batch memory: its state
    # update stays in the step's own graph.
    with_memory = training and getattr(model, "memory", None) is not None
    if (not getattr(model, "_jit_loss", False) or tf.distribute.has_strategy()
            or with_memory):
        HEAD_LOSS_FUNCTIONS[model] = None
        outputs = model._head_outputs(embeddings)
        return outputs, model._loss_of_outputs(y, outputs, training=training)
    messages = []

    def fn(embeddings, y):
        with _backend.collect_checks() as checks:
            outputs = model._head_outputs(embeddings)
            loss = model._loss_of_outputs(y, outputs)
        messages[:] = checks.messages
        ok = tf.stack([tf.reshape(c, []) for c in checks]) if checks else tf.ones([0], tf.bool)
        return outputs, loss, ok
    fn = compiled_loss(fn)
    HEAD_LOSS_FUNCTIONS[model] = fn
    outputs, loss, ok = fn(embeddings, y)
    asserts = [tf.debugging.Assert(ok[i], [message])
               for i, message in enumerate(messages)]
    with tf.control_dependencies(asserts):
        return outputs, tf.identity(loss)


def train_step(model, data):
    x, y = model._unpack(data)
    ctx, replicas = _replica_context()
    with tf.GradientTape() as tape:
        embeddings = model._embed_for_training(x)
        all_embeddings, all_y, start = _gather(model, ctx, replicas, embeddings, y)
        outputs, loss = _head_and_loss(model, all_embeddings, all_y, training=True)
        # Each replica's share: the replicas' gradients are summed.
        objective = loss / tf.cast(replicas, loss.dtype)
        scaled = model.optimizer.scale_loss(objective)
    if not model.optimizer.built:
        # Built on every trainable variable, also when the first step is
        # a warm-up step that updates only some of them.
        model.optimizer.build(model.trainable_variables)
    variables = model._step_variables()
    grads = tape.gradient(scaled, variables)
    if replicas > 1:
        present = [i for i, g in enumerate(grads) if g is not None]
        if present:
            summed = ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                                    [grads[i] for i in present])
            grads = list(grads)
            for i, g in zip(present, summed):
                grads[i] = g
    model.optimizer.apply(grads, variables)
    local_size = tf.shape(embeddings)[0]
    model._global_loss_tracker.update_state(loss, sample_weight=local_size)
    return _metrics_result(model, y, outputs, start, local_size)


def test_step(model, data):
    x, y = model._unpack(data)
    ctx, replicas = _replica_context()
    embeddings = model.embedder(x, training=False)
    all_embeddings, all_y, start = _gather(model, ctx, replicas, embeddings, y)
    outputs, loss = _head_and_loss(model, all_embeddings, all_y)
    local_size = tf.shape(embeddings)[0]
    model._global_loss_tracker.update_state(loss, sample_weight=local_size)
    return _metrics_result(model, y, outputs, start, local_size)
