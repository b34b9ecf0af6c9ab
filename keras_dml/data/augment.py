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


def _check_range(name, value, lo=0.0):
    value = tuple(float(v) for v in value)
    if len(value) != 2 or not lo < value[0] <= value[1]:
        raise ValueError(f"{name} must be (min, max) with {lo} < min <= max; "
                         f"got {value}.")
    return value


@keras.saving.register_keras_serializable(package="keras_dml")
class RandomResizedCrop(keras.layers.Layer):
    """torchvision-style ``RandomResizedCrop`` on TensorFlow's box sampler.

    For each image a box of area ``a * H * W`` with ``a ~ U(scale)`` and
    aspect ratio ``w / h ~ U(ratio)`` is placed uniformly at random inside
    the image (``tf.image.sample_distorted_bounding_box``, up to
    ``max_attempts`` tries, falling back to the whole image), cropped, and
    resized to ``(height, width)``. Differences from torchvision: the aspect
    ratio is drawn uniformly rather than log-uniformly, and the fallback is
    the whole image rather than a centre crop clamped to ``ratio``.

    Input: one image [H, W, C] (any H, W) or a batch [B, H, W, C] (one box
    per image). Output float32 [height, width, C] (or [B, ...]), values kept
    in the input's range. Only active when ``training`` is true (the
    default); with ``training=False`` it resizes the whole image.
    """

    def __init__(self, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                 interpolation="bilinear", antialias=True, max_attempts=10,
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width = int(height), int(width)
        self.scale = _check_range("scale", scale)
        if self.scale[1] > 1.0:
            raise ValueError(f"scale must lie in (0, 1]; got {scale}.")
        self.ratio = _check_range("ratio", ratio)
        self.interpolation = interpolation
        self.antialias = bool(antialias)
        self.max_attempts = int(max_attempts)
        self.seed = seed
        self._allow_non_tensor_positional_args = True

    def _crop_one(self, image):
        shape = tf.shape(image)
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            shape,
            bounding_boxes=tf.zeros([1, 0, 4], tf.float32),
            seed=self.seed,
            min_object_covered=0.0,
            aspect_ratio_range=self.ratio,
            area_range=self.scale,
            max_attempts=self.max_attempts,
            use_image_if_no_bounding_boxes=True)
        crop = tf.slice(image, begin, size)
        return tf.image.resize(tf.cast(crop, tf.float32),
                               (self.height, self.width),
                               method=self.interpolation,
                               antialias=self.antialias)

    def call(self, images, training=True):
        images = tf.convert_to_tensor(images)
        if not training:
            return tf.image.resize(tf.cast(images, tf.float32),
                                   (self.height, self.width),
                                   method=self.interpolation,
                                   antialias=self.antialias)
        if images.shape.rank == 3:
            return self._crop_one(images)
        if images.shape.rank != 4:
            raise ValueError("RandomResizedCrop expects [H, W, C] or "
                             f"[B, H, W, C] images; got shape {images.shape}.")
        channels = images.shape[-1]
        return tf.map_fn(
            self._crop_one, images,
            fn_output_signature=tf.TensorSpec(
                [self.height, self.width, channels], tf.float32))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-3], self.height, self.width, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(height=self.height, width=self.width,
                      scale=list(self.scale), ratio=list(self.ratio),
                      interpolation=self.interpolation,
                      antialias=self.antialias,
                      max_attempts=self.max_attempts, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="keras_dml")
class ResizeShorterSide(keras.layers.Layer):
    """torchvision ``Resize(size)``: the shorter side becomes ``size``.

    The longer side becomes ``int(size * long / short)`` (truncated, as
    torchvision), so the aspect ratio is kept. Works on [H, W, C] and
    [B, H, W, C]; output float32.
    """

    def __init__(self, size, interpolation="bilinear", antialias=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)
        self.interpolation = interpolation
        self.antialias = bool(antialias)

    def call(self, images):
        images = tf.convert_to_tensor(images)
        shape = tf.shape(images)
        h = tf.cast(shape[-3], tf.float64)
        w = tf.cast(shape[-2], tf.float64)
        size = tf.constant(self.size, tf.float64)
        short = tf.minimum(h, w)
        # Long side by torchvision's rule int(size * long / short); the short
        # side is exactly `size`.
        new_h = tf.where(h <= w, size, tf.floor(size * h / short))
        new_w = tf.where(h <= w, tf.floor(size * w / short), size)
        new_size = tf.cast(tf.stack([new_h, new_w]), tf.int32)
        return tf.image.resize(tf.cast(images, tf.float32), new_size,
                               method=self.interpolation,
                               antialias=self.antialias)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-3], None, None, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, interpolation=self.interpolation,
                      antialias=self.antialias)
        return config


