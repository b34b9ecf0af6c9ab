"""Warm-up (backbone frozen for the first epochs) and freeze_batchnorm."""

import keras
import numpy as np

import keras_dml as kd
import tiny_models

NUM_CLASSES = 3


def bn_backbone():
    return tiny_models.conv_backbone(final_batchnorm=True)


def make_model():
    return tiny_models.metric_model(bn_backbone(), num_classes=NUM_CLASSES)


def data(rng, n=12):
    # Off-centre inputs so the BatchNorm moving statistics would move if run.
    x = (rng.normal(size=(n, 6, 6, 2)) * 3 + 2).astype("float32")
    y = (np.arange(n) % NUM_CLASSES).astype("int32")
    return x, y


def snapshot(variables):
    return [v.numpy().copy() for v in variables]


class Snapshots(keras.callbacks.Callback):
    """Backbone / head / proxies variables at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        m = self.model
        self.epochs.append(dict(
            backbone=snapshot(m.embedder.backbone.weights),
            head=snapshot(m.embedder.head.weights),
            proxies=snapshot(m.proxies.weights),
            warming_up=m.warming_up))


def all_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def none_equal(a, b):
    return all(not np.array_equal(x, y) for x, y in zip(a, b))


def test_warmup_epoch_freezes_backbone_bitwise_then_backbone_trains(rng):
    model = make_model()
    x, y = data(rng)
    backbone = model.embedder.backbone
    stats = [v for v in backbone.weights if not v.trainable]
    assert len(stats) == 4                          # 2 moving means + variances
    start = dict(backbone=snapshot(backbone.weights),
                 head=snapshot(model.embedder.head.weights),
                 proxies=snapshot(model.proxies.weights))
    model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=1e-2),
                  loss=kd.losses.ProxyAnchorLoss(), proxy_lr_multiplier=100.0,
                  warmup_epochs=1)
    snaps = Snapshots()
    model.fit(x, y, batch_size=6, epochs=2, shuffle=False, verbose=0,
              callbacks=[snaps])
    warm, after = snaps.epochs
    assert warm["warming_up"] and not after["warming_up"]
    # Warm-up epoch: every backbone weight AND BatchNorm statistic unchanged,
    # bit for bit (no update, no weight decay, BN in inference mode)...
    assert all_equal(warm["backbone"], start["backbone"])
    # ...while the head and the proxies trained.
    assert none_equal(warm["head"], start["head"])
    assert none_equal(warm["proxies"], start["proxies"])
    # Second epoch: the backbone trains, BN statistics move.
    assert none_equal(after["backbone"], warm["backbone"])
    opt = model.optimizer
    assert int(opt.group_optimizer("backbone").iterations.numpy()) == 2
    assert int(opt.group_optimizer("head").iterations.numpy()) == 4
    assert int(opt.group_optimizer("proxies").iterations.numpy()) == 4


def test_warmup_is_keyed_on_the_epoch_of_fit(rng):
    model = make_model()
    x, y = data(rng)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=kd.losses.ProxyAnchorLoss(), warmup_epochs=2)
    start = snapshot(model.embedder.backbone.weights)
    model.fit(x, y, batch_size=12, epochs=1, verbose=0)
    model.fit(x, y, batch_size=12, epochs=2, initial_epoch=1, verbose=0)
    assert all_equal(snapshot(model.embedder.backbone.weights), start)
    model.fit(x, y, batch_size=12, epochs=3, initial_epoch=2, verbose=0)
    assert not model.warming_up
    assert none_equal(snapshot(model.embedder.backbone.weights), start)


def test_freeze_batchnorm_keeps_bn_in_inference_mode_with_frozen_affine(rng):
    model = make_model()
    x, y = data(rng)
    bn_layers = model.embedder.backbone_batchnorm_layers
    bn_vars = [v for layer in bn_layers for v in layer.weights]
    assert len(bn_vars) == 8
    start_bn = snapshot(bn_vars)
    convs = [l for l in model.embedder.backbone.layers
             if isinstance(l, keras.layers.Conv2D)]
    start_conv = snapshot([convs[0].kernel])
    model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=1e-2),
                  loss=kd.losses.ProxyAnchorLoss(), proxy_lr_multiplier=100.0,
                  freeze_batchnorm=True)
    assert not any(layer.trainable for layer in bn_layers)
    assert not any(any(v is w for w in bn_vars) for v in model.trainable_variables)
    model.fit(x, y, batch_size=6, epochs=2, shuffle=False, verbose=0)
    assert all_equal(snapshot(bn_vars), start_bn)          # gamma, beta, stats
    assert none_equal(snapshot([convs[0].kernel]), start_conv)
    # BN normalises with its moving statistics even in training mode.
    np.testing.assert_allclose(model(x, training=True).numpy(),
                               model(x, training=False).numpy(), rtol=1e-6,
                               atol=1e-6)
