"""Subprocess driver for tests/models/test_distributed.py (not a test module).

    python distributed_worker.py mirrored OUT.json
        Splits the CPU into 2 logical devices (before TensorFlow starts), then
        for each case trains a tiny MetricModel on one device and under
        MirroredStrategy over both from the same initial weights and the same
        global batches, and writes the largest differences of the weights and
        of the optimiser variables to OUT.json.

    python distributed_worker.py multiworker INDEX PORT0,PORT1 OUTDIR
        One worker of a 2-worker MultiWorkerMirroredStrategy on 127.0.0.1;
        writes its final weights to OUTDIR/worker{INDEX}.npz. Worker 0 also
        trains the single-process reference and writes OUTDIR/single.npz.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

GLOBAL_BATCH = 12
NUM_SAMPLES = 33          # batches of 12, 12 and 9 (9 splits 5 + 4)
NUM_CLASSES = 4


def make_data(case, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    if case["input"] == "image":
        x = rng.normal(size=(NUM_SAMPLES, 6, 6, 2)).astype("float32")
    else:
        x = rng.normal(size=(NUM_SAMPLES, 5)).astype("float32")
    if case["labels"] == "continuous":
        y = rng.normal(size=(NUM_SAMPLES, 2)).astype("float32")
    else:
        y = rng.integers(0, NUM_CLASSES, size=NUM_SAMPLES).astype("int32")
    return x, y


def make_dataset(case, shard_data=False):
    import tensorflow as tf
    x, y = make_data(case)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    if shard_data:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        ds = ds.with_options(options)
    return ds


def make_model(case):
    import keras

    import tiny_models
    if case["input"] == "image":
        backbone = tiny_models.conv_backbone(
            filters=(5, 6), sync_batchnorm=case.get("sync_bn", False), name="backbone")
        pooling = "avg+max"
    else:
        backbone = tiny_models.mlp_backbone(
            hidden=8, reg=keras.regularizers.L2(1e-3), name="backbone")
        pooling = "none"
    return tiny_models.metric_model(
        backbone, num_classes=NUM_CLASSES if case["proxies"] else None, pooling=pooling,
        normalize=case.get("normalize", True))


def make_loss(case):
    import keras_dml as kd
    name = case["loss"]
    if name == "proxy_anchor":
        return kd.losses.ProxyAnchorLoss()
    if name == "triplet":
        return kd.losses.TripletLoss(margin=0.2, mining="semihard")
    if name == "multi_similarity":
        return kd.losses.MultiSimilarityLoss()
    if name == "log_ratio":
        return kd.losses.LogRatioLoss()
    raise ValueError(name)


def make_optimizer(case):
    import keras
    if case["optimizer"] == "adamw":
        return keras.optimizers.AdamW(1e-2, weight_decay=1e-2)
    return keras.optimizers.SGD(0.05, momentum=0.9)


def compile_model(model, case):
    model.compile(optimizer=make_optimizer(case), loss=make_loss(case),
                  **case.get("compile", {}))


CASES = [
    dict(name="proxy_anchor", input="image", labels="class", proxies=True,
         loss="proxy_anchor", optimizer="adamw",
         compile=dict(proxy_lr_multiplier=100.0, clip_value=0.05,
                      warmup_epochs=1, freeze_batchnorm=True)),
    dict(name="triplet", input="vector", labels="class", proxies=False,
         loss="triplet", optimizer="sgd", compile=dict(clip_value=0.02)),
    dict(name="multi_similarity", input="vector", labels="class",
         proxies=False, loss="multi_similarity", optimizer="adamw"),
    # SGD, not Adam: the log-ratio loss is invariant to translating all
    # embeddings, so the gradients of the last biases are exactly 0 in
    # theory and rounding noise (~1e-9) in practice, which Adam's
    # m / (sqrt(v) + eps) blows up to steps of lr size in both runs alike.
    dict(name="log_ratio", input="vector", labels="continuous",
         proxies=False, loss="log_ratio", optimizer="sgd", normalize=False,
         epochs=1),
    # Cross-batch memory of 20: two epochs of batches 12, 12, 9 wrap it
    # around; the memory holds the global batch (after the all-gather).
    dict(name="multi_similarity_xbm", input="vector", labels="class",
         proxies=False, loss="multi_similarity", optimizer="sgd",
         memory_size=20, epochs=2),
]
for _case in CASES[1:]:
    _case.setdefault("epochs", 1)


def state_of(model):
    """Every model variable (incl. BN statistics) and optimiser variable."""
    out = {}
    for i, v in enumerate(model.weights):
        out[f"model/{i:03d}"] = v.numpy()
    for i, v in enumerate(model.optimizer.variables):
        out[f"optimizer/{i:03d}"] = v.numpy()
    return out


def train(case, strategy=None, initial_weights=None, exact=True,
          shard_data=False):
    import contextlib
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = make_model(case)
        if initial_weights is not None:
            model.set_weights(initial_weights)
        initial = model.get_weights()
        compile_model(model, case)
        model._exact_global_batch = exact
    history = model.fit(make_dataset(case, shard_data),
                        epochs=case.get("epochs", 2),
                        shuffle=False, verbose=0)
    return model, initial, history.history["loss"]


def compare(a, b):
    import numpy as np
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    return max(float(np.max(np.abs(a[k] - b[k]))) if a[k].size else 0.0
               for k in a)


def run_mirrored(out_path):
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    import keras_dml as kd

    results = {}
    cases = [c for c in CASES if hasattr(kd.losses, _LOSS_CLASSES[c["loss"]])]
    # BatchNorm in training mode, synchronised across replicas.
    cases += [dict(CASES[0], name="proxy_anchor_sync_bn", sync_bn=True,
                   epochs=1, compile=dict(CASES[0]["compile"], warmup_epochs=0,
                                          freeze_batchnorm=False))]
    cases += [dict(CASES[0], name="proxy_anchor_no_gather", exact=False,
                   epochs=1, compile=dict(CASES[0]["compile"], warmup_epochs=0))]
    # One strategy for all cases: a second MirroredStrategy in a process
    # reuses collective keys of the first (TensorFlow's collective key
    # counters are per strategy), which mixes up their collectives.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for case in cases:
        keras.utils.set_random_seed(0)
        single, initial, single_loss = train(case)
        dist, _, dist_loss = train(case, strategy, initial_weights=initial,
                                   exact=case.get("exact", True))
        s_single, s_dist = state_of(single), state_of(dist)
        moved = max(float(np.max(np.abs(w - w0))) for w, w0 in
                    zip(single.get_weights(), initial))
        results[case["name"]] = dict(
            replicas=strategy.num_replicas_in_sync,
            max_abs_diff=compare(s_single, s_dist),
            moved=moved,
            single_loss=single_loss, dist_loss=dist_loss,
            num_optimizer_variables=len(single.optimizer.variables),
        )
    with open(out_path, "w") as f:
        json.dump(results, f)


_LOSS_CLASSES = dict(proxy_anchor="ProxyAnchorLoss", triplet="TripletLoss",
                     multi_similarity="MultiSimilarityLoss",
                     log_ratio="LogRatioLoss")

MULTIWORKER_CASE = CASES[0]


def run_multiworker(index, ports, out_dir):
    import numpy as np
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
        "task": {"type": "worker", "index": index},
    })
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING))
    import keras
    case = MULTIWORKER_CASE
    keras.utils.set_random_seed(0)
    initial = make_model(case).get_weights()
    model, _, loss = train(case, strategy, initial_weights=initial,
                           shard_data=True)
    state = state_of(model)
    state["__replicas__"] = np.array(strategy.num_replicas_in_sync)
    np.savez(os.path.join(out_dir, f"worker{index}.npz"), **state)
    if index == 0:
        single, _, _ = train(case, initial_weights=initial)
        np.savez(os.path.join(out_dir, "single.npz"), **state_of(single))
        np.savez(os.path.join(out_dir, "initial.npz"),
                 **{f"model/{i:03d}": w for i, w in enumerate(initial)})


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "mirrored":
        run_mirrored(sys.argv[2])
    elif mode == "multiworker":
        run_multiworker(int(sys.argv[2]),
                        [int(p) for p in sys.argv[3].split(",")], sys.argv[4])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
