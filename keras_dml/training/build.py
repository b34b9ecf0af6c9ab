"""The model side of a run: loss, model, optimiser and callbacks.

    loss = build.build_loss(recipe, task)
    model = build.build_model(recipe, loss, num_classes)
    build.compile_model(model, recipe, loss, steps_per_epoch)
"""

import os
from typing import List, Optional

import keras

from keras_dml import optimizers
from keras_dml.training.recipe import RecipeError
from keras_dml.training.rundir import RunPaths


def build_loss(recipe, task):
    """The recipe's loss, checked against the task's kind of labels."""
    from keras_dml import losses
    allowed = losses.available(continuous_labels=task.continuous)
    if recipe.loss not in allowed:
        kind = "continuous" if task.continuous else "class"
        raise RecipeError(f"loss {recipe.loss!r} does not take {kind} labels; losses for "
                          f"{kind} labels: {', '.join(allowed)}.")
    kwargs = recipe.loss_arguments()
    if task.continuous:
        kwargs.update(task.label_distance_args())
    return losses.get(recipe.loss, **kwargs)


def learning_rate(recipe, steps_per_epoch: int):
    """A float or a schedule: inverse-time decay, step decay, or constant."""
    if recipe.lr_inverse_decay > 0:
        return keras.optimizers.schedules.InverseTimeDecay(
            recipe.lr, decay_steps=1, decay_rate=recipe.lr_inverse_decay)
    decay = list(recipe.lr_decay_epochs)
    if not decay or recipe.lr_decay_gamma == 1.0:
        return recipe.lr
    return optimizers.step_decay(recipe.lr, steps_per_epoch,
                                 decay[0] if len(decay) == 1 else decay, recipe.lr_decay_gamma)


def build_optimizer(recipe, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """SGD (momentum 0.9) or AdamW with the recipe's learning rate and decay."""
    lr = learning_rate(recipe, steps_per_epoch)
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, weight_decay=recipe.weight_decay or None)
    return keras.optimizers.AdamW(lr, weight_decay=recipe.weight_decay)


def build_model(recipe, loss, num_classes: Optional[int]):
    """Backbone -> embedding head (-> proxies if the loss takes them)."""
    from keras_dml import backbones, layers, models
    weights = None if recipe.weights in ("", "none", "None") else recipe.weights
    shape = (recipe.image_size, recipe.image_size, 3)
    backbone = backbones.get(recipe.backbone, input_shape=shape, weights=weights)
    embedder = models.build_embedder(backbone, embedding_dim=recipe.embedding_dim,
                                     pooling="avg+max", normalize=True)
    proxies = None
    if loss.takes_proxies:
        proxies = layers.Proxies(num_classes, proxies_per_class=loss.proxies_per_class)
    return models.MetricModel(embedder, proxies=proxies)


def compile_model(model, recipe, loss, steps_per_epoch: int) -> None:
    """Compile with the recipe's optimiser, proxy lr multiplier, warm-up,
    clipping and frozen BatchNorm."""
    model.compile(optimizer=build_optimizer(recipe, steps_per_epoch), loss=loss,
                  proxy_lr_multiplier=recipe.proxy_lr_multiplier if loss.takes_proxies else 1.0,
                  warmup_epochs=recipe.warmup_epochs, clip_value=recipe.clip_value or None,
                  freeze_batchnorm=recipe.freeze_bn)


def validation_callback(recipe, task, val_ds):
    """The validation metrics callback (None without a validation split)."""
    from keras_dml import evaluation
    if val_ds is None:
        return None
    if task.continuous:
        return evaluation.ContinuousRetrievalCallback(
            val_ds, ks=recipe.ks, metric=task.metric,
            **task.label_distance_args())
    return evaluation.RetrievalCallback(val_ds, ks=recipe.ks)


def standard_callbacks(paths: RunPaths, val_cb, resume: bool) -> List[keras.callbacks.Callback]:
    """Validation metrics first (they write into logs), then the consumers:
    best checkpoint, history.csv, TensorBoard, BackupAndRestore, NaN stop."""
    monitor, mode = (val_cb.monitor, val_cb.mode) if val_cb else ("loss", "min")
    threshold = None
    if resume and os.path.exists(paths.best_weights):
        # The interrupted run's best so far (ModelCheckpoint, before the CSV
        # logger, saw every logged epoch): only a better epoch replaces it.
        seen = paths.read_history().get(monitor)
        if seen:
            threshold = max(seen) if mode == "max" else min(seen)
    return [val_cb] * (val_cb is not None) + [
        keras.callbacks.ModelCheckpoint(paths.best_weights, monitor=monitor, mode=mode,
                                        save_best_only=True, save_weights_only=True,
                                        initial_value_threshold=threshold),
        keras.callbacks.CSVLogger(paths.history, append=resume),
        keras.callbacks.TensorBoard(paths.logs),
        keras.callbacks.BackupAndRestore(paths.backup),
        keras.callbacks.TerminateOnNaN(),
    ]
