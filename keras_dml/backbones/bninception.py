"""BN-Inception (Inception-v2 with BatchNorm, Ioffe & Szegedy 2015) in Keras.

The backbone of the Proxy Anchor paper and its baselines. The layer list,
channel counts, paddings and pooling modes follow the network the authors
use (``code/net/bn_inception.py`` in tjddus9597/Proxy-Anchor-CVPR2020, a
port of Cadene's Caffe-converted model), layer names included, so that the
converted ImageNet weights load by name:

* every convolution has a bias and is followed by BatchNorm (eps 1e-5,
  PyTorch momentum 0.9, i.e. Keras ``momentum=0.1``) and ReLU -- the
  reference applies its ReLUs in place, so every BN output that feeds the
  next layer or a concatenation is rectified;
* convolutions pad explicitly and symmetrically (PyTorch ``padding=p``);
* the stride-2 max pools use ``ceil_mode=True`` (``CeilMaxPool2D``);
* the 3x3 average pools pad with zeros and count the padding
  (``count_include_pad=True``), i.e. zero padding then a VALID average.

Output: the ``inception_5b`` concatenation, [B, H/32, W/32, 1024] (7x7 at
224x224). No pooling: the embedding head pools (GAP + GMP).

Pretrained weights: the ImageNet weights are Cadene's Caffe conversion,
``bn_inception-52deb4733.pth``, from
http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth.
``weights="imagenet"`` downloads it with ``keras.utils.get_file`` (cached in
``~/.keras/models``); offline, download it elsewhere and pass
``weights="/path/to/bn_inception-52deb4733.pth"``: it is read by the
library's numpy reader (no torch needed). An ``.npz`` with the same keys
(``conv1_7x7_s2.weight`` [out, in, kh, kw], ``conv1_7x7_s2_bn.running_mean``,
...; made e.g. by ``np.savez(out, **{k: v.numpy() for k, v in sd.items()})``)
or a Keras ``.weights.h5`` saved from this model also work. Input
preprocessing: ``kd.backbones.preprocessing.bn_inception`` (BGR, 0-255,
minus [104, 117, 128]).
"""

import keras
import numpy as np
from keras import ops

from keras_dml.backbones import common

IMAGENET_URL = ("http://data.lip6.fr/cadene/pretrainedmodels/"
                "bn_inception-52deb4733.pth")
IMAGENET_FILE = "bn_inception-52deb4733.pth"

# (name, 1x1, 3x3 reduce, 3x3, double 3x3 reduce, double 3x3, pool, pool
# projection, stride). pool: "avg" (3x3/1, zero pad, count pad), "max" (3x3/1
# same) or "max_s2" (3x3/2 ceil mode, no projection); stride 2 blocks have
# no 1x1 branch and stride the 3x3 and the second double-3x3 convolution.
_BLOCKS = (
    ("inception_3a", 64, 64, 64, 64, 96, "avg", 32, 1),
    ("inception_3b", 64, 64, 96, 64, 96, "avg", 64, 1),
    ("inception_3c", 0, 128, 160, 64, 96, "max_s2", 0, 2),
    ("inception_4a", 224, 64, 96, 96, 128, "avg", 128, 1),
    ("inception_4b", 192, 96, 128, 96, 128, "avg", 128, 1),
    ("inception_4c", 160, 128, 160, 128, 160, "avg", 128, 1),
    ("inception_4d", 96, 128, 192, 160, 192, "avg", 128, 1),
    ("inception_4e", 0, 128, 192, 192, 256, "max_s2", 0, 2),
    ("inception_5a", 352, 192, 320, 160, 224, "avg", 128, 1),
    ("inception_5b", 352, 192, 320, 192, 224, "max", 128, 1),
)


@keras.saving.register_keras_serializable(package="keras_dml")
class CeilMaxPool2D(keras.layers.Layer):
    """Max pooling with PyTorch's ``ceil_mode=True`` and no padding.

    Output size ``ceil((n - k) / s) + 1`` per spatial dim; the last window
    may run past the bottom/right edge, where it sees only real pixels
    (implemented as padding with the dtype's lowest value, then VALID).
    Keras' "same" pooling gives the same size only for even inputs.
    """

    def __init__(self, pool_size=3, strides=2, **kwargs):
        super().__init__(**kwargs)
        if int(pool_size) < int(strides):
            raise ValueError("CeilMaxPool2D needs pool_size >= strides.")
        self.pool_size = int(pool_size)
        self.strides = int(strides)

    def _out(self, n):
        return -(-(n - self.pool_size) // self.strides) + 1

    def call(self, x):
        k, s = self.pool_size, self.strides
        shape = ops.shape(x)   # ints, or tensors for TF's unknown sizes
        pads = []
        for axis in (1, 2):
            n = shape[axis]
            out = (n - k + s - 1) // s + 1
            pad = (out - 1) * s + k - n
            pads.append(max(pad, 0) if isinstance(pad, int)
                        else ops.maximum(pad, 0))
        lowest = float(np.finfo(keras.backend.standardize_dtype(x.dtype)).min)
        x = ops.pad(x, [[0, 0], [0, pads[0]], [0, pads[1]], [0, 0]],
                    constant_values=lowest)
        return ops.max_pool(x, k, s, "valid")

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else self._out(h),
                None if w is None else self._out(w), c)

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, strides=self.strides)
        return config


