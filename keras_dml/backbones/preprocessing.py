"""Input preprocessing per backbone, as plain TensorFlow ops.

Every function takes RGB images with values in [0, 255] (uint8 or float,
shape [..., H, W, 3]) and returns float32 in the range the backbone's
pretrained weights expect. They are graph-safe, so the same function runs in
a ``tf.data`` pipeline, inside a Keras model and inside an exported
SavedModel (``kd.export``), and train and serve see the same numbers.
"""

import tensorflow as tf


def _float_rgb(images, name):
    images = tf.convert_to_tensor(images)
    if images.shape.rank is not None and images.shape[-1] is not None \
            and images.shape[-1] != 3:
        raise ValueError(
            f"{name} preprocessing expects RGB images [..., H, W, 3]; got shape "
            f"{images.shape} (convert grey images with tf.image.grayscale_to_rgb).")
    return tf.cast(images, tf.float32)


def caffe(images):
    """Keras ResNet ("caffe" mode): RGB -> BGR, minus the ImageNet BGR mean.

    ``x[..., ::-1] - [103.939, 116.779, 123.68]`` (no scaling), as
    ``keras.applications.resnet.preprocess_input``.
    """
    x = _float_rgb(images, "caffe")[..., ::-1]
    return x - tf.constant([103.939, 116.779, 123.68], tf.float32)


def inception(images):
    """Keras Inception ("tf" mode): ``x / 127.5 - 1`` into [-1, 1]."""
    return _float_rgb(images, "inception") / 127.5 - 1.0


def bn_inception(images):
    """BN-Inception (Caffe weights, as the Proxy Anchor authors):
    RGB -> BGR, keep the 0-255 range, minus the BGR mean [104, 117, 128]."""
    x = _float_rgb(images, "bn_inception")[..., ::-1]
    return x - tf.constant([104.0, 117.0, 128.0], tf.float32)


def efficientnet_lite(images):
    """EfficientNet-Lite (TF reference): ``(x - 127) / 128``."""
    return (_float_rgb(images, "efficientnet_lite") - 127.0) / 128.0


def torch_imagenet(images):
    """torchvision ImageNet: ``(x / 255 - [0.485, 0.456, 0.406]) /
    [0.229, 0.224, 0.225]`` (RGB)."""
    x = _float_rgb(images, "torch_imagenet") / 255.0
    mean = tf.constant([0.485, 0.456, 0.406], tf.float32)
    std = tf.constant([0.229, 0.224, 0.225], tf.float32)
    return (x - mean) / std


def identity(images):
    """No normalisation: float32 of the 0-255 values (any channel count)."""
    return tf.cast(images, tf.float32)


PREPROCESSING = {
    "caffe": caffe,
    "inception": inception,
    "bn_inception": bn_inception,
    "efficientnet_lite": efficientnet_lite,
    "torch_imagenet": torch_imagenet,
    "identity": identity,
}


def get(preprocess):
    """A preprocessing function from its name (or the callable itself)."""
    if callable(preprocess):
        return preprocess
    if preprocess is None:
        return identity
    try:
        return PREPROCESSING[preprocess]
    except KeyError:
        raise ValueError(
            f"unknown preprocessing {preprocess!r}; known: "
            f"{sorted(PREPROCESSING)} (or pass a callable).") from None
