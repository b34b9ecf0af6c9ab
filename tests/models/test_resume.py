"""Resumable training: BackupAndRestore brings back weights, proxies and every
optimiser group's state, so an interrupted run ends where an uninterrupted
one does."""

import keras
import numpy as np
import pytest

import keras_dml as kd
import tiny_models

NUM_CLASSES = 3
EPOCHS = 4


def make_model():
    keras.utils.set_random_seed(7)
    model = tiny_models.metric_model(tiny_models.conv_backbone(filters=(4, None)),
                                     num_classes=NUM_CLASSES)
    schedule = kd.optimizers.step_decay(1e-2, steps_per_epoch=2, step_epochs=2, gamma=0.5)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-2),
                  loss=kd.losses.ProxyAnchorLoss(), proxy_lr_multiplier=100.0,
                  warmup_epochs=1, clip_value=10.0)
    return model


def data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 6, 6, 2)).astype("float32")
    y = (np.arange(12) % NUM_CLASSES).astype("int32")
    return x, y


class Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")


def state(model):
    return ([v.numpy() for v in model.weights],
            [v.numpy() for v in model.optimizer.variables])


@pytest.mark.parametrize("crash_epoch", [1, 3])
def test_interrupted_run_resumes_to_the_same_state(tmp_path, crash_epoch):
    x, y = data()
    fit = dict(x=x, y=y, batch_size=6, epochs=EPOCHS, shuffle=False, verbose=0)

    reference = make_model()
    reference.fit(callbacks=[keras.callbacks.BackupAndRestore(tmp_path / "ref")],
                  **fit)

    backup = keras.callbacks.BackupAndRestore(tmp_path / "run")
    crashed = make_model()
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit(callbacks=[backup, Interrupt(crash_epoch)], **fit)

    # A new process would build a fresh model: do the same.
    resumed = make_model()
    history = resumed.fit(
        callbacks=[keras.callbacks.BackupAndRestore(tmp_path / "run")], **fit)
    assert len(history.history["loss"]) == EPOCHS - crash_epoch

    ref_weights, ref_opt = state(reference)
    got_weights, got_opt = state(resumed)
    assert len(ref_opt) == len(got_opt) > 10
    for a, b in zip(ref_weights, got_weights):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    for a, b in zip(ref_opt, got_opt):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    for group in kd.optimizers.GROUPS:
        assert int(resumed.optimizer.group_optimizer(group).iterations.numpy()) == \
            int(reference.optimizer.group_optimizer(group).iterations.numpy())