def _conv_bn_relu(x, filters, kernel, name, stride=1, padding=0):
    if padding:
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="valid",
                            use_bias=True, name=name)(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.1,
                                        name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _inception_block(x, spec):
    name, c1, c3r, c3, cdr, cd, pool, proj, stride = spec
    branches = []
    if c1:
        branches.append(_conv_bn_relu(x, c1, 1, f"{name}_1x1"))
    b = _conv_bn_relu(x, c3r, 1, f"{name}_3x3_reduce")
    branches.append(_conv_bn_relu(b, c3, 3, f"{name}_3x3", stride, 1))
    b = _conv_bn_relu(x, cdr, 1, f"{name}_double_3x3_reduce")
    b = _conv_bn_relu(b, cd, 3, f"{name}_double_3x3_1", 1, 1)
    branches.append(_conv_bn_relu(b, cd, 3, f"{name}_double_3x3_2", stride, 1))
    if pool == "max_s2":
        branches.append(CeilMaxPool2D(3, 2, name=f"{name}_pool")(x))
    else:
        if pool == "avg":
            p = keras.layers.ZeroPadding2D(1, name=f"{name}_pool_pad")(x)
            p = keras.layers.AveragePooling2D(3, 1, "valid", name=f"{name}_pool")(p)
        else:
            p = keras.layers.MaxPooling2D(3, 1, "same", name=f"{name}_pool")(x)
        branches.append(_conv_bn_relu(p, proj, 1, f"{name}_pool_proj"))
    return keras.layers.Concatenate(axis=-1, name=f"{name}_output")(branches)


def _validate_input_shape(input_shape):
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(
            f"bn_inception needs input_shape (H, W, 3); got {input_shape}.")
    for n in input_shape[:2]:
        if n is None:
            continue
        if n < 32 or _size_at_3c(n) % 4:
            ok = [m for m in range(max(32, n - 8), n + 9) if _size_at_3c(m) % 4 == 0]
            raise ValueError(
                f"bn_inception cannot take a side of {n} pixels: its stride-2 "
                "inception blocks (3c, 4e) concatenate a padded stride-2 "
                "convolution with a ceil-mode pool, whose sizes agree only when "
                "the side at block 3c is a multiple of 4 (any multiple of 32 "
                f"works, e.g. 224). Nearby sizes that work: {ok}.")
    return input_shape


def _size_at_3c(n):
    """Spatial size entering inception_3c for an input side of n pixels."""
    n = (n + 2 * 3 - 7) // 2 + 1          # conv1 7x7/2, pad 3
    for _ in range(2):                    # pool1, pool2: 3x3/2, ceil mode
        n = -(-(n - 3) // 2) + 1
    return n


def bn_inception(input_shape=(224, 224, 3), weights=None, name="bn_inception"):
    """BN-Inception feature extractor: image -> [B, H/32, W/32, 1024].

    Args:
      input_shape: (H, W, 3), preprocessed with
        ``kd.backbones.preprocessing.bn_inception``. 224x224 in the papers.
      weights: None (random init), "imagenet" (download Cadene's converted
        Caffe weights; see the module docstring), or a path to a ``.pth``,
        ``.npz`` (reference key names) or Keras ``.weights.h5`` file.
    """
    input_shape = _validate_input_shape(input_shape)
    weights_path = None if weights is None else _resolve_weights(weights)
    inputs = keras.Input(shape=input_shape, name="images")
    x = _conv_bn_relu(inputs, 64, 7, "conv1_7x7_s2", stride=2, padding=3)
    x = CeilMaxPool2D(3, 2, name="pool1_3x3_s2")(x)
    x = _conv_bn_relu(x, 64, 1, "conv2_3x3_reduce")
    x = _conv_bn_relu(x, 192, 3, "conv2_3x3", padding=1)
    x = CeilMaxPool2D(3, 2, name="pool2_3x3_s2")(x)
    for spec in _BLOCKS:
        x = _inception_block(x, spec)
    model = keras.Model(inputs, x, name=name)
    if weights_path is not None:
        load_weights(model, weights_path)
    return model


def _resolve_weights(weights):
    if weights != "imagenet":
        return weights
    try:
        return keras.utils.get_file(fname=IMAGENET_FILE, origin=IMAGENET_URL,
                                    cache_subdir="models")
    except Exception as e:  # get_file raises a bare Exception on URL errors
        raise common.WeightsUnavailableError(
            "Could not download the BN-Inception ImageNet weights "
            f"({IMAGENET_URL}): {e}. Download that file on a machine with "
            "internet and pass weights='/path/to/" + IMAGENET_FILE + "'. "
            + common.OFFLINE_HINT) from e


def load_weights(model, path):
    """Load reference-named weights (``.pth``/``.npz``) or a Keras ``.h5``."""
    if common.is_keras_weights_file(path):
        model.load_weights(path)
        return model
    state = common.read_state_dict(path)
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    bns = [l for l in model.layers
           if isinstance(l, keras.layers.BatchNormalization)]
    needed = {f"{l.name}.{p}" for l in convs for p in ("weight", "bias")}
    needed |= {f"{l.name}.{p}" for l in bns
               for p in ("weight", "bias", "running_mean", "running_var")}
    missing = needed - set(state)
    if missing:
        raise common.missing_keys_error(missing, path, "bn_inception")
    for layer in convs:
        w = state[f"{layer.name}.weight"]  # [out, in, kh, kw]
        common.assign(layer.kernel, w.transpose(2, 3, 1, 0), f"{layer.name}.weight")
        common.assign(layer.bias, state[f"{layer.name}.bias"], f"{layer.name}.bias")
    for layer in bns:
        for var, key in ((layer.gamma, "weight"), (layer.beta, "bias"),
                         (layer.moving_mean, "running_mean"),
                         (layer.moving_variance, "running_var")):
            common.assign(var, state[f"{layer.name}.{key}"], f"{layer.name}.{key}")
    return model
