"""The backend boundary: only keras_dml/_backend.py (and the per-backend
train steps) asks which Keras backend runs or whether a value is a
TensorFlow tensor; everything else goes through ``keras_dml._backend``.

The scan reads the package's source with ``ast`` (comments and docstrings
do not count) and looks for:

* ``keras.backend.backend()`` / ``keras.config.backend()`` calls;
* ``sys.modules`` lookups of tensorflow, jax or torch;
* ``isinstance(x, tf.Tensor)`` / ``tf.Variable`` checks;
* ``import jax`` / ``import torch``.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_dml"
# The modules whose job is backend dispatch, and cli/quiet.py, which runs
# before Keras is imported (stdlib only) and only asks whether TensorFlow is
# loaded yet, to hide its import-time logs.
ALLOWED = {"_backend.py", "models/_steps_jax.py", "models/_steps_torch.py",
           "models/_steps_tensorflow.py", "cli/quiet.py"}
BACKEND_MODULES = {"tensorflow", "jax", "torch"}

pytestmark = pytest.mark.backends


def _dotted(node):
    """``a.b.c`` of an Attribute/Name chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def dispatch_sites(source):
    """[(line, what)] of backend dispatch in Python ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in ("keras.backend.backend", "backend.backend", "keras.config.backend",
                        "config.backend"):
                found.append((node.lineno, f"{name}()"))
            if name == "isinstance" and len(node.args) == 2:
                types = node.args[1]
                elts = types.elts if isinstance(types, ast.Tuple) else [types]
                for t in elts:
                    if _dotted(t) in ("tf.Tensor", "tf.Variable", "tensorflow.Tensor"):
                        found.append((node.lineno, f"isinstance(..., {_dotted(t)})"))
            if name == "sys.modules.get" and node.args and \
                    isinstance(node.args[0], ast.Constant) and \
                    node.args[0].value in BACKEND_MODULES:
                found.append((node.lineno, f"sys.modules.get({node.args[0].value!r})"))
        elif isinstance(node, ast.Subscript) and _dotted(node.value) == "sys.modules":
            key = node.slice
            if isinstance(key, ast.Constant) and key.value in BACKEND_MODULES:
                found.append((node.lineno, f"sys.modules[{key.value!r}]"))
        elif isinstance(node, ast.Compare) and len(node.comparators) == 1 and \
                _dotted(node.comparators[0]) == "sys.modules" and \
                isinstance(node.left, ast.Constant) and node.left.value in BACKEND_MODULES:
            found.append((node.lineno, f"{node.left.value!r} in sys.modules"))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) \
                else [node.module or ""]
            for n in names:
                if n.split(".")[0] in ("jax", "torch"):
                    found.append((node.lineno, f"import {n}"))
    return sorted(found)


def test_the_scan_finds_every_kind_of_dispatch():
    source = "\n".join([
        "import sys, keras",
        "import jax",
        "from torch import nn",
        "a = keras.backend.backend() == 'jax'",
        "b = keras.config.backend()",
        "tf = sys.modules.get('tensorflow')",
        "c = isinstance(x, (int, tf.Tensor))",
        "d = sys.modules['torch']",
        "e = 'jax' in sys.modules",
        "f = _backend.is_tf_tensor(x) and _backend.name()",   # the allowed way
        "'''keras.backend.backend() in a docstring does not count'''",
    ])
    assert [line for line, _ in dispatch_sites(source)] == [2, 3, 4, 5, 6, 7, 8, 9]


def test_backend_dispatch_only_in_the_backend_modules():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in ALLOWED:
            continue
        offenders += [f"keras_dml/{rel}:{line}: {what}"
                      for line, what in dispatch_sites(path.read_text())]
    assert not offenders, (
        "backend dispatch outside keras_dml/_backend.py (use _backend.name / "
        "is_tensorflow / is_tf_tensor / tf_of / to_numpy / function):\n" +
        "\n".join(offenders))
