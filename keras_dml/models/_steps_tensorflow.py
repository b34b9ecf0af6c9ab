"""MetricModel's train/test steps under the TensorFlow backend.

Under a ``tf.distribute`` strategy every replica all-gathers the embeddings
and labels, computes the loss of the global batch and differentiates its
share ``(L + Omega) / n``; the gradients are summed over replicas once,
before clipping and the optimiser step (see ``MetricModel``'s docstring).
"""

import tensorflow as tf


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


def train_step(model, data):
    x, y = model._unpack(data)
    ctx, replicas = _replica_context()
    with tf.GradientTape() as tape:
        embeddings = model._embed_for_training(x)
        all_embeddings, all_y, start = _gather(model, ctx, replicas, embeddings, y)
        outputs = model._head_outputs(all_embeddings)
        loss = model._loss_of_outputs(all_y, outputs, training=True)
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
    outputs = model._head_outputs(all_embeddings)
    loss = model._loss_of_outputs(all_y, outputs)
    local_size = tf.shape(embeddings)[0]
    model._global_loss_tracker.update_state(loss, sample_weight=local_size)
    return _metrics_result(model, y, outputs, start, local_size)
