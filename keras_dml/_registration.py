"""Registering keras_dml's Keras-serialisable classes without importing Keras.

``keras.models.load_model`` finds a custom class (``MetricModel``,
``Proxies``, every loss, the optimisers, the image layers, ...) only if the
module defining it has run its ``@keras.saving.register_keras_serializable``
decorator. ``import keras_dml`` imports no Keras (so a command-line process
can quiet TensorFlow before Keras loads it, and a plain import is instant);
instead it calls :func:`register_when_keras_loads`:

* Keras already imported: the registering modules (``REGISTERING_MODULES``)
  are imported now;
* otherwise an import hook waits for ``keras`` and imports them right after
  Keras itself has finished loading, whoever imports it.

Either way, after ``import keras_dml`` every registered class is known to
Keras before any ``load_model`` can run, without importing TensorFlow (under
JAX / PyTorch) or any heavy module (data, evaluation, plots, ...) eagerly.
Stdlib only.
"""

import importlib
import importlib.abc
import importlib.util
import sys

# Every module holding a @register_keras_serializable class, all TensorFlow-free
# at import (tests/test_registration.py checks this list against the sources).
REGISTERING_MODULES = (
    "keras_dml.losses",
    "keras_dml.layers",
    "keras_dml.optimizers",
    "keras_dml.models",
    "keras_dml.backbones.bninception",
    "keras_dml.image_layers",
)


def register():
    """Import every registering module (idempotent)."""
    for name in REGISTERING_MODULES:
        importlib.import_module(name)


class _LoaderThenRegister:
    """Wraps Keras' loader: executes ``keras`` then registers keras_dml."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):        # get_resource_reader, is_package, ...
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        # Keras keeps its own loader; the hook is spent.
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        register()


class KerasImportHook(importlib.abc.MetaPathFinder):
    """A one-shot ``sys.meta_path`` finder: finds ``keras`` with the other
    finders, wraps its loader (see ``_LoaderThenRegister``), then leaves."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        remove_hooks()
        spec = importlib.util.find_spec("keras") if "keras" not in sys.modules else None
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _LoaderThenRegister(spec.loader)
        return spec


def remove_hooks():
    sys.meta_path[:] = [f for f in sys.meta_path
                        if type(f).__name__ != KerasImportHook.__name__]


def register_when_keras_loads():
    """Register now if Keras is loaded, else as soon as it is."""
    if "keras" in sys.modules:
        register()
        return
    if not any(type(f).__name__ == KerasImportHook.__name__ for f in sys.meta_path):
        sys.meta_path.insert(0, KerasImportHook())
