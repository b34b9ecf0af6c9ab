"""The Proxy Anchor authors' embedding head: pool, one linear layer, L2."""

import keras
from keras import ops

from keras_dml.layers.normalize import L2Normalize

POOLINGS = ("avg+max", "avg", "max", "cls", "mean", "none")


@keras.saving.register_keras_serializable(package="keras_dml")
class EmbeddingHead(keras.layers.Layer):
    """Feature map -> embedding: ``l2n(W (GAP(x) + GMP(x)) + b)``.

    Args:
      dim: embedding size.
      pooling: "avg+max" (the authors': global average plus global max
        pooling, summed), "avg", "max", or "none" for inputs already [B, F];
        for transformer tokens [B, T, C] (``kd.backbones.hub``): "cls" (the
        first token, the class token) or "mean" (the mean of all T tokens).
      normalize: L2-normalise the output.
    The Dense layer is initialised as the authors' (``kaiming_normal_`` with
    fan-out, std ``sqrt(2 / dim)``, zero bias).
    """

    def __init__(self, dim, pooling="avg+max", normalize=True, **kwargs):
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}.")
        self.dim = int(dim)
        self.pooling = pooling
        self.normalize = bool(normalize)
        self.dense = keras.layers.Dense(
            self.dim,
            kernel_initializer=keras.initializers.VarianceScaling(
                scale=2.0, mode="fan_out", distribution="untruncated_normal"),
            name="embedding",
        )
        self.l2 = L2Normalize() if self.normalize else None

    def _pool(self, x):
        if self.pooling == "none":
            return x
        if self.pooling in ("cls", "mean"):
            if len(x.shape) != 3:
                raise ValueError(
                    f"pooling={self.pooling!r} expects tokens [B, T, C]; got "
                    f"shape {x.shape}.")
            return x[:, 0] if self.pooling == "cls" else ops.mean(x, axis=1)
        if len(x.shape) != 4:
            raise ValueError(
                f"pooling={self.pooling!r} expects a feature map [B, H, W, C]; "
                f"got shape {x.shape}.")
        if self.pooling == "avg":
            return ops.mean(x, axis=(1, 2))
        if self.pooling == "max":
            return ops.max(x, axis=(1, 2))
        return ops.mean(x, axis=(1, 2)) + ops.max(x, axis=(1, 2))

    def build(self, input_shape):
        features = input_shape[-1]
        self.dense.build((None, features))

    def call(self, inputs):
        x = self.dense(self._pool(inputs))
        return self.l2(x) if self.normalize else x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.dim)

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, pooling=self.pooling, normalize=self.normalize)
        return config
