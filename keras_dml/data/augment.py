"""Image transforms of the papers, as Keras layers usable in ``tf.data``.

The Proxy Anchor authors (``code/dataset/utils.py`` of
tjddus9597/Proxy-Anchor-CVPR2020, torchvision) use

* training: ``RandomResizedCrop(224)`` (area fraction ``scale=(0.08, 1)``,
  aspect ratio ``ratio=(3/4, 4/3)``) then ``RandomHorizontalFlip()``;
* testing: ``Resize(256)`` (shorter side to 256, aspect kept) then
  ``CenterCrop(224)``;

and the 256-pixel variant uses crop 256 / resize 292 (their list: crops 224,
256, 324, 448 with resizes 256, 292, 361, 512). :func:`train_transform` and
:func:`eval_transform` build these from Keras layers: ``keras.layers.RandomFlip``,
``keras.layers.CenterCrop``, ``keras.layers.Resizing`` and two small layers
defined here because Keras 3 has no exact equivalent:

* :class:`RandomResizedCrop` samples the crop box with TensorFlow's own
  Inception-style sampler ``tf.image.sample_distorted_bounding_box`` (area
  fraction uniform in ``scale``, absolute aspect ratio w/h in ``ratio``, 10
  attempts, whole image if none fits) and resizes it with
  ``tf.image.resize``. (KerasCV's ``RandomCropAndResize``, superseded by
  KerasHub, differed more from torchvision: its aspect ratio is relative to
  the image's own, and out-of-range boxes are clipped, not resampled.)
* :class:`ResizeShorterSide` is torchvision's ``Resize(int)``.

Transforms take uint8 (or float) images in [0, 255], one image [H, W, C] of
any size or a batch [B, H, W, C], and return float32 in [0, 255] (RGB as
stored). Normalisation for a backbone is a separate, named step (see
``keras_dml.backbones.preprocessing``; :func:`get_normalization`) so that
it can live inside the model and the exported SavedModel.

Which normalisation each backbone uses (names of
``keras_dml.backbones.preprocessing``):

=====================  ==================================================
``"bn_inception"``     BN-Inception, the papers' main backbone (Caffe
                       weights): RGB -> BGR, 0-255, minus [104, 117, 128]
``"torch_imagenet"``   torchvision ResNet / GoogLeNet weights (the authors'
                       ResNet-50 runs): (x/255 - ImageNet mean) / std
``"caffe"``            keras.applications ResNet: BGR minus
                       [103.939, 116.779, 123.68] (also the Beyond-Binary
                       authors' pose networks)
``"inception"``        keras.applications Inception / GoogLeNet-style:
                       x / 127.5 - 1
``"efficientnet_lite"``  EfficientNet-Lite0: (x - 127) / 128
=====================  ==================================================
"""

import keras
import tensorflow as tf

from keras_dml.backbones import preprocessing as _preprocessing

# The layers live in a TensorFlow-free-at-import module so that ``import
# keras_dml`` registers them (keras_dml._registration).
from keras_dml.image_layers import (  # noqa: F401
    Compose,
    GrayscaleToRGB,
    RandomResizedCrop,
    ResizeShorterSide,
    StrokeWidthJitter,
)

# The authors' resize for each crop size (code/dataset/utils.py comment).
AUTHORS_RESIZE = {224: 256, 256: 292, 324: 361, 448: 512}


def default_resize(crop_size):
    """The test-time resize (shorter side) for a centre crop of ``crop_size``.

    The authors' pairs for 224/256/324/448; otherwise ``int(crop * 8 / 7)``
    (the 256/224 ratio).
    """
    return AUTHORS_RESIZE.get(int(crop_size), int(crop_size * 8 / 7))


def _pair(size):
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"size must be an int or (height, width); got {size}.")
    return size


