"""Cross-batch memory (XBM, Wang et al., CVPR 2020): a queue of past embeddings."""

import keras
from keras import ops

from keras_dml import _backend
from keras_dml import ops as kd_ops
from keras_dml.losses.pairs import References


@keras.saving.register_keras_serializable(package="keras_dml")
class CrossBatchMemory(keras.layers.Layer):
    """The last ``size`` embeddings and labels seen in training, as weights.

    ``enqueue(embeddings, labels)`` writes a batch of B <= M rows at the
    queue position (wrapping around), then returns the whole memory as
    ``keras_dml.losses.References`` for a pair loss: the embeddings with the
    gradient stopped (PML stores ``embeddings.detach()``), the labels, which
    slots are filled and where each batch row was written (its own copy,
    which must not be its positive). This is PML's
    ``CrossBatchMemory.forward``: enqueue first, then compare the batch with
    the memory that now includes it.

    State (non-trainable weights, saved with the model, so a resumed run
    continues exactly): ``embeddings`` [M, D] (the variable dtype: float32 under mixed precision), ``labels`` [M] int32,
    ``position`` (the next slot) and ``filled`` (slots in use), int32
    scalars. Under ``tf.distribute`` every replica computes the same global
    batch, hence the same new state; the weights are written with
    ``aggregation="only_first_replica"``.

    Memory: M x D floats; a pair loss against it builds [B, M] masks and
    similarities, nothing of size M x M (except triplets, whose loss blocks
    anchors: ``block * M * M``).
    """

    def __init__(self, size, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if int(size) < 1:
            raise ValueError(f"memory size must be >= 1; got {size}.")
        self.size = int(size)

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError("CrossBatchMemory needs a known embedding dimension.")
        common = dict(trainable=False, autocast=False,
                      aggregation="only_first_replica")
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.size, int(dim)), dtype=self.variable_dtype,
            initializer="zeros", **common)
        self.labels = self.add_weight(
            name="labels", shape=(self.size,), dtype="int32",
            initializer="zeros", **common)
        self.position = self.add_weight(
            name="position", shape=(), dtype="int32", initializer="zeros", **common)
        self.filled = self.add_weight(
            name="filled", shape=(), dtype="int32", initializer="zeros", **common)

    def enqueue(self, embeddings, labels):
        """Write the batch, return the updated memory as ``References``.

        Args:
          embeddings: [B, D], B <= M (the global batch).
          labels: int class ids [B] or [B, 1].
        """
        embeddings = ops.convert_to_tensor(embeddings)
        labels = kd_ops.flatten_labels(labels)
        batch = embeddings.shape[0]
        if batch is not None and batch > self.size:
            raise ValueError(f"a batch of {batch} does not fit a memory of "
                             f"{self.size} (PML requires batch <= memory_size).")
        if batch is None:
            batch = ops.shape(embeddings)[0]
            _backend.check(batch <= self.size,
                           f"the batch must not exceed memory_size={self.size}")
        size = ops.convert_to_tensor(self.size, "int32")
        slots = ops.mod(ops.cast(self.position, "int32")
                        + ops.arange(batch, dtype="int32"), size)
        stored = ops.cast(ops.stop_gradient(embeddings), self.embeddings.dtype)
        memory = ops.scatter_update(self.embeddings, ops.expand_dims(slots, 1), stored)
        memory_labels = ops.scatter_update(self.labels, ops.expand_dims(slots, 1),
                                           labels)
        batch_t = ops.cast(batch, "int32")
        filled = ops.minimum(ops.cast(self.filled, "int32") + batch_t, size)
        self.embeddings.assign(memory)
        self.labels.assign(memory_labels)
        self.position.assign(ops.mod(ops.cast(self.position, "int32") + batch_t, size))
        self.filled.assign(filled)
        valid = ops.arange(self.size, dtype="int32") < filled
        return References(ops.cast(memory, embeddings.dtype), memory_labels,
                          valid, slots)

    def call(self, inputs):
        return inputs

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size)
        return config
