"""MetricModel trains the same on every Keras backend.

The backend is fixed when Keras is imported, so each run is its own process
(tests/backend_training_worker.py), started from identical weights on an
identical batch:

* TensorFlow, JAX and PyTorch reach the same weights (within 1e-5) after
  SGD + momentum steps with a proxy learning-rate multiplier and value
  clipping, and after AdamW epochs with a warm-up (frozen backbone), frozen
  BatchNorm and weight decay; ``evaluate`` gives the same loss.
* JAX under ``keras.distribution.DataParallel`` over two CPU devices
  computes the loss of the global batch (not the mean of per-device halves,
  which differs for Proxy Anchor) and after three steps has the weights of
  one device.

This module runs in the TensorFlow pass only (it starts the other backends
itself), so it is not marked ``backends``.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

# tests/models/ -> the checkout
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(ROOT, "tests", "backend_training_worker.py")
BACKENDS = ("tensorflow", "jax", "torch")
RTOL, ATOL = 1e-5, 1e-6


def _start(cases, backend, path, devices=None):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.Popen([sys.executable, WORKER, cases, str(path)], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(process, path, what):
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, f"{what} failed:\n{output[-4000:]}"
    return dict(np.load(path))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The worker's results per backend (the processes run side by side);
    the JAX process has two CPU devices and also runs the DataParallel case."""
    tmp = tmp_path_factory.mktemp("backend_training")
    started = {b: _start("steps", b, tmp / f"{b}.npz") for b in BACKENDS
               if b != "jax"}
    started["jax"] = _start("steps,data_parallel", "jax", tmp / "jax.npz",
                            devices=2)
    return {b: _finish(p, tmp / f"{b}.npz", f"KERAS_BACKEND={b} worker")
            for b, p in started.items()}


def _weights(result, prefix):
    return {k: v for k, v in result.items() if k.startswith(prefix + "/")}


def test_the_steps_change_the_weights(runs):
    """The comparison below is not between untrained models: every group
    moved, the proxies (x10 learning rate) the most."""
    tf_run = runs["tensorflow"]
    init, trained = _weights(tf_run, "init"), _weights(tf_run, "sgd")
    proxy = int(tf_run["proxy_index"][0])
    moved = {k.split("/", 1)[1]: np.max(np.abs(trained["sgd/" + k.split("/", 1)[1]] - v))
             for k, v in init.items()}
    trainable_moved = [m for name, m in moved.items()
                       if not name.split(":")[1].startswith("moving_")]
    assert min(trainable_moved) > 1e-4, moved
    proxy_key = [name for name in moved if name.startswith(f"{proxy:02d}:")][0]
    assert moved[proxy_key] == max(trainable_moved)


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("case", ["sgd", "warmup", "xbm"])
def test_same_weights_as_tensorflow(runs, backend, case):
    expected, got = _weights(runs["tensorflow"], case), _weights(runs[backend], case)
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=RTOL, atol=ATOL,
                                   err_msg=f"{backend} {key}")
    np.testing.assert_allclose(runs[backend][f"{case}_loss"],
                               runs["tensorflow"][f"{case}_loss"], rtol=RTOL)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_same_evaluate_loss_as_tensorflow(runs, backend):
    np.testing.assert_allclose(runs[backend]["eval_loss"],
                               runs["tensorflow"]["eval_loss"], rtol=RTOL)


def test_warmup_keeps_the_backbone_for_one_epoch_then_trains_it(runs):
    """Warm-up case, two epochs: epoch 1 has the backbone frozen, epoch 2
    trains it, so its weights moved but by one AdamW step's worth (each
    step moves a weight by at most about lr=1e-2 plus decay)."""
    init, trained = _weights(runs["jax"], "init"), _weights(runs["jax"], "warmup")
    first_conv = sorted(init)[0]
    step = np.max(np.abs(trained["warmup/" + first_conv.split("/", 1)[1]]
                         - init[first_conv]))
    assert 1e-4 < step < 1.5e-2


def test_data_parallel_on_two_devices_equals_one(runs):
    result = runs["jax"]
    assert int(result["dp_devices"]) == 2
    # The loss of the global batch, as one device computes it ...
    np.testing.assert_allclose(result["dp_loss"], result["one_loss"], rtol=RTOL)
    # ... which is not the mean of the two halves' losses.
    assert abs(float(result["halves_loss"]) - float(result["one_loss"])) > 0.1
    one, dp = _weights(result, "one"), _weights(result, "dp")
    assert len(one) == len(dp) > 0
    for key in one:
        np.testing.assert_allclose(dp["dp/" + key.split("/", 1)[1]], one[key],
                                   rtol=RTOL, atol=ATOL, err_msg=key)


def test_cross_batch_memory_data_parallel_equals_one_device(runs):
    """MetricModel(memory_size=12), three steps of 8 under DataParallel over
    two devices: the same losses, weights and memory as one device."""
    result = runs["jax"]
    np.testing.assert_allclose(result["xbm_dp_loss"], result["xbm_one_loss"],
                               rtol=RTOL)
    one, dp = _weights(result, "xbm_one"), _weights(result, "xbm_dp")
    assert len(one) == len(dp) > 0
    assert any("embeddings" in k for k in one)    # the memory is compared too
    for key in one:
        np.testing.assert_allclose(dp["xbm_dp/" + key.split("/", 1)[1]], one[key],
                                   rtol=RTOL, atol=ATOL, err_msg=key)
