"""MetricModel: compile/fit for metric learning, exact on many replicas."""

import importlib
import inspect

import keras
from keras import ops

from keras_dml import _backend, _keras_hooks
from keras_dml.layers.memory import CrossBatchMemory
from keras_dml.losses.base import MetricLoss
from keras_dml.optimizers import ParameterGroupOptimizer


def _input_shape_of(embedder):
    if not embedder.built:
        return None
    config = embedder.get_build_config() if hasattr(embedder, "get_build_config") else None
    if config and "input_shape" in config:
        return config["input_shape"]
    try:
        return embedder.input_shape
    except (AttributeError, ValueError):
        return None


def _is_tf_dataset(x):
    """True for a ``tf.data.Dataset`` (TensorFlow not imported to tell)."""
    return any(c.__module__.startswith("tensorflow") and c.__name__.endswith("DatasetV2")
               for c in type(x).__mro__)


class WarmupSwitch(keras.callbacks.Callback):
    """Switches ``MetricModel`` in and out of its backbone warm-up by epoch.

    ``MetricModel.fit`` adds it when ``warmup_epochs > 0``: epochs
    ``0 .. warmup_epochs - 1`` (as ``fit`` numbers them, so a run resumed
    with ``BackupAndRestore`` or ``initial_epoch`` knows where it is) train
    with the backbone frozen.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.model._set_warming_up(epoch < self.model.warmup_epochs)


@keras.saving.register_keras_serializable(package="keras_dml")
@_keras_hooks.build_from_first_replica_batch
class MetricModel(keras.Model):
    """An embedder trained with a metric-learning loss, on the global batch.

    ``model(images)`` returns the embedder's embeddings: the serving path has
    no proxies. During training the loss sees ``proxies(embeddings)`` (the
    cosine similarities to the class proxies) when a ``Proxies`` layer is
    given, the embeddings themselves otherwise; ``y_true`` are class ids [B]
    or continuous label vectors [B, L], whatever the loss takes.

    Distribution: the papers' losses are defined on the whole batch (pairs,
    triplets and proxies across all of it), so under a ``tf.distribute``
    strategy every replica all-gathers the embeddings and labels and
    computes the loss L of the *global* batch. Replica r differentiates
    ``J_r = (L + Omega) / n`` (n replicas, Omega the regularisation losses,
    computed alike on every replica): the
    gradient of ``all_gather`` all-reduces the incoming gradients and keeps
    the replica's slice, so the embedder's gradient on replica r is exactly
    ``dL/de_r de_r/dtheta`` and their sum over replicas is ``dL/dtheta``; the
    proxies' gradient, the same ``dL/dP / n`` on every replica, sums to
    ``dL/dP`` (counted once). The gradients are then summed over replicas
    once, before clipping and the optimiser step, so the update equals the
    one of a single device on the global batch. (BatchNorm layers in
    training mode normalise with their replica's statistics unless built
    with ``synchronized=True``; with that, or with ``freeze_batchnorm`` (the
    authors' setting), the update is exact too.)

    Backends: the same model, loss and recipe train under TensorFlow, JAX
    and PyTorch and give the same update (tests/models/test_backend_training.py).
    Under JAX the step is Keras' stateless one (``jax.jit``); with
    ``keras.distribution.DataParallel`` the batch is one global array
    sharded over the devices, so the loss, its gradient and BatchNorm's
    statistics are those of the global batch without any gather, and the
    update equals one device's. PyTorch trains on one device (Keras has no
    ``keras.distribution`` for it). Differences: under JAX a variable the
    loss does not reach gets a zero gradient (TensorFlow and PyTorch: None,
    skipped by the optimiser), which matters only for such variables.

    Args:
      embedder: a Keras model, images -> embeddings [B, D]; use
        ``build_embedder`` (warm-up and ``freeze_batchnorm`` need its
        ``backbone`` / ``head`` parts).
      proxies: optional ``keras_dml.layers.Proxies`` for the proxy losses.
      memory_size: optional M: cross-batch memory (XBM). The model keeps the
        last M embeddings and labels of the global batch (after the
        all-gather, so 1 and n replicas hold the same memory) in a
        ``keras_dml.layers.CrossBatchMemory`` (non-trainable weights, saved
        with the model); each training step enqueues the batch, then
        computes the pair loss of the batch against the whole memory, each
        example's own copy excluded, as PML's ``CrossBatchMemory(loss,
        embedding_size, memory_size)``. The loss must support references
        (contrastive, multi_similarity, triplet, circle); evaluation
        (``test_step``) uses the batch alone. The global batch must not
        exceed M.
    """

    def __init__(self, embedder, proxies=None, memory_size=None, **kwargs):
        super().__init__(**kwargs)
        self.embedder = embedder
        self.proxies = proxies
        if memory_size is not None and proxies is not None:
            raise ValueError("memory_size (cross-batch memory) is for pair "
                             "losses on embeddings; this model has proxies.")
        self.memory_size = None if memory_size is None else int(memory_size)
        self.memory = (None if memory_size is None
                       else CrossBatchMemory(self.memory_size, name="cross_batch_memory"))
        self.warmup_epochs = 0
        self._warming_up = False
        # Testing switch: False computes the loss per replica (no gather),
        # which is what plain Keras would do.
        self._exact_global_batch = True
        # The mean loss of the global batch, logged as "loss" in place of the
        # tracker Keras' compile creates (see `metrics`).
        self._global_loss_tracker = keras.metrics.Mean(name="loss")
        shape = _input_shape_of(embedder)
        if shape is not None:
            self.build(shape)

    # -- model ---------------------------------------------------------------
    def build(self, input_shape):
        if not self.embedder.built:
            self.embedder.build(input_shape)
        if self.proxies is not None and not self.proxies.built:
            dim = self.embedder.compute_output_shape(input_shape)[-1]
            self.proxies.build((None, dim))
        if self.memory is not None and not self.memory.built:
            dim = self.embedder.compute_output_shape(input_shape)[-1]
            self.memory.build((None, dim))
        self.built = True

    def call(self, inputs, training=None):
        return self.embedder(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return self.embedder.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            embedder=keras.saving.serialize_keras_object(self.embedder),
            proxies=(None if self.proxies is None else
                     keras.saving.serialize_keras_object(self.proxies)),
            memory_size=self.memory_size,
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["embedder"] = keras.saving.deserialize_keras_object(
            config["embedder"], custom_objects=custom_objects)
        if config.get("proxies") is not None:
            config["proxies"] = keras.saving.deserialize_keras_object(
                config["proxies"], custom_objects=custom_objects)
        return cls(**config)

    # -- parts ---------------------------------------------------------------
    @property
    def backbone(self):
        return getattr(self.embedder, "backbone", None)

    @property
    def head(self):
        return getattr(self.embedder, "head", None)

    def _variable_group(self, variable):
        if self.proxies is not None and any(
                variable is v for v in self.proxies.trainable_variables):
            return "proxies"
        if self.head is not None and any(
                variable is v for v in self.head.trainable_variables):
            return "head"
        return "backbone"

    # -- compile -------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None,
                proxy_lr_multiplier=1.0, warmup_epochs=0, clip_value=None,
                freeze_batchnorm=False, **kwargs):
        """Keras ``compile`` plus the Proxy Anchor authors' recipe.

        Args:
          optimizer: any Keras optimiser (or ``LossScaleOptimizer`` of one).
            It is cloned per parameter group (see
            ``keras_dml.optimizers.ParameterGroupOptimizer``), not modified;
            ``model.optimizer`` is that ``ParameterGroupOptimizer`` (inside
            a ``LossScaleOptimizer`` if you passed one).
          loss: a ``keras_dml.losses.MetricLoss`` (every keras_dml loss):
            a scalar loss of the whole batch.
          metrics: Keras metrics, updated with each replica's labels and
            training-head outputs.
          proxy_lr_multiplier: the proxies learn with the same optimiser at
            ``lr * proxy_lr_multiplier`` (100 in the paper).
          warmup_epochs: for the first epochs of ``fit`` the backbone is
            frozen: it runs in inference mode (BatchNorm statistics kept) and
            its weights are not updated; the head and proxies train.
          clip_value: element-wise gradient clipping (10 in the paper),
            applied to the global gradient of every group.
          freeze_batchnorm: put every BatchNorm layer of the backbone in
            inference mode with frozen gamma/beta (``trainable=False``), as
            the authors on CUB-200 and Cars-196.
          **kwargs: other ``keras.Model.compile`` arguments (run_eagerly,
            steps_per_execution, jit_compile, auto_scale_loss, ...).

        The fast path is the default: under TensorFlow the head and the loss
        (proxies, loss and their gradients) run as one XLA-compiled function
        (``compiled_loss``) inside the step unless ``jit_compile=False`` or
        ``run_eagerly=True`` is given or the loss says it cannot compile
        (``MetricLoss.supports_xla``) or a tf.distribute strategy is in use
        (as Keras' "auto" decides for the whole step); Keras' own ``jit_compile="auto"``
        leaves the whole step uncompiled on a CPU, where XLA's convolutions
        are slower than TensorFlow's. ``jit_compile=True`` compiles the whole
        step. Under JAX the step is ``jax.jit``-compiled anyway.
        """
        if "loss_weights" in kwargs or "weighted_metrics" in kwargs:
            raise ValueError("MetricModel trains one loss without weights; "
                             "loss_weights / weighted_metrics are not supported.")
        loss_obj = keras.losses.get(loss) if loss is not None else None
        if not isinstance(loss_obj, MetricLoss):
            raise TypeError(
                "MetricModel needs a keras_dml loss (a "
                "keras_dml.losses.MetricLoss: a scalar loss of the whole "
                f"batch); got {loss!r}. Wrap other losses by subclassing "
                "MetricLoss.")
        if self.proxies is None and loss_obj.takes_proxies:
            raise ValueError(
                f"{type(loss_obj).__name__} takes similarities to proxies: "
                "give MetricModel a keras_dml.layers.Proxies layer.")
        if self.proxies is not None and not loss_obj.takes_proxies:
            raise ValueError(
                f"{type(loss_obj).__name__} takes embeddings, not proxy "
                "similarities: build MetricModel without proxies.")
        if self.memory is not None and not loss_obj.supports_references:
            raise ValueError(
                f"{type(loss_obj).__name__} cannot compare a batch with the "
                "cross-batch memory (memory_size); use a pair loss: "
                "contrastive, multi_similarity, triplet or circle.")
        if (self.proxies is not None
                and self.proxies.proxies_per_class != loss_obj.proxies_per_class):
            raise ValueError(
                f"{type(loss_obj).__name__} expects {loss_obj.proxies_per_class} "
                "proxies per class but the Proxies layer has "
                f"{self.proxies.proxies_per_class}.")
        warmup_epochs = int(warmup_epochs)
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0; got {warmup_epochs}.")
        if (warmup_epochs or freeze_batchnorm) and (
                self.backbone is None or self.head is None):
            raise ValueError(
                "warmup_epochs and freeze_batchnorm need an embedder with "
                "`backbone` and `head` parts: build it with "
                "keras_dml.models.build_embedder.")
        if float(proxy_lr_multiplier) != 1.0 and self.proxies is None:
            raise ValueError("proxy_lr_multiplier is set but the model has no proxies.")
        if freeze_batchnorm:
            for layer in self.embedder.backbone_batchnorm_layers:
                layer.trainable = False

        base = keras.optimizers.get(optimizer)
        loss_scale = None
        if isinstance(base, keras.optimizers.LossScaleOptimizer):
            loss_scale = base
            base = base.inner_optimizer
        wrapped = ParameterGroupOptimizer(
            base, multipliers={"proxies": float(proxy_lr_multiplier)},
            clip_value=clip_value, name="metric_optimizer")
        wrapped.set_group_fn(self._variable_group)
        if loss_scale is not None:
            wrapped = keras.optimizers.LossScaleOptimizer(
                wrapped, initial_scale=loss_scale.initial_scale,
                dynamic_growth_steps=loss_scale.dynamic_growth_steps)

        self.warmup_epochs = warmup_epochs
        self._warming_up = False
        # The XLA-compiled head + loss of the TensorFlow step (see above).
        self._jit_loss = (kwargs.get("jit_compile", "auto") is not False
                          and not kwargs.get("run_eagerly", False)
                          and getattr(loss_obj, "supports_xla", True))
        # The loss is called by compute_loss on the global batch, not through
        # Keras' compiled-loss wrapper: Keras is compiled without a loss.
        super().compile(optimizer=wrapped, loss=None, metrics=metrics,
                        **kwargs)
        self.loss = loss_obj
        self._metric_compile_config = dict(
            optimizer=optimizer if loss_scale is None else loss_scale,
            loss=loss_obj, metrics=metrics,
            proxy_lr_multiplier=float(proxy_lr_multiplier),
            warmup_epochs=warmup_epochs, clip_value=clip_value,
            freeze_batchnorm=bool(freeze_batchnorm), **kwargs)

    @property
    def metrics(self):
        """Keras' metrics, with this model's loss tracker (the global batch's
        loss) first, in place of the "loss" tracker of Keras' compile."""
        tracker = getattr(self, "_global_loss_tracker", None)
        if tracker is None:   # during __init__
            return super().metrics
        return [tracker] + [m for m in super().metrics
                            if m is not tracker and m.name != "loss"]

    def get_compile_config(self):
        if self.compiled and hasattr(self, "_metric_compile_config"):
            return keras.saving.serialize_keras_object(self._metric_compile_config)
        return {}

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # -- fit -----------------------------------------------------------------
    def fit(self, *args, **kwargs):
        # A tf.data.Dataset is shuffled by its pipeline; Keras' default
        # shuffle=True would only print "`shuffle=True` was passed, but will
        # be ignored" on every fit.
        x = args[0] if args else kwargs.get("x")
        if "shuffle" not in kwargs and len(args) <= 8 and _is_tf_dataset(x):
            kwargs["shuffle"] = False
        if self.warmup_epochs > 0:
            bound = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs)
            arguments = dict(bound.arguments)
            arguments.pop("self")
            callbacks = arguments.get("callbacks")
            if isinstance(callbacks, keras.callbacks.CallbackList):
                if not any(isinstance(c, WarmupSwitch) for c in callbacks.callbacks):
                    callbacks.append(WarmupSwitch())
            else:
                callbacks = list(callbacks or [])
                if not any(isinstance(c, WarmupSwitch) for c in callbacks):
                    callbacks.append(WarmupSwitch())
            arguments["callbacks"] = callbacks
            extra = arguments.pop("kwargs", {})
            return super().fit(**arguments, **extra)
        return super().fit(*args, **kwargs)

    def _set_warming_up(self, flag):
        flag = bool(flag)
        if flag != self._warming_up:
            self._warming_up = flag
            # The flag is read when the step is traced: trace a new one.
            if self.train_function is not None:
                self.make_train_function(force=True)

    @property
    def warming_up(self):
        """True while the backbone is frozen (warm-up epochs of ``fit``)."""
        return self._warming_up

    # -- steps ---------------------------------------------------------------
    # The numeric parts (embedding, head, loss) are keras.ops and shared; the
    # step itself is per backend because Keras' trainers are: TensorFlow
    # (GradientTape, tf.distribute all-gather), JAX (stateless, jax.jit,
    # keras.distribution) and PyTorch (autograd), in keras_dml/models/_steps_*.

    def _head_outputs(self, embeddings):
        return embeddings if self.proxies is None else self.proxies(embeddings)

    def _loss_of_outputs(self, y, outputs, training=False):
        # In floatx, as Keras' compiled loss returns it. Training with a
        # cross-batch memory: enqueue the (global) batch, then the loss of
        # the batch against the memory.
        if training and self.memory is not None:
            references = self.memory.enqueue(outputs, y)
            loss = self.loss(y, outputs, references=references)
        else:
            loss = self.loss(y, outputs)
        loss = ops.cast(loss, keras.config.floatx())
        extra = [ops.cast(ops.sum(l), loss.dtype) for l in self.losses]
        if extra:
            total = extra[0]
            for term in extra[1:]:
                total = total + term
            loss = loss + total
        return loss

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        """Loss of the batch from embeddings ``y_pred``: the compiled loss on
        ``(y, proxies(y_pred))`` (or on ``(y, y_pred)`` without proxies),
        plus the regularisation losses. Not scaled for distribution."""
        del x, training
        if sample_weight is not None:
            raise ValueError("MetricModel losses are defined on the whole "
                             "batch and take no sample_weight.")
        return self._loss_of_outputs(y, self._head_outputs(y_pred))

    def _unpack(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError("MetricModel needs labels: data must be (x, y).")
        if sample_weight is not None:
            raise ValueError("MetricModel losses are defined on the whole "
                             "batch and take no sample_weight.")
        return x, y

    def _embed_for_training(self, x):
        if not self._warming_up:
            return self.embedder(x, training=True)
        # Warm-up: backbone frozen, in inference mode (BatchNorm statistics
        # untouched); only the head (and proxies) get gradients.
        features = ops.stop_gradient(self.backbone(x, training=False))
        return self.head(features, training=True)

    def _step_variables(self):
        if not self._warming_up:
            return list(self.trainable_variables)
        variables = list(self.head.trainable_variables)
        if self.proxies is not None:
            variables += list(self.proxies.trainable_variables)
        return variables

    def train_step(self, *args):
        """One optimiser step on the global batch.

        TensorFlow and PyTorch: ``train_step(data)``; JAX (Keras' stateless
        trainer): ``train_step(state, data) -> (logs, state)``.
        """
        return _steps().train_step(self, *args)

    def test_step(self, *args):
        return _steps().test_step(self, *args)


def compiled_loss(fn, jit_compile=True):
    """``fn`` (a loss computation: tensors in, tensors out) on this backend's
    fast path: under TensorFlow ``tf.function(fn, jit_compile=True)`` (XLA
    fuses the loss's elementwise work and its gradient into a few kernels:
    Proxy Anchor at C=11,318 takes ~0.7x the time of plain ``tf.function``),
    else ``fn`` itself (JAX's step is ``jax.jit``-compiled as a whole;
    PyTorch runs eagerly). ``jit_compile=False`` returns ``fn``."""
    if not jit_compile or not _backend.is_tensorflow():
        return fn
    import tensorflow as tf
    return tf.function(fn, jit_compile=True, reduce_retracing=True)


def _steps():
    """The module with this backend's train/test steps."""
    backend = _backend.name()
    if backend not in ("tensorflow", "jax", "torch"):
        raise NotImplementedError(
            f"MetricModel trains under the tensorflow, jax and torch Keras "
            f"backends; got {backend!r}.")
    return importlib.import_module(f"keras_dml.models._steps_{backend}")
