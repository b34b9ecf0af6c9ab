"""Embedders: a backbone followed by the embedding head, as one Keras model."""

import keras

from keras_dml.backbones.common import batchnorm_layers
from keras_dml.layers import EmbeddingHead


@keras.saving.register_keras_serializable(package="keras_dml")
class Embedder(keras.Model):
    """``images -> head(backbone(images))``: L2-normalised embeddings [B, D].

    ``backbone`` maps a batch of images to a feature map [B, h, w, C] (or to
    features [B, F] with ``pooling="none"``); ``head`` is a
    ``keras_dml.layers.EmbeddingHead`` (pooling, one linear layer, optional
    L2 normalisation). Keeping the two apart lets ``MetricModel`` run the
    backbone frozen in inference mode while the head trains (warm-up), and
    find the backbone's BatchNorm layers (``freeze_batchnorm``).

    Build it with ``build_embedder``.
    """

    def __init__(self, backbone, embedding_dim=512, pooling="avg+max",
                 normalize=True, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(backbone, keras.layers.Layer):
            raise TypeError(
                "backbone must be a Keras model or layer mapping images to "
                f"features; got {type(backbone).__name__}.")
        self.backbone = backbone
        self.embedding_dim = int(embedding_dim)
        self.pooling = pooling
        self.normalize = bool(normalize)
        self.head = EmbeddingHead(self.embedding_dim, pooling=pooling,
                                  normalize=normalize, name="embedding_head")

    def build(self, input_shape):
        if not self.backbone.built:
            self.backbone.build(input_shape)
        features = self.backbone.compute_output_shape(input_shape)
        if self.pooling == "none" and len(features) != 2:
            raise ValueError(
                'pooling="none" needs a backbone giving features [B, F]; this '
                f"one gives shape {tuple(features)}.")
        if self.pooling in ("cls", "mean") and len(features) != 3:
            raise ValueError(
                f"pooling={self.pooling!r} needs a backbone giving tokens "
                f"[B, T, C]; this one gives shape {tuple(features)}.")
        if self.pooling not in ("none", "cls", "mean") and len(features) != 4:
            raise ValueError(
                f"pooling={self.pooling!r} needs a backbone giving a feature "
                f"map [B, h, w, C]; this one gives shape {tuple(features)}. "
                'Use pooling="none" for a backbone that already pools.')
        if not self.head.built:
            self.head.build(features)
        self.built = True

    def call(self, inputs, training=None):
        return self.head(self.backbone(inputs, training=training),
                         training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.embedding_dim)

    @property
    def backbone_batchnorm_layers(self):
        """The BatchNormalization layers of the backbone."""
        return batchnorm_layers(self.backbone)

    def get_config(self):
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            embedding_dim=self.embedding_dim,
            pooling=self.pooling,
            normalize=self.normalize,
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(
            config["backbone"], custom_objects=custom_objects)
        return cls(**config)


def build_embedder(backbone, embedding_dim=512, pooling="avg+max",
                   normalize=True, input_shape=None, name="embedder"):
    """Backbone + ``EmbeddingHead``: the Proxy Anchor authors' embedder.

        f(x) = l2n( W (GAP(g(x)) + GMP(g(x))) + b )

    for the backbone g with ``pooling="avg+max"`` (the authors'; "avg",
    "max", or "none" for a backbone that already emits [B, F]).

    Args:
      backbone: a Keras model, images -> feature map [B, h, w, C] (or [B, F]).
      embedding_dim: D, the embedding size.
      pooling: see ``keras_dml.layers.EmbeddingHead``.
      normalize: L2-normalise the embeddings.
      input_shape: image shape without the batch axis; read from the
        backbone when it has a defined input.
    Returns:
      A built ``Embedder`` (a ``keras.Model``): images -> embeddings [B, D].
    """
    embedder = Embedder(backbone, embedding_dim=embedding_dim,
                        pooling=pooling, normalize=normalize, name=name)
    if input_shape is None:
        try:
            input_shape = tuple(backbone.input_shape[1:])
        except (AttributeError, ValueError):
            input_shape = None
    if input_shape is not None:
        embedder.build((None,) + tuple(input_shape))
    return embedder