def train_transform(size=224, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                    flip=True, rgb=False, seed=None):
    """The authors' training augmentation: random resized crop + h-flip.

    Args:
      size: output size (int or (height, width)); 224 in the papers, 256 for
        their high-resolution rows, e.g. 32 for Fashion-MNIST.
      scale, ratio: area fraction and aspect-ratio ranges of the crop
        (torchvision's defaults, which the authors use).
      flip: random horizontal flip with probability 1/2.
      rgb: repeat grey images to three channels first.
      seed: op-level seed for the random layers.

    Returns a callable ``image(s) uint8/float [0, 255] -> float32 [0, 255]``.
    """
    height, width = _pair(size)
    steps = [GrayscaleToRGB()] if rgb else []
    steps.append(RandomResizedCrop(height, width, scale=scale, ratio=ratio,
                                   seed=seed))
    if flip:
        steps.append(keras.layers.RandomFlip("horizontal", seed=seed))
    return Compose(steps, training=True)


def eval_transform(size=224, resize=None, rgb=False):
    """The authors' test transform: shorter side to ``resize``, centre crop.

    ``resize`` defaults to :func:`default_resize` (256 for 224, 292 for 256).
    ``resize=0`` skips the shorter-side resize and resizes the whole image
    to ``size`` instead (no crop), e.g. for images already at their size.
    Returns a callable ``image(s) -> float32 [0, 255]``.
    """
    height, width = _pair(size)
    steps = [GrayscaleToRGB()] if rgb else []
    if resize == 0:
        steps.append(keras.layers.Resizing(height, width))
    else:
        resize = default_resize(min(height, width)) if resize is None \
            else int(resize)
        if resize < max(height, width):
            raise ValueError(f"resize ({resize}) must be >= the crop size "
                             f"{(height, width)}.")
        steps += [ResizeShorterSide(resize),
                  keras.layers.CenterCrop(height, width)]
    return Compose(steps, training=False)


def resize_transform(size, rgb=False):
    """Plain resize of the whole image to ``size`` (no crop, no flip): for
    tasks whose labels are tied to the full frame (room layouts)."""
    height, width = _pair(size)
    steps = [GrayscaleToRGB()] if rgb else []
    steps.append(keras.layers.Resizing(height, width))
    return Compose(steps, training=False)


def glyph_train_transform(size, rotation=5.0, zoom=0.08, translation=0.05, stroke=0.5,
                          rgb=False, seed=None):
    """A light augmentation for drawn characters (``kd.data.load_glyphs``):
    stroke-width jitter (:class:`StrokeWidthJitter`), then a small random
    affine map: rotation up to ``rotation`` degrees, zoom by up to
    ``zoom`` (fraction), translation by up to ``translation`` of the side;
    the background (0) fills what moves in. No flip and no crop: a mirrored
    or cut character may be another character.

    Returns a callable ``image(s) uint8/float [0, 255] -> float32 [0, 255]``
    of ``size`` (the image is resized first when it is not that size).
    """
    height, width = _pair(size)
    steps = [keras.layers.Resizing(height, width)]
    if stroke:
        steps.append(StrokeWidthJitter(stroke, seed=seed))
    if rotation:
        steps.append(keras.layers.RandomRotation(rotation / 360.0, fill_mode="constant",
                                                 fill_value=0.0, seed=seed))
    if zoom:
        steps.append(keras.layers.RandomZoom((-zoom, zoom), fill_mode="constant",
                                             fill_value=0.0, seed=seed))
    if translation:
        steps.append(keras.layers.RandomTranslation(translation, translation,
                                                    fill_mode="constant", fill_value=0.0,
                                                    seed=seed))
    if rgb:
        steps.append(GrayscaleToRGB())
    return Compose(steps, training=True)


def get_normalization(normalization):
    """A normalisation callable from a name of
    ``keras_dml.backbones.preprocessing`` (``"bn_inception"``,
    ``"torch_imagenet"``, ``"caffe"``, ``"inception"``,
    ``"efficientnet_lite"``, ``"identity"``), a callable, or ``None``
    (identity)."""
    if normalization is None or callable(normalization):
        return normalization or (lambda x: tf.cast(x, tf.float32))
    return _preprocessing.get(normalization)


__all__ = [
    "RandomResizedCrop", "ResizeShorterSide", "GrayscaleToRGB", "Compose",
    "StrokeWidthJitter", "train_transform", "eval_transform", "resize_transform",
    "glyph_train_transform",
    "get_normalization", "default_resize", "AUTHORS_RESIZE",
]
