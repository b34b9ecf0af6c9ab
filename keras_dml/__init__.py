"""keras_dml: deep metric learning for Keras 3 (TensorFlow, JAX, PyTorch).

    import keras_dml as kd
    kd.losses.ProxyAnchorLoss(), kd.layers.Proxies(num_classes), ...

``import keras_dml`` imports neither Keras nor TensorFlow: every submodule
(ops, losses, layers, label_distances, optimizers, models, backbones, data,
evaluation, export, plots, search, training, retrieval) loads on first attribute
access. Keras-serialisable classes are registered all the same: as soon as
Keras is (or already was) imported, ``keras_dml._registration`` imports the
modules that define them, so ``keras.models.load_model`` finds
``MetricModel``, the layers, losses and optimisers after a bare ``import
keras_dml``. Quieting TensorFlow's console output is the command line's
business (``keras_dml.cli``), never done by this import.
"""

import importlib

from keras_dml import _registration

__version__ = "0.1.0"

_LAZY = ("ops", "losses", "layers", "label_distances", "optimizers", "models",
         "backbones", "data", "evaluation", "export", "plots", "search", "training",
         "retrieval", "serving")


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"keras_dml.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'keras_dml' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])


_registration.register_when_keras_loads()

__all__ = list(_LAZY)
