"""Worker for tests/models/test_backend_training.py: trains MetricModel a few steps
under the Keras backend of this process and writes the results to an .npz.

    KERAS_BACKEND=torch python tests/backend_training_worker.py steps OUT.npz
    XLA_FLAGS=--xla_force_host_platform_device_count=2 KERAS_BACKEND=jax \\
        python tests/backend_training_worker.py steps,data_parallel OUT.npz

(``steps`` runs on the first device when several are forced: no
distribution is set until ``data_parallel`` sets one.)

The backend is fixed when Keras is imported, hence one process per backend.
Every run starts from the same weights (drawn with numpy from a seed, set in
``model.weights`` order) on the same batch, so the parent can compare the
updated weights across backends.
"""

import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_dml as kd  # noqa: E402
import tiny_models  # noqa: E402

NUM_CLASSES = 4
BATCH = 8


def build(seed=0):
    model = tiny_models.metric_model(num_classes=NUM_CLASSES)
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        if "moving_variance" in w.path:
            value = rng.uniform(0.5, 1.5, size=shape)
        else:
            value = rng.normal(scale=0.5, size=shape)
        w.assign(value.astype("float32"))
    return model


def build_xbm(seed=0, memory_size=12):
    """A proxy-free model with a cross-batch memory of 12 (< 3 batches of 8:
    the queue wraps)."""
    embedder = kd.models.build_embedder(tiny_models.conv_backbone(), embedding_dim=4)
    model = kd.models.MetricModel(embedder, memory_size=memory_size)
    rng = np.random.default_rng(seed)
    for w in model.trainable_weights + [
            w for w in model.non_trainable_weights if "moving_variance" in w.path]:
        shape = tuple(w.shape)
        if "moving_variance" in w.path:
            w.assign(rng.uniform(0.5, 1.5, size=shape).astype("float32"))
        else:
            w.assign(rng.normal(scale=0.5, size=shape).astype("float32"))
    return model


def xbm_batches(steps=3):
    xs, ys = zip(*(batch(seed=10 + s) for s in range(steps)))
    ys = [np.roll(y, s) for s, y in enumerate(ys)]
    return np.concatenate(xs), np.concatenate(ys)


def fit_xbm(model):
    """Three SGD steps of multi-similarity against the memory."""
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=kd.losses.MultiSimilarityLoss())
    x, y = xbm_batches()
    return model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False,
                     verbose=0).history["loss"]


def batch(seed=1, n=BATCH):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6, 6, 2)).astype("float32")
    y = (np.arange(n) % NUM_CLASSES).astype("int32")
    return x, y


def weights(model):
    """{position in model.weights ":" variable name: value}; keyed
    by position because auto-generated layer names differ between two models
    built in one process."""
    return {f"{i:02d}:{w.path.rsplit('/', 1)[-1]}":
            np.asarray(keras.ops.convert_to_numpy(w.value))
            for i, w in enumerate(model.weights)}


def fit(model, x, y, epochs, steps=1):
    """``epochs`` epochs of ``steps`` full-batch steps; the first step's loss."""
    xs, ys = np.concatenate([x] * steps), np.concatenate([y] * steps)
    history = model.fit(xs, ys, batch_size=len(x), epochs=epochs,
                        shuffle=False, verbose=0)
    return history.history["loss"]


def case_steps(out):
    """SGD + momentum with a proxy multiplier and value clipping (so that
    both show in the update); AdamW with a one-epoch warm-up, frozen
    BatchNorm and weight decay over two epochs."""
    x, y = batch()
    model = build()
    out.update({f"init/{k}": v for k, v in weights(model).items()})
    out["proxy_index"] = np.asarray(
        [i for i, w in enumerate(model.weights) if w is model.proxies.proxies])
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=kd.losses.ProxyAnchorLoss(), proxy_lr_multiplier=10.0,
                  clip_value=0.02)
    losses = fit(model, x, y, epochs=1, steps=2)
    out.update({f"sgd/{k}": v for k, v in weights(model).items()})
    out["sgd_loss"] = np.asarray(losses)

    model = build()
    model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.1),
                  loss=kd.losses.ProxyAnchorLoss(), proxy_lr_multiplier=100.0,
                  clip_value=0.5, warmup_epochs=1, freeze_batchnorm=True)
    losses = fit(model, x, y, epochs=2)
    out.update({f"warmup/{k}": v for k, v in weights(model).items()})
    out["warmup_loss"] = np.asarray(losses)

    # evaluate(): the test step's loss on the trained weights.
    out["eval_loss"] = np.asarray(
        model.evaluate(x, y, batch_size=BATCH, verbose=0, return_dict=True)["loss"])

    # Cross-batch memory: weights and memory after three steps.
    model = build_xbm()
    out["xbm_loss"] = np.asarray(fit_xbm(model))
    out.update({f"xbm/{k}": v for k, v in weights(model).items()})


def case_data_parallel(out):
    """One device, then DataParallel over the two (forced) CPU devices."""
    import jax
    devices = jax.devices()
    assert len(devices) == 2, devices
    x, y = batch(n=BATCH)

    def train(steps):
        model = build()
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      loss=kd.losses.ProxyAnchorLoss(), proxy_lr_multiplier=10.0,
                      clip_value=0.02)
        first = fit(model, x, y, epochs=1, steps=1)[0]
        fit(model, x, y, epochs=1, steps=steps - 1)
        return model, first

    single, single_loss = train(3)
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices))
    model, dp_loss = train(3)
    keras.distribution.set_distribution(None)
    # The variables really are laid out over both devices.
    out["dp_devices"] = np.asarray(
        len(model.trainable_variables[0].value.sharding.device_set))
    out.update({f"one/{k}": v for k, v in weights(single).items()})
    out.update({f"dp/{k}": v for k, v in weights(model).items()})
    out["one_loss"], out["dp_loss"] = np.asarray(single_loss), np.asarray(dp_loss)
    # The loss each half of the batch would give on its own (what a
    # per-device loss averaged over devices would log), from the initial
    # weights.
    fresh = build()
    loss = kd.losses.ProxyAnchorLoss()
    halves = [float(keras.ops.convert_to_numpy(
        loss(y[s], fresh.proxies(fresh(x[s], training=True)))))
        for s in (slice(0, BATCH // 2), slice(BATCH // 2, BATCH))]
    out["halves_loss"] = np.asarray(np.mean(halves))

    # Cross-batch memory under DataParallel: the memory holds the global
    # batch, so the run equals one device's.
    single = build_xbm()
    out["xbm_one_loss"] = np.asarray(fit_xbm(single))
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices))
    model = build_xbm()
    out["xbm_dp_loss"] = np.asarray(fit_xbm(model))
    keras.distribution.set_distribution(None)
    out.update({f"xbm_one/{k}": v for k, v in weights(single).items()})
    out.update({f"xbm_dp/{k}": v for k, v in weights(model).items()})


def main(cases, path):
    out = {"backend": np.asarray(keras.backend.backend())}
    for case in cases.split(","):
        {"steps": case_steps, "data_parallel": case_data_parallel}[case](out)
    out["tensorflow_imported"] = np.asarray(
        sys.modules.get("tensorflow") is not None)
    np.savez(path, **out)


if __name__ == "__main__":
    main(*sys.argv[1:])
