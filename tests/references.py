"""Outside references (torch, pytorch-metric-learning, faiss, ...) for tests.

``reference(module, what)`` imports and returns the module. Where it is
missing, the test skips outside CI and fails under ``CI=true``: a CI run in
which the comparisons with pytorch-metric-learning silently skipped would be
green without checking anything. At module level the skip/failure covers the
whole file.
"""

import importlib
import inspect
import os

import pytest


def in_ci():
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(message, at_module_level=False):
    """Skip with ``message``, or fail with it under CI."""
    if in_ci():
        pytest.fail("CI=true: " + message, pytrace=False)
    pytest.skip(message, allow_module_level=at_module_level)


def reference(module, what):
    """Import ``module`` (needed for ``what``), or skip (fail under CI)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        unavailable(f"outside reference {module!r} is missing ({what}): {e}. "
                    "scripts/setup.sh --test installs it.",
                    inspect.stack()[1].function == "<module>")