@keras.saving.register_keras_serializable(package="keras_dml")
class GrayscaleToRGB(keras.layers.Layer):
    """Repeat a single channel three times ([..., 1] -> [..., 3]); RGB
    input passes through. For grey data sets (Fashion-MNIST) on RGB
    backbones."""

    def call(self, images):
        images = tf.convert_to_tensor(images)
        if images.shape[-1] == 1:
            return tf.image.grayscale_to_rgb(images)
        if images.shape[-1] == 3:
            return images
        raise ValueError("GrayscaleToRGB expects 1 or 3 channels; got shape "
                         f"{images.shape}.")

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)


@keras.saving.register_keras_serializable(package="keras_dml")
class StrokeWidthJitter(keras.layers.Layer):
    """Random stroke-width change of light-on-dark drawings (glyphs).

    Per image ``a ~ U(-strength, strength)``; with ``dilate`` / ``erode``
    the 3x3 grey-level maximum / minimum filters of the image ``x``::

        out = x + a (dilate(x) - x)    (a >= 0: thicker strokes)
        out = x - a (erode(x) - x)     (a < 0: thinner strokes)

    so ``strength`` 1 is at most one pixel of dilation or erosion on each
    side of a stroke, 0.5 about half a pixel. Input [H, W, C] or
    [B, H, W, C]; output float32 in the input's range. Identity with
    ``training=False``.
    """

    def __init__(self, strength=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"strength must be in [0, 1]; got {strength}.")
        self.strength = float(strength)
        self.seed = seed
        self._allow_non_tensor_positional_args = True

    def call(self, images, training=True):
        x = tf.cast(tf.convert_to_tensor(images), tf.float32)
        if not training or self.strength == 0.0:
            return x
        if x.shape.rank not in (3, 4):
            raise ValueError("StrokeWidthJitter expects [H, W, C] or [B, H, W, C] images; "
                             f"got shape {x.shape}.")
        batch = x if x.shape.rank == 4 else x[None]
        dilated = tf.nn.max_pool2d(batch, 3, 1, "SAME")
        eroded = -tf.nn.max_pool2d(-batch, 3, 1, "SAME")
        a = tf.random.uniform([tf.shape(batch)[0], 1, 1, 1], -self.strength,
                              self.strength, seed=self.seed)
        out = tf.where(a >= 0, batch + a * (dilated - batch), batch - a * (eroded - batch))
        return out if x.shape.rank == 4 else out[0]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(strength=self.strength, seed=self.seed)
        return config


_TF_LAYERS = (RandomResizedCrop, ResizeShorterSide, GrayscaleToRGB, StrokeWidthJitter)


class Compose:
    """Apply a list of layers / callables in order (``training`` passed to
    the layers that take it). Works on one image or a batch.

    Not a ``keras.Sequential`` on purpose: a Sequential built on a single
    unbatched image of unknown size would treat its first axis as the batch.
    """

    def __init__(self, steps, training=True):
        self.steps = list(steps)
        self.training = training

    def __call__(self, images):
        x = images
        tf_backend = keras.backend.backend() == "tensorflow"
        for step in self.steps:
            if isinstance(step, _TF_LAYERS) and not tf_backend:
                # These layers are TensorFlow ops on TensorFlow tensors (a
                # tf.data pipeline); under JAX / PyTorch, Layer.__call__
                # would convert a symbolic tf.Tensor to the backend's array.
                # (Keras' own preprocessing layers switch to TF in tf.data.)
                x = (step.call(x, training=self.training)
                     if isinstance(step, (RandomResizedCrop, StrokeWidthJitter))
                     else step.call(x))
            elif isinstance(step, keras.layers.Layer):
                # Keras drops `training` for layers whose call lacks it.
                x = step(x, training=self.training)
            else:
                x = step(x)
        return tf.cast(x, tf.float32)

    def __repr__(self):
        names = ", ".join(type(s).__name__ for s in self.steps)
        return f"Compose([{names}])"


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
    from keras_dml.backbones import preprocessing  # lazy: avoid import cycle
    return preprocessing.get(normalization)


__all__ = [
    "RandomResizedCrop", "ResizeShorterSide", "GrayscaleToRGB", "Compose",
    "StrokeWidthJitter", "train_transform", "eval_transform", "resize_transform",
    "glyph_train_transform",
    "get_normalization", "default_resize", "AUTHORS_RESIZE",
]
