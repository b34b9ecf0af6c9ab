"""Mixed precision: float16 / bfloat16 compute, float32 weights and loss."""

import keras
import numpy as np
import pytest

import keras_dml as kd
import tiny_models

NUM_CLASSES = 3


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


def make_model(proxies=True):
    return tiny_models.metric_model(num_classes=NUM_CLASSES if proxies else None)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"],
                         indirect=True)
@pytest.mark.parametrize("loss_name", ["proxy_anchor", "multi_similarity",
                                       "arcface", "circle"])
def test_mixed_precision_trains_without_nan(policy, loss_name, rng):
    compute = policy.split("_")[1]
    loss = kd.losses.get(loss_name)
    proxy = loss.takes_proxies
    model = make_model(proxies=proxy)
    x = rng.normal(size=(24, 6, 6, 2)).astype("float32")
    y = (np.arange(24) % NUM_CLASSES).astype("int32")
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
                  loss=loss, proxy_lr_multiplier=100.0 if proxy else 1.0,
                  warmup_epochs=1, clip_value=10.0)
    if compute == "float16":
        # Keras wraps the optimiser in dynamic loss scaling, around ours.
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(model.optimizer.inner_optimizer,
                          kd.optimizers.ParameterGroupOptimizer)
    else:
        assert isinstance(model.optimizer, kd.optimizers.ParameterGroupOptimizer)
    # (float16: the first steps are skipped while the dynamic loss scale,
    # starting at 2**15, halves down to one without overflow.)
    history = model.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0)
    losses = np.array(history.history["loss"])
    assert np.all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0]
    for v, w0 in zip(model.trainable_variables, before):
        assert v.dtype == "float32"
        assert np.all(np.isfinite(v.numpy())), v.path
        assert not np.array_equal(v.numpy(), w0), v.path
    emb = model(x)
    assert emb.dtype == compute
    # The loss itself is computed in float32.
    assert model.compute_loss(y=y, y_pred=emb).dtype == "float32"
    np.testing.assert_allclose(np.linalg.norm(np.asarray(emb, "float32"), axis=1),
                               1.0, atol=1e-2)
