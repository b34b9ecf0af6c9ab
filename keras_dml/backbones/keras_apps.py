"""Backbones from ``keras.applications``: ResNet-50/101 and Inception-v3.

Each returns the last convolutional feature map (``include_top=False``, no
pooling). ``weights="imagenet"`` downloads the Keras weights (cached in
``~/.keras/models``); when the download fails (offline) a
``WeightsUnavailableError`` says what to do instead.

GoogLeNet: the Keras model zoo has no GoogLeNet (Inception-v1), which the
Proxy Anchor code offers as ``googlenet``; the closest Keras model is
Inception-v3, registered as ``inception_v3``. The papers' main backbone,
BN-Inception (Inception-v2), is ``kd.backbones.bn_inception``.
"""

import keras

from keras_dml.backbones import common

_FILES = {  # the file keras.applications downloads, for the offline hint
    "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "resnet101": "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "inception_v3": "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
}
_MIN_SIZE = {"resnet50": 32, "resnet101": 32, "inception_v3": 75}


def _build(factory, name, input_shape, weights):
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"{name} needs input_shape (H, W, 3); got {input_shape}.")
    if any(n is not None and n < _MIN_SIZE[name] for n in input_shape[:2]):
        raise ValueError(
            f"{name} needs images of at least {_MIN_SIZE[name]}x"
            f"{_MIN_SIZE[name]}; got {input_shape}.")
    if weights != "imagenet":
        # None or a path: keras.applications loads a path with load_weights.
        return factory(include_top=False, weights=weights,
                       input_shape=input_shape, name=name)
    try:
        return factory(include_top=False, weights="imagenet",
                       input_shape=input_shape, name=name)
    except Exception as e:  # keras' get_file raises a bare Exception offline
        raise common.WeightsUnavailableError(
            f"Could not get the ImageNet weights of {name} (keras.applications "
            f"downloads {_FILES[name]} into ~/.keras/models/): {e}. With a "
            "network this works as is; "
            "else copy that file from a machine with internet into "
            "~/.keras/models/ or pass weights='/path/to/" + _FILES[name]
            + "'. " + common.OFFLINE_HINT) from e


def resnet50(input_shape=(224, 224, 3), weights=None):
    """ResNet-50 -> [B, H/32, W/32, 2048]. Preprocessing: ``caffe``."""
    return _build(keras.applications.ResNet50, "resnet50", input_shape, weights)


def resnet101(input_shape=(224, 224, 3), weights=None):
    """ResNet-101 -> [B, H/32, W/32, 2048]. Preprocessing: ``caffe``."""
    return _build(keras.applications.ResNet101, "resnet101", input_shape, weights)


def inception_v3(input_shape=(224, 224, 3), weights=None):
    """Inception-v3 -> [B, h, w, 2048] (5x5 at 224, 8x8 at 299).

    Preprocessing: ``inception`` (``x / 127.5 - 1``). Stands in for the
    GoogLeNet of the authors' code, which Keras does not have.
    """
    return _build(keras.applications.InceptionV3, "inception_v3", input_shape,
                  weights)
