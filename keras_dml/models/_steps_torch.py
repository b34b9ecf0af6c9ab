"""MetricModel's train/test steps under the PyTorch backend.

Keras' PyTorch trainer runs eagerly on one device (no ``keras.distribution``
support), so the batch is the global batch: the step is autograd on the
loss and the same ``ParameterGroupOptimizer.apply`` as on the other
backends.
"""

import torch


def train_step(model, data):
    x, y = model._unpack(data)
    # Clear the gradients left by the previous step (torch accumulates).
    model.zero_grad()
    embeddings = model._embed_for_training(x)
    outputs = model._head_outputs(embeddings)
    loss = model._loss_of_outputs(y, outputs, training=True)
    scaled = model.optimizer.scale_loss(loss)
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    variables = model._step_variables()
    scaled.backward()
    # None for a variable the loss does not reach: the optimiser skips it,
    # as it skips TensorFlow's None gradients.
    grads = [v.value.grad for v in variables]
    with torch.no_grad():
        model.optimizer.apply(grads, variables)
    model._global_loss_tracker.update_state(
        loss.detach(), sample_weight=embeddings.shape[0])
    return model.compute_metrics(None, y, outputs.detach(), None)


def test_step(model, data):
    x, y = model._unpack(data)
    with torch.no_grad():
        embeddings = model.embedder(x, training=False)
        outputs = model._head_outputs(embeddings)
        loss = model._loss_of_outputs(y, outputs)
    model._global_loss_tracker.update_state(
        loss, sample_weight=embeddings.shape[0])
    return model.compute_metrics(None, y, outputs, None)
