"""keras_dml: deep metric learning for Keras 3 (TensorFlow, JAX, PyTorch).

    import keras_dml as kd
    kd.losses.ProxyAnchorLoss(), kd.layers.Proxies(num_classes), ...

Light modules (ops, losses, layers, label_distances, optimizers) import
eagerly; the continuous losses need label_distances anyway, and importing
optimizers registers its Keras-serialisable names. The heavier ones (data,
backbones, models, evaluation, export, plots, training, retrieval) import on
first attribute access so that ``import keras_dml`` stays fast.
"""

import importlib

# Before Keras loads TensorFlow: a command-line run hides TensorFlow's INFO logs.
from keras_dml.cli import quiet as _quiet  # noqa: E402  (stdlib only)

_quiet.before_tensorflow()

# The numeric core (ops, losses, layers, label distances, metrics, the exact
# index) runs on every Keras backend and imports no TensorFlow; tf.data
# pipelines, SavedModel export and the TensorFlow trainer import it lazily.

from keras_dml import (  # noqa: E402
    label_distances, layers, losses, ops, optimizers)

__version__ = "0.1.0"

_LAZY = ("models", "backbones", "data", "evaluation", "export", "plots", "search",
         "training", "retrieval", "serving")


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"keras_dml.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'keras_dml' has no attribute {name!r}")


__all__ = ["label_distances", "layers", "losses", "ops", "optimizers",
           *_LAZY]
