"""Shared test set-up: quiet TensorFlow, deterministic seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_configure(config):
    # Registered, not deselected: CI (`pytest tests`) runs these too.
    config.addinivalue_line(
        "markers", "wheel: builds and installs the wheel in a fresh venv, runs "
        "keras-dml outside the checkout")
    config.addinivalue_line(
        "markers", "backends: backend-neutral tests that CI also runs under "
        "KERAS_BACKEND=jax and torch (tests/backend_tools.py)")


def pytest_collection_modifyitems(config, items):
    """Under a backend other than TensorFlow run only the backend-neutral
    modules; the rest (tf.data, SavedModel, the TF trainer) need TensorFlow's
    backend and are deselected with a count in the summary."""
    if keras.backend.backend() == "tensorflow":
        return
    kept = [i for i in items if i.get_closest_marker("backends")]
    dropped = [i for i in items if not i.get_closest_marker("backends")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
        config._keras_dml_deselected = len(dropped)


def pytest_terminal_summary(terminalreporter, config):
    n = getattr(config, "_keras_dml_deselected", 0)
    if n:
        terminalreporter.write_line(
            f"keras_dml: {n} TensorFlow-backend-only tests deselected under "
            f"KERAS_BACKEND={keras.backend.backend()} (they run in the TensorFlow pass)")


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)
