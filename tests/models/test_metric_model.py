"""MetricModel and build_embedder: forward paths, one training step against
the optimiser formulas, the proxy learning-rate multiplier, clipping,
schedules, evaluation, saving and bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dml as kd
import tiny_models

NUM_CLASSES = 3


conv_backbone, mlp_backbone = tiny_models.conv_backbone, tiny_models.mlp_backbone


def image_data(rng, n=12):
    x = rng.normal(size=(n, 6, 6, 2)).astype("float32")
    y = (np.arange(n) % NUM_CLASSES).astype("int32")
    return x, y


def proxy_model():
    return tiny_models.metric_model(num_classes=NUM_CLASSES)


def weights_of(layer):
    return [v.numpy().copy() for v in layer.trainable_variables]


# -- embedder -----------------------------------------------------------------

def test_embedder_is_pooled_linear_l2(rng):
    backbone = conv_backbone()
    embedder = kd.models.build_embedder(backbone, embedding_dim=4)
    x = rng.normal(size=(3, 6, 6, 2)).astype("float32")
    emb = embedder(x).numpy()
    feats = backbone(x).numpy()                              # [3, 4, 4, 5]
    pooled = feats.mean(axis=(1, 2)) + feats.max(axis=(1, 2))
    kernel, bias = (v.numpy() for v in embedder.head.dense.weights)
    raw = pooled @ kernel + bias
    np.testing.assert_allclose(emb, raw / np.linalg.norm(raw, axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-6)
    assert embedder.backbone is backbone
    assert len(embedder.backbone_batchnorm_layers) == 1


def test_embedder_pooling_none_and_unnormalised(rng):
    backbone = mlp_backbone()
    embedder = kd.models.build_embedder(backbone, embedding_dim=3,
                                        pooling="none", normalize=False)
    x = rng.normal(size=(4, 5)).astype("float32")
    kernel, bias = (v.numpy() for v in embedder.head.dense.weights)
    np.testing.assert_allclose(embedder(x).numpy(),
                               backbone(x).numpy() @ kernel + bias, rtol=1e-5,
                               atol=1e-6)


def test_embedder_rejects_pooling_that_does_not_fit():
    with pytest.raises(ValueError, match="feature map"):
        kd.models.build_embedder(mlp_backbone(), embedding_dim=3)
    with pytest.raises(ValueError, match="features"):
        kd.models.build_embedder(conv_backbone(), embedding_dim=3, pooling="none")
    with pytest.raises(TypeError):
        kd.models.Embedder("resnet")


# -- serving path -----------------------------------------------------------

def test_call_returns_embeddings_without_proxies(rng):
    model = proxy_model()
    x, _ = image_data(rng, 5)
    emb = model(x).numpy()
    assert emb.shape == (5, 4)
    np.testing.assert_allclose(emb, model.embedder(x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(model.predict(x, verbose=0), emb, rtol=1e-5,
                               atol=1e-6)


# -- one training step against the formulas --------------------------------

def reference_gradients(model, loss, x, y):
    """dL/dtheta of the loss on the training head, computed directly."""
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        emb = model.embedder(x, training=True)
        out = model.proxies(emb) if model.proxies is not None else emb
        value = loss(y, out) + sum(tf.reduce_sum(l) for l in model.losses)
    grads = tape.gradient(value, variables)
    return float(value), [g.numpy() for g in grads]


def is_proxy(model, v):
    return model.proxies is not None and v is model.proxies.proxies


def test_sgd_step_with_proxy_multiplier_and_clipping(rng):
    model = proxy_model()
    x, y = image_data(rng)
    loss = kd.losses.ProxyAnchorLoss()
    lr, mult, clip = 0.1, 100.0, 0.02
    value, grads = reference_gradients(model, loss, x, y)
    assert max(np.abs(g).max() for g in grads) > clip     # clipping is active
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=loss,
                  proxy_lr_multiplier=mult, clip_value=clip)
    history = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False,
                        verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], value, rtol=1e-5)
    for v, w0, g in zip(model.trainable_variables, before, grads):
        step_lr = lr * mult if is_proxy(model, v) else lr
        expected = w0 - step_lr * np.clip(g, -clip, clip)
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-5, atol=1e-6,
                                   err_msg=v.path)


def adamw_step(w, g, lr, wd, t=1, b1=0.9, b2=0.999, eps=1e-7):
    """Keras AdamW, first step from zero moments: decoupled decay, then
    ``w -= lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)``."""
    w = w - w * wd * lr
    m = (1 - b1) * g
    v = (1 - b2) * g * g
    alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    return w - alpha * m / (np.sqrt(v) + eps)


def test_adamw_step_proxies_use_same_optimiser_at_scaled_lr(rng):
    model = proxy_model()
    x, y = image_data(rng)
    loss = kd.losses.ProxyAnchorLoss()
    lr, wd, mult = 1e-3, 1e-2, 100.0
    _, grads = reference_gradients(model, loss, x, y)
    before = [v.numpy().copy() for v in model.trainable_variables]
    user_opt = keras.optimizers.AdamW(lr, weight_decay=wd)
    model.compile(optimizer=user_opt, loss=loss, proxy_lr_multiplier=mult)
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    for v, w0, g in zip(model.trainable_variables, before, grads):
        step_lr = lr * mult if is_proxy(model, v) else lr
        np.testing.assert_allclose(v.numpy(), adamw_step(w0, g, step_lr, wd),
                                   rtol=1e-5, atol=1e-6, err_msg=v.path)
    proxies_opt = model.optimizer.group_optimizer("proxies")
    assert type(proxies_opt) is keras.optimizers.AdamW
    assert proxies_opt.weight_decay == wd
    np.testing.assert_allclose(float(proxies_opt.learning_rate), lr * mult, rtol=1e-6)
    # The user's optimiser is cloned, never used or modified.
    assert not user_opt.built and int(user_opt.iterations.numpy()) == 0
    assert user_opt.clipvalue is None


def test_regularisation_is_part_of_the_loss(rng):
    embedder = kd.models.build_embedder(
        mlp_backbone(reg=keras.regularizers.L2(0.5)), embedding_dim=4,
        pooling="none")
    model = kd.models.MetricModel(embedder)
    x = rng.normal(size=(10, 5)).astype("float32")
    y = (np.arange(10) % 3).astype("int32")
    loss = kd.losses.MultiSimilarityLoss()
    value, grads = reference_gradients(model, loss, x, y)
    reg = 0.5 * np.sum(embedder.backbone.layers[0].kernel.numpy() ** 2)
    assert reg > 0.1
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss)
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=10, verbose=0),
                               value, rtol=1e-5)
    model.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0)
    for v, w0, g in zip(model.trainable_variables, before, grads):
        np.testing.assert_allclose(v.numpy(), w0 - 0.05 * g, rtol=1e-5,
                                   atol=1e-6, err_msg=v.path)


def test_continuous_labels_train_step(rng):
    embedder = kd.models.build_embedder(mlp_backbone(), embedding_dim=3,
                                        pooling="none", normalize=False)
    model = kd.models.MetricModel(embedder)
    x = rng.normal(size=(8, 5)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")          # label vectors
    loss = kd.losses.LogRatioLoss()
    value, grads = reference_gradients(model, loss, x, y)
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], value, rtol=1e-5)
    for v, w0, g in zip(model.trainable_variables, before, grads):
        np.testing.assert_allclose(v.numpy(), w0 - 0.01 * g, rtol=1e-5,
                                   atol=1e-6, err_msg=v.path)


def test_evaluate_reports_the_loss_of_each_batch(rng):
    model = proxy_model()
    x, y = image_data(rng)
    loss = kd.losses.ProxyAnchorLoss()
    model.compile(optimizer="adam", loss=loss)
    direct = float(loss(y, model.proxies(model.embedder(x, training=False))))
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=12, verbose=0),
                               direct, rtol=1e-5)
    # Two batches of 6: the mean over batches of each batch's own loss.
    halves = [float(loss(y[i:i + 6], model.proxies(model.embedder(x[i:i + 6]))))
              for i in (0, 6)]
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=6, verbose=0),
                               np.mean(halves), rtol=1e-5)


# -- schedules and learning rates ---------------------------------------------

def test_step_decay_formula():
    schedule = kd.optimizers.step_decay(0.1, steps_per_epoch=4, step_epochs=2, gamma=0.5)
    for step in range(20):
        epoch = step // 4
        np.testing.assert_allclose(float(schedule(step)), 0.1 * 0.5 ** (epoch // 2),
                                   rtol=1e-6)
    milestones = kd.optimizers.step_decay(1.0, steps_per_epoch=3, step_epochs=[2, 5],
                                      gamma=0.1)
    for step in range(20):
        epoch = step // 3
        expected = 1.0 * 0.1 ** sum(epoch >= m for m in (2, 5))
        np.testing.assert_allclose(float(milestones(step)), expected, rtol=1e-6)
    with pytest.raises(ValueError):
        kd.optimizers.step_decay(0.1, steps_per_epoch=0, step_epochs=2)


def test_scaled_schedule_serialises():
    base = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5, staircase=True)
    scaled = kd.optimizers.ScaledSchedule(base, 100.0)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(scaled))
    for step in (0, 9, 10, 25):
        np.testing.assert_allclose(float(restored(step)), 100 * float(base(step)),
                                   rtol=1e-6)


def test_schedule_is_read_at_the_global_step_for_every_group(rng):
    model = proxy_model()
    x, y = image_data(rng)
    schedule = kd.optimizers.step_decay(0.01, steps_per_epoch=2, step_epochs=1, gamma=0.5)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=kd.losses.ProxyAnchorLoss(), proxy_lr_multiplier=10.0,
                  warmup_epochs=1)
    model.fit(x, y, batch_size=6, epochs=2, shuffle=False, verbose=0)
    opt = model.optimizer
    assert int(opt.iterations.numpy()) == 4
    # The backbone's own Adam step count started after the warm-up epoch...
    assert int(opt.group_optimizer("backbone").iterations.numpy()) == 2
    assert int(opt.group_optimizer("head").iterations.numpy()) == 4
    # ...but every group reads the schedule at the global step.
    np.testing.assert_allclose(float(opt.group_optimizer("backbone").learning_rate),
                               float(schedule(4)), rtol=1e-6)
    np.testing.assert_allclose(float(opt.group_optimizer("proxies").learning_rate),
                               10 * float(schedule(4)), rtol=1e-6)


def test_setting_the_learning_rate_keeps_the_multiplier():
    model = proxy_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=kd.losses.ProxyAnchorLoss(), proxy_lr_multiplier=100.0)
    model.optimizer.learning_rate = 0.02
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 0.02, rtol=1e-6)
    np.testing.assert_allclose(
        float(model.optimizer.group_optimizer("proxies").learning_rate), 2.0,
        rtol=1e-6)


# -- saving -------------------------------------------------------------------

def test_keras_file_round_trip_keeps_weights_recipe_and_optimiser(rng, tmp_path):
    model = proxy_model()
    x, y = image_data(rng)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
                  loss=kd.losses.ProxyAnchorLoss(), proxy_lr_multiplier=100.0,
                  warmup_epochs=1, clip_value=10.0, freeze_batchnorm=True)
    model.fit(x, y, batch_size=6, epochs=2, shuffle=False, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, kd.models.MetricModel)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    config = loaded.get_compile_config()
    assert config["proxy_lr_multiplier"] == 100.0 and config["warmup_epochs"] == 1
    assert config["clip_value"] == 10.0 and config["freeze_batchnorm"]
    assert loaded.optimizer.multipliers["proxies"] == 100.0
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not any(l.trainable for l in loaded.embedder.backbone_batchnorm_layers)
    # Training goes on identically from the saved state.
    model.fit(x, y, batch_size=6, epochs=3, initial_epoch=2, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=6, epochs=3, initial_epoch=2, shuffle=False, verbose=0)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


# -- bad input ------------------------------------------------------------------

def test_refuses_losses_and_options_that_do_not_fit(rng):
    model = proxy_model()
    with pytest.raises(TypeError, match="MetricLoss"):
        model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="without proxies"):
        model.compile(optimizer="sgd", loss=kd.losses.TripletLoss())
    plain = kd.models.MetricModel(
        kd.models.build_embedder(mlp_backbone(), 4, pooling="none"))
    with pytest.raises(ValueError, match="Proxies"):
        plain.compile(optimizer="sgd", loss=kd.losses.ProxyAnchorLoss())
    with pytest.raises(ValueError, match="no proxies"):
        plain.compile(optimizer="sgd", loss=kd.losses.TripletLoss(),
                      proxy_lr_multiplier=100.0)
    with pytest.raises(ValueError, match="clipnorm"):
        model.compile(optimizer=keras.optimizers.SGD(0.1, clipnorm=1.0),
                      loss=kd.losses.ProxyAnchorLoss(), clip_value=10.0)
    with pytest.raises(ValueError, match="multiplier"):
        model.compile(optimizer="sgd", loss=kd.losses.ProxyAnchorLoss(),
                      proxy_lr_multiplier=0.0)
    inputs = keras.Input((5,))
    functional = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    with pytest.raises(ValueError, match="build_embedder"):
        kd.models.MetricModel(functional).compile(
            optimizer="sgd", loss=kd.losses.TripletLoss(), warmup_epochs=1)


def test_refuses_missing_labels_and_sample_weights(rng):
    model = proxy_model()
    x, y = image_data(rng)
    model.compile(optimizer="sgd", loss=kd.losses.ProxyAnchorLoss())
    with pytest.raises(ValueError, match="labels"):
        model.fit(x, batch_size=6, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="sample_weight"):
        model.fit(x, y, sample_weight=np.ones(len(x)), batch_size=6, epochs=1,
                  verbose=0)


def test_optimizer_config_round_trips():
    opt = kd.optimizers.ParameterGroupOptimizer(
        keras.optimizers.SGD(0.1), multipliers={"proxies": 10.0}, clip_value=2.0)
    config = keras.saving.serialize_keras_object(opt)
    assert config["registered_name"] == "keras_dml>ParameterGroupOptimizer"
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is kd.optimizers.ParameterGroupOptimizer
    assert restored.multipliers["proxies"] == 10.0
    assert restored.clip_value == 2.0
