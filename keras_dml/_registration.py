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
  Keras itself has finished loading, whoever imports it. When that import of
  Keras comes from inside a keras_dml module (``from keras_dml.losses import
  ...`` is the first thing to load Keras), registering at once would import
  modules that need the one still half-executed (``models`` imports
  ``losses.base``): a circular import. So a second hook counts keras_dml
  module executions in progress, and registration waits until the outermost
  one has finished.

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
    _state.pending = False
    remove_hooks()
    for name in REGISTERING_MODULES:
        importlib.import_module(name)


class _State:
    depth = 0           # keras_dml module bodies executing right now (nested)
    pending = False     # Keras has loaded inside one of them: register at depth 0


_state = _State()


def _register_or_defer():
    if _state.depth > 0:
        _state.pending = True
    else:
        register()


def _find_with_other_finders(fullname, path, target):
    for finder in sys.meta_path:
        if type(finder).__name__ in _HOOKS:
            continue
        find_spec = getattr(finder, "find_spec", None)
        spec = find_spec(fullname, path, target) if find_spec else None
        if spec is not None:
            return spec
    return None


def _spec_with_wrapped_loader(fullname, path, target, wrapper):
    """The spec the other finders give, its loader wrapped by ``wrapper``
    (unchanged where there is no loader that executes a module)."""
    spec = _find_with_other_finders(fullname, path, target)
    if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
        return spec
    spec.loader = wrapper(spec.loader)
    return spec


def _unwrap(module, loader):
    """Give the module its own loader back once it has executed."""
    module.__loader__ = loader
    if getattr(module, "__spec__", None) is not None:
        module.__spec__.loader = loader


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
        _unwrap(module, self._loader)   # Keras keeps its own loader; the hook is spent
        sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "KerasImportHook"]
        _register_or_defer()


class _LoaderCountingKerasDml:
    """Wraps a keras_dml module's loader: counts the nesting of keras_dml
    module executions, and registers a deferred registration at depth 0."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        _state.depth += 1
        try:
            self._loader.exec_module(module)
        finally:
            _state.depth -= 1
            _unwrap(module, self._loader)
        if _state.depth == 0 and _state.pending:
            register()


class KerasImportHook(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` finder: finds ``keras`` with the other finders and
    wraps its loader (see ``_LoaderThenRegister``), which removes the hook
    once Keras has executed."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras" or "keras" in sys.modules:
            return None
        # The hook stays until Keras has executed: a bare
        # importlib.util.find_spec("keras") (TensorFlow's import makes one)
        # asks for a spec without loading it.
        return _spec_with_wrapped_loader(fullname, path, target, _LoaderThenRegister)


class KerasDmlImportCounter(importlib.abc.MetaPathFinder):
    """Finds ``keras_dml.*`` with the other finders and wraps their loaders
    (see ``_LoaderCountingKerasDml``); present until registration has run."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("keras_dml."):
            return None
        return _spec_with_wrapped_loader(fullname, path, target, _LoaderCountingKerasDml)


_HOOKS = ("KerasImportHook", "KerasDmlImportCounter")


def remove_hooks():
    # By class name: a reloaded _registration defines new classes.
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ not in _HOOKS]


def register_when_keras_loads():
    """Register now if Keras is loaded, else as soon as it is."""
    if "keras" in sys.modules:
        register()
        return
    if not any(type(f).__name__ in _HOOKS for f in sys.meta_path):
        sys.meta_path[:0] = [KerasImportHook(), KerasDmlImportCounter()]
