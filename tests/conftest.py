"""Shared test set-up: quiet TensorFlow, deterministic seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import keras  # noqa: E402


def pytest_configure(config):
    # Registered, not deselected: CI (`pytest tests`) runs these too.
    config.addinivalue_line(
        "markers", "wheel: builds and installs the wheel in a fresh venv, runs "
        "keras-dml outside the checkout")


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)
