"""Input preprocessing per backbone: channel flips and affine maps.

Every function takes RGB images with values in [0, 255] (uint8 or float,
shape [..., H, W, 3]) and returns float32 in the range the backbone's
pretrained weights expect. A TensorFlow tensor (a ``tf.data`` pipeline, an
exported SavedModel (``kd.export``), a TF-backend model) is mapped with
TensorFlow ops, graph-safe on any Keras backend; anything else (numpy, JAX,
PyTorch arrays) with ``keras.ops``. Train and serve see the same numbers.
TensorFlow is not imported here: a TF tensor means it is loaded already.
"""

from typing import Callable, Union

from keras import ops

from keras_dml._backend import tf_of as _tf_of
from keras_dml.registry import Registry


def _float_rgb(images, name):
    tf = _tf_of(images)
    images = images if tf is not None else ops.convert_to_tensor(images)
    shape = tuple(images.shape)
    if shape and shape[-1] is not None and shape[-1] != 3:
        raise ValueError(
            f"{name} preprocessing expects RGB images [..., H, W, 3]; got shape "
            f"{shape} (convert grey images to RGB, e.g. tf.image.grayscale_to_rgb).")
    return _to_float32(images)


def _to_float32(images):
    tf = _tf_of(images)
    if tf is not None:
        return tf.cast(images, tf.float32)
    return ops.cast(ops.convert_to_tensor(images), "float32")


def _bgr(x):
    tf = _tf_of(x)
    return tf.reverse(x, [-1]) if tf is not None else ops.flip(x, axis=-1)


def caffe(images):
    """Keras ResNet ("caffe" mode): RGB -> BGR, minus the ImageNet BGR mean.

    ``x[..., ::-1] - [103.939, 116.779, 123.68]`` (no scaling), as
    ``keras.applications.resnet.preprocess_input``.
    """
    x = _bgr(_float_rgb(images, "caffe"))
    return x - _constant(x, [103.939, 116.779, 123.68])


def inception(images):
    """Keras Inception ("tf" mode): ``x / 127.5 - 1`` into [-1, 1]."""
    return _float_rgb(images, "inception") / 127.5 - 1.0


def bn_inception(images):
    """BN-Inception (Caffe weights, as the Proxy Anchor authors):
    RGB -> BGR, keep the 0-255 range, minus the BGR mean [104, 117, 128]."""
    x = _bgr(_float_rgb(images, "bn_inception"))
    return x - _constant(x, [104.0, 117.0, 128.0])


def efficientnet_lite(images):
    """EfficientNet-Lite (TF reference): ``(x - 127) / 128``."""
    return (_float_rgb(images, "efficientnet_lite") - 127.0) / 128.0


def torch_imagenet(images):
    """torchvision ImageNet: ``(x / 255 - [0.485, 0.456, 0.406]) /
    [0.229, 0.224, 0.225]`` (RGB)."""
    x = _float_rgb(images, "torch_imagenet") / 255.0
    mean = _constant(x, [0.485, 0.456, 0.406])
    std = _constant(x, [0.229, 0.224, 0.225])
    return (x - mean) / std


def clip(images):
    """OpenAI CLIP: ``(x / 255 - [0.4815, 0.4578, 0.4082]) /
    [0.2686, 0.2613, 0.2758]`` (RGB; the CLIP image processor's constants)."""
    x = _float_rgb(images, "clip") / 255.0
    mean = _constant(x, [0.48145466, 0.4578275, 0.40821073])
    std = _constant(x, [0.26862954, 0.26130258, 0.27577711])
    return (x - mean) / std


def identity(images):
    """No normalisation: float32 of the 0-255 values (any channel count)."""
    return _to_float32(images)


def _constant(like, values):
    """float32 constant of the same kind (TensorFlow or backend) as ``like``."""
    tf = _tf_of(like)
    if tf is not None:
        return tf.constant(values, tf.float32)
    return ops.convert_to_tensor(values, dtype="float32")


PREPROCESSING = Registry("preprocessing", {
    "caffe": caffe,
    "inception": inception,
    "bn_inception": bn_inception,
    "efficientnet_lite": efficientnet_lite,
    "torch_imagenet": torch_imagenet,
    "clip": clip,
    "identity": identity,
}, hint=" (or pass a callable)")


def available():
    """The preprocessing names ``get`` takes."""
    return PREPROCESSING.available()


def get(preprocess: Union[str, Callable, None]) -> Callable:
    """A preprocessing function from its name (or the callable itself;
    None: ``identity``)."""
    if callable(preprocess):
        return preprocess
    if preprocess is None:
        return identity
    return PREPROCESSING.get(preprocess)
