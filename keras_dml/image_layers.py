"""The Keras image layers of ``kd.data.augment``'s transforms.

``RandomResizedCrop`` (torchvision's, on TensorFlow's box sampler),
``ResizeShorterSide`` (torchvision's ``Resize(int)``) and ``GrayscaleToRGB``
run TensorFlow image ops (they are tf.data transforms; see
``keras_dml.data.augment`` for the recipes built from them). They live here,
importing TensorFlow only when called, so that ``import keras_dml``
registers them as Keras-serialisable classes like every other keras_dml
class (``keras_dml._registration``) without loading TensorFlow.
"""

import keras

from keras_dml import _backend


def _tf():
    """TensorFlow, imported on first use (a layer call)."""
    import tensorflow as tf
    return tf


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
        tf = _tf()
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
        tf = _tf()
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
        tf = _tf()
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
        tf = _tf()
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
        tf = _tf()
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
        tf_backend = _backend.is_tensorflow()
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
        return _tf().cast(x, "float32")

    def __repr__(self):
        names = ", ".join(type(s).__name__ for s in self.steps)
        return f"Compose([{names}])"

    def get_config(self):
        """JSON-serialisable: the steps as Keras objects (every step must be
        a Keras layer), and ``training``."""
        for step in self.steps:
            if not isinstance(step, keras.layers.Layer):
                raise TypeError(f"Compose with a {type(step).__name__} step cannot be "
                                "serialised (only Keras layers can).")
        return {"steps": [keras.saving.serialize_keras_object(s) for s in self.steps],
                "training": self.training}

    @classmethod
    def from_config(cls, config):
        return cls([keras.saving.deserialize_keras_object(s) for s in config["steps"]],
                   training=config.get("training", True))


__all__ = ["RandomResizedCrop", "ResizeShorterSide", "GrayscaleToRGB", "StrokeWidthJitter",
           "Compose"]
