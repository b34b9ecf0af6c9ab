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

    It also carries how its images are prepared, for serving: ``preprocessing``
    (a name of ``kd.backbones.preprocessing``: the normalisation applied to
    float 0-255 images before the model; "identity" for none; None when
    unknown) and ``eval_transform`` (the evaluation transform, e.g.
    ``kd.data.eval_transform(224)``, or None for a plain resize to the
    model's input size). Both are saved with the model, and
    ``kd.export`` uses them by default, so the served embeddings equal the
    evaluated ones.

    Build it with ``build_embedder``.
    """

    def __init__(self, backbone, embedding_dim=512, pooling="avg+max",
                 normalize=True, preprocessing=None, eval_transform=None, **kwargs):
        super().__init__(**kwargs)
        self.preprocessing, self.eval_transform = _serving_spec(preprocessing,
                                                                eval_transform)
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
            preprocessing=self.preprocessing,
            eval_transform=None if self.eval_transform is None
            else self.eval_transform.get_config(),
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(
            config["backbone"], custom_objects=custom_objects)
        if isinstance(config.get("eval_transform"), dict):
            from keras_dml.image_layers import Compose
            config["eval_transform"] = Compose.from_config(config["eval_transform"])
        return cls(**config)


def _serving_spec(preprocessing, eval_transform):
    """Checked (preprocessing name or None, eval transform or None)."""
    from keras_dml.backbones import preprocessing as known
    if preprocessing is not None and preprocessing not in known.PREPROCESSING:
        raise ValueError(
            f"preprocessing must be a name of kd.backbones.preprocessing "
            f"{sorted(known.PREPROCESSING)} (the model saves it) or None; got "
            f"{preprocessing!r}.")
    if eval_transform is not None and not hasattr(eval_transform, "get_config"):
        raise TypeError(
            "eval_transform must be a kd.data transform (eval_transform(...), "
            "resize_transform(...): a Compose of Keras layers, which the model saves); "
            f"got {type(eval_transform).__name__}.")
    return preprocessing, eval_transform


def build_embedder(backbone, embedding_dim=512, pooling="avg+max",
                   normalize=True, input_shape=None, name="embedder",
                   preprocessing="auto", eval_transform=None):
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
      preprocessing: the normalisation the training pipeline applies before
        the model (a ``kd.backbones.preprocessing`` name, e.g.
        ``"efficientnet_lite"``); "auto": the one of a backbone made by
        ``kd.backbones.get`` (None for another backbone: unknown).
      eval_transform: the evaluation transform of the pipeline (e.g.
        ``kd.data.eval_transform(224)``); None: a plain resize.
        Both are carried by the model for ``kd.export`` (see ``Embedder``).
    Returns:
      A built ``Embedder`` (a ``keras.Model``): images -> embeddings [B, D].
    """
    if preprocessing == "auto":
        preprocessing = getattr(backbone, "keras_dml_preprocessing", None)
    embedder = Embedder(backbone, embedding_dim=embedding_dim,
                        pooling=pooling, normalize=normalize, name=name,
                        preprocessing=preprocessing, eval_transform=eval_transform)
    if input_shape is None:
        try:
            input_shape = tuple(backbone.input_shape[1:])
        except (AttributeError, ValueError):
            input_shape = None
    if input_shape is not None:
        embedder.build((None,) + tuple(input_shape))
    return embedder
