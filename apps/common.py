"""What every keras_dml app shares: flags, model building, training, reports.

An app module defines its flags with ``define_flags(**defaults)`` (the
defaults are that benchmark's paper recipe), loads its data and calls
``run_class_retrieval`` or ``run_continuous_retrieval``. Those do, in order:

1. hold out part of the training set (whole classes, or random examples for
   continuous labels) as the validation set used to pick the checkpoint: the
   test split is looked at once, at the end;
2. build backbone -> embedding head (-> proxies) and compile the recipe;
3. ``fit`` with progress bars, TensorBoard, a CSV log, validation metrics,
   best-checkpoint saving and (``--resume``) ``BackupAndRestore``;
4. restore the best weights, evaluate on the test split and write
   ``metrics.json``, ``recall_curve.png``, ``retrievals.png``;
5. export ``saved_model/`` (``--noexport`` skips it).
"""

import json
import math
import os
import shutil
import time

from absl import flags, logging
import keras
import numpy as np
import tensorflow as tf

import keras_dml as kd
from keras_dml.data import augment as aug
from keras_dml.data.core import Split

FLAGS = flags.FLAGS

PROXY_LOSSES = {
    "proxy_anchor": lambda: kd.losses.ProxyAnchorLoss(),
    "proxy_nca": lambda: kd.losses.ProxyNCALoss(),
    "soft_triple": lambda: kd.losses.SoftTripleLoss(),
}
PAIR_LOSSES = {
    "triplet": lambda: kd.losses.TripletLoss(),
    "contrastive": lambda: kd.losses.ContrastiveLoss(),
    "multi_similarity": lambda: kd.losses.MultiSimilarityLoss(),
    "npair": lambda: kd.losses.NPairLoss(),
    "lifted_structure": lambda: kd.losses.LiftedStructureLoss(),
}
CONTINUOUS_LOSSES = {
    "log_ratio": lambda dist, kw: kd.losses.LogRatioLoss(
        label_distance=dist, label_distance_kwargs=kw or None),
    "dense_triplet": lambda dist, kw: kd.losses.DenseTripletLoss(
        label_distance=dist, label_distance_kwargs=kw or None),
    "binary_triplet": lambda dist, kw: kd.losses.BinaryTripletLoss(
        label_distance=dist, label_distance_kwargs=kw or None),
}
BACKUP_DIR = "backup"


def define_flags(continuous=False, **defaults):
    """Define the common flags; ``defaults`` override the generic defaults."""
    d = dict(
        loss="log_ratio" if continuous else "proxy_anchor",
        backbone="bn_inception", weights="imagenet", image_size=224,
        embedding_dim=128 if continuous else 512, batch_size=150 if continuous else 180,
        epochs=60, lr=1e-4, weight_decay=1e-4, proxy_lr_multiplier=100.0,
        warmup_epochs=1, freeze_bn=False, clip_value=10.0,
        lr_decay_epochs=[10], lr_decay_gamma=0.5, m_per_class=0, optimizer="adamw",
        lr_inverse_decay=0.0,
        ks=[1, 5, 10, 20] if continuous else [1, 2, 4, 8], val_fraction=0.1,
        data_dir=None, cache=False, max_train_examples=None, max_test_examples=None,
    )
    if continuous:
        # The log-ratio authors' recipe (ResNet-34 there; Keras has none).
        d.update(backbone="resnet50", optimizer="sgd", lr=0.01, weight_decay=5e-4,
                 lr_inverse_decay=1e-4, epochs=30, warmup_epochs=0,
                 proxy_lr_multiplier=1.0, clip_value=0.0)
    d.update(defaults)
    losses = sorted(CONTINUOUS_LOSSES) if continuous else sorted(PROXY_LOSSES) + sorted(PAIR_LOSSES)
    flags.DEFINE_string("output_dir", None, "Where logs, checkpoints, metrics.json, plots "
                        "and the SavedModel go.", required=True)
    flags.DEFINE_string("data_dir", d["data_dir"], "Data location (TFDS data_dir or the "
                        "data set's released folder).")
    flags.DEFINE_enum("loss", d["loss"], losses, "Loss function.")
    flags.DEFINE_string("backbone", d["backbone"], "Backbone name "
                        f"({', '.join(kd.backbones.available())}).")
    flags.DEFINE_string("weights", d["weights"], "Backbone weights: 'imagenet', 'none' "
                        "or a path to a weights file.")
    flags.DEFINE_integer("image_size", d["image_size"], "Training / test crop size.")
    flags.DEFINE_integer("embedding_dim", d["embedding_dim"], "Embedding size.")
    flags.DEFINE_integer("batch_size", d["batch_size"], "Global batch size.")
    flags.DEFINE_integer("epochs", d["epochs"], "Training epochs.")
    flags.DEFINE_enum("optimizer", d["optimizer"], ["adamw", "sgd"],
                      "AdamW (Proxy Anchor recipe) or SGD with momentum 0.9 (log-ratio recipe).")
    flags.DEFINE_float("lr", d["lr"], "Learning rate.")
    flags.DEFINE_float("weight_decay", d["weight_decay"], "Weight decay.")
    flags.DEFINE_float("lr_inverse_decay", d["lr_inverse_decay"], "If > 0: lr / (1 + this * "
                       "step) (the log-ratio authors' --lr-decay) instead of step decay.")
    flags.DEFINE_float("proxy_lr_multiplier", d["proxy_lr_multiplier"],
                       "Proxies learn at lr times this (proxy losses only).")
    flags.DEFINE_integer("warmup_epochs", d["warmup_epochs"], "Epochs with a frozen backbone.")
    flags.DEFINE_boolean("freeze_bn", d["freeze_bn"], "BatchNorm layers of the backbone "
                         "in inference mode with frozen weights.")
    flags.DEFINE_float("clip_value", d["clip_value"], "Gradient value clipping (0: off).")
    flags.DEFINE_list("lr_decay_epochs", [str(e) for e in d["lr_decay_epochs"]],
                      "One value: decay every N epochs; several: at those epochs.")
    flags.DEFINE_float("lr_decay_gamma", d["lr_decay_gamma"], "Learning-rate decay factor.")
    flags.DEFINE_integer("m_per_class", d["m_per_class"], "Batches of P classes x M "
                         "images (0: random batches).")
    flags.DEFINE_list("ks", [str(k) for k in d["ks"]], "K of the reported Recall@K / "
                      "metrics@K.")
    flags.DEFINE_float("val_fraction", d["val_fraction"], "Fraction of the training "
                       "classes (examples, for continuous labels) held out for "
                       "checkpoint selection; 0 selects the last epoch.")
    flags.DEFINE_enum("val_split", d.get("val_split", "classes"), ["classes", "examples"],
                      "Hold out whole training classes (class-disjoint, as the test) or "
                      "random training examples for validation.")
    flags.DEFINE_integer("steps_per_epoch", None, "Limit the steps of an epoch.")
    flags.DEFINE_integer("max_train_examples", d["max_train_examples"], "Use a random subset of the "
                         "training examples.")
    flags.DEFINE_integer("max_test_examples", d["max_test_examples"], "Use a random subset of the test "
                         "examples (whole-set evaluation otherwise).")
    flags.DEFINE_boolean("cache", d["cache"], "Cache decoded training images in memory.")
    flags.DEFINE_boolean("resume", False, "Continue an interrupted run in output_dir.")
    flags.DEFINE_boolean("export", True, "Export output_dir/saved_model (--noexport skips).")
    flags.DEFINE_integer("eval_batch_size", 256, "Batch size for embedding.")
    flags.DEFINE_integer("num_plot_queries", 8, "Queries in retrievals.png.")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_integer("verbose", 1, "Keras verbosity (1: progress bars).")


# ----------------------------------------------------------------- helpers
def _ints(values):
    return [int(v) for v in values]


def prepare_output_dir():
    """Create output_dir; refuse to clobber an interrupted run without --resume."""
    out = FLAGS.output_dir
    backup = os.path.join(out, BACKUP_DIR)
    if os.path.isdir(backup) and not FLAGS.resume:
        raise SystemExit(
            f"{out} holds an interrupted run ({backup}); pass --resume to continue "
            "it, or choose another --output_dir.")
    os.makedirs(out, exist_ok=True)
    return out


def relabel(split, indices, name):
    """The examples ``indices`` of ``split`` with class ids remapped to 0..C-1."""
    sub = split.subset(indices, name)
    labels, classes = kd.data.core.remap_labels(sub.labels)
    info = dict(sub.info, original_classes=classes)
    return Split(name, labels, sub._load_image, sub.names, channels=sub.channels,
                 image_shape=sub.image_shape, info=info, may_fail=sub.may_fail)


def random_subset(split, count, seed, name=None):
    if count is None or count >= len(split):
        return split
    idx = np.sort(np.random.default_rng(seed).choice(len(split), count, replace=False))
    return split.subset(idx, name or split.name)


def hold_out_classes(split, fraction, seed):
    """(train, val): a random ``fraction`` of the classes goes to val."""
    classes = np.unique(split.labels)
    n_val = int(round(fraction * len(classes)))
    if n_val == 0:
        return relabel(split, np.arange(len(split)), "train"), None
    if len(classes) - n_val < 2:
        raise ValueError(f"val_fraction={fraction} leaves fewer than 2 training classes.")
    val_classes = np.random.default_rng(seed).choice(classes, n_val, replace=False)
    is_val = np.isin(split.labels, val_classes)
    return (relabel(split, np.flatnonzero(~is_val), "train"),
            relabel(split, np.flatnonzero(is_val), "val"))


def hold_out_examples(split, fraction, seed):
    n_val = int(round(fraction * len(split)))
    if n_val == 0:
        return split, None
    perm = np.random.default_rng(seed).permutation(len(split))
    return (split.subset(np.sort(perm[n_val:]), "train"),
            split.subset(np.sort(perm[:n_val]), "val"))


def learning_rate(steps_per_epoch):
    if FLAGS.lr_inverse_decay > 0:
        return keras.optimizers.schedules.InverseTimeDecay(
            FLAGS.lr, decay_steps=1, decay_rate=FLAGS.lr_inverse_decay)
    decay = _ints(FLAGS.lr_decay_epochs)
    if not decay or FLAGS.lr_decay_gamma == 1.0:
        return FLAGS.lr
    step_epochs = decay[0] if len(decay) == 1 else decay
    return kd.models.step_decay(FLAGS.lr, steps_per_epoch, step_epochs, FLAGS.lr_decay_gamma)


def build_model(num_classes=None, proxies_per_class=1):
    """Backbone -> embedding head (-> proxies), as ``kd.models.MetricModel``."""
    weights = None if FLAGS.weights in (None, "", "none", "None") else FLAGS.weights
    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    backbone = kd.backbones.get(FLAGS.backbone, input_shape=shape, weights=weights)
    embedder = kd.models.build_embedder(backbone, embedding_dim=FLAGS.embedding_dim,
                                        pooling="avg+max", normalize=True)
    proxies = None
    if num_classes is not None:
        proxies = kd.layers.Proxies(num_classes, proxies_per_class=proxies_per_class)
    return kd.models.MetricModel(embedder, proxies=proxies)


def compile_model(model, loss, steps_per_epoch, uses_proxies):
    lr = learning_rate(steps_per_epoch)
    if FLAGS.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(lr, momentum=0.9,
                                         weight_decay=FLAGS.weight_decay or None)
    else:
        optimizer = keras.optimizers.AdamW(lr, weight_decay=FLAGS.weight_decay)
    model.compile(optimizer=optimizer, loss=loss,
                  proxy_lr_multiplier=FLAGS.proxy_lr_multiplier if uses_proxies else 1.0,
                  warmup_epochs=FLAGS.warmup_epochs,
                  clip_value=FLAGS.clip_value or None,
                  freeze_batchnorm=FLAGS.freeze_bn)


def callbacks(out, val_callback):
    """Validation metrics first (they write into logs), then the consumers."""
    monitor = val_callback.prefix + val_callback.monitor_key if val_callback else "loss"
    mode = "max" if val_callback else "min"
    cbs = [val_callback] if val_callback else []
    best_path = os.path.join(out, "best.weights.h5")
    threshold = None
    if FLAGS.resume and os.path.exists(best_path):
        # The interrupted run's best so far (ModelCheckpoint, before the CSV
        # logger, saw every logged epoch): only a better epoch replaces it.
        seen = history_from_csv(out).get(monitor)
        if seen:
            threshold = max(seen) if mode == "max" else min(seen)
    cbs += [
        keras.callbacks.ModelCheckpoint(best_path, monitor=monitor,
                                        mode=mode, save_best_only=True,
                                        save_weights_only=True,
                                        initial_value_threshold=threshold),
        keras.callbacks.CSVLogger(os.path.join(out, "history.csv"), append=FLAGS.resume),
        keras.callbacks.TensorBoard(os.path.join(out, "logs")),
        keras.callbacks.BackupAndRestore(os.path.join(out, BACKUP_DIR)),
        keras.callbacks.TerminateOnNaN(),
    ]
    return cbs


def history_from_csv(out):
    """Per-epoch logs of the whole run (also across --resume), from history.csv."""
    path = os.path.join(out, "history.csv")
    if not os.path.exists(path):
        return {}
    import csv
    with open(path) as f:
        rows = list(csv.DictReader(f))
    hist = {}
    for row in rows:
        for key, value in row.items():
            if key == "epoch" or value in ("", None, "NA"):   # NA: CSVLogger's val_* without validation
                continue
            hist.setdefault(key, []).append(float(value))
    return hist


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)


def export(model, out, image_shape, normalization, eval_transform):
    """SavedModel of the native images -> embeddings, through the same eval
    transform (resize / crop) and normalisation as the reported metrics."""
    path = os.path.join(out, "saved_model")
    if os.path.isdir(path):
        shutil.rmtree(path)
    kd.export.export_saved_model(
        model, path, image_shape=image_shape, preprocess=normalization,
        resize_to=(FLAGS.image_size, FLAGS.image_size), transform=eval_transform)
    return path


def _fit(model, train_ds, epochs, cbs, steps):
    return model.fit(train_ds, epochs=epochs, callbacks=cbs, verbose=FLAGS.verbose,
                     steps_per_epoch=steps)


def _transforms(native_shape):
    """(train transform, eval transform) and the backbone normalisation."""
    size = FLAGS.image_size
    rgb = native_shape is not None and native_shape[-1] == 1
    normalization = kd.backbones.preprocessing_name(FLAGS.backbone)
    if native_shape is not None and native_shape[0] is not None and native_shape[0] < size:
        # Small images (Fashion-MNIST): upscale whole; crops would lose too much.
        return (aug.train_transform(size, scale=(0.5, 1.0), rgb=rgb),
                aug.resize_transform(size, rgb=rgb), normalization)
    return aug.train_transform(size, rgb=rgb), aug.eval_transform(size, rgb=rgb), normalization


# ------------------------------------------------------------ class labels
def run_class_retrieval(data, native_shape=None, extra_metrics=None):
    """Train and evaluate on a class-disjoint benchmark (test, or query/gallery)."""
    out = prepare_output_dir()
    keras.utils.set_random_seed(FLAGS.seed)
    started = time.time()
    ks = _ints(FLAGS.ks)
    train_all = random_subset(data.train, FLAGS.max_train_examples, FLAGS.seed)
    if FLAGS.val_split == "classes":
        train, val = hold_out_classes(train_all, FLAGS.val_fraction, FLAGS.seed)
    else:
        train, val = hold_out_examples(train_all, FLAGS.val_fraction, FLAGS.seed)
        train = relabel(train, np.arange(len(train)), "train")
        val = None if val is None else relabel(val, np.arange(len(val)), "val")
    num_classes = int(train.labels.max()) + 1
    logging.info("data %s: train %d images / %d classes, val %s", data.name, len(train),
                 num_classes, None if val is None else len(val))

    train_tf, eval_tf, normalization = _transforms(native_shape or data.image_shape)
    proxy_loss = FLAGS.loss in PROXY_LOSSES
    loss = (PROXY_LOSSES if proxy_loss else PAIR_LOSSES)[FLAGS.loss]()
    sampler, batch_size = None, FLAGS.batch_size
    if FLAGS.m_per_class or not proxy_loss:
        # Pair losses need positives in every batch: P classes x M images
        # (M = 3 unless --m_per_class; fewer classes per batch if few exist).
        m = FLAGS.m_per_class or max(3, -(-batch_size // num_classes))
        batch_size = m * min(num_classes, batch_size // m)
        if batch_size != FLAGS.batch_size:
            logging.warning("batch size %d -> %d (%d classes x %d images)",
                            FLAGS.batch_size, batch_size, batch_size // m, m)
        sampler = kd.data.samplers.MPerClassSampler(train.labels, m, batch_size,
                                                    seed=FLAGS.seed)
    train_ds = kd.data.make_train_pipeline(
        train, batch_size, augment=train_tf, sampler=sampler, normalize=normalization,
        cache=FLAGS.cache and sampler is None, seed=FLAGS.seed)
    steps = FLAGS.steps_per_epoch
    steps_per_epoch = steps or int(train_ds.cardinality().numpy())

    def eval_ds(split):
        return kd.data.make_eval_pipeline(split, FLAGS.eval_batch_size, transform=eval_tf,
                                          normalize=normalization)

    per_class = getattr(loss, "centers_per_class", 1) if proxy_loss else 1
    model = build_model(num_classes if proxy_loss else None, per_class)
    compile_model(model, loss, steps_per_epoch, proxy_loss)
    val_cb = None
    if val is not None:
        val_cb = kd.evaluation.RetrievalCallback(eval_ds(val), ks=ks)
        val_cb.monitor_key = f"recall@{ks[0]}"
    _fit(model, train_ds, FLAGS.epochs, callbacks(out, val_cb), steps)

    best = os.path.join(out, "best.weights.h5")
    if val_cb is not None and os.path.exists(best):
        model.load_weights(best)

    # Test: once, with the selected weights.
    if data.query is not None:
        query = random_subset(data.query, FLAGS.max_test_examples, FLAGS.seed)
        gallery = data.gallery
        q_emb, q_lab = kd.evaluation.embed(model, eval_ds(query), verbose=FLAGS.verbose)
        g_emb, g_lab = kd.evaluation.embed(model, eval_ds(gallery), verbose=FLAGS.verbose)
        metrics = kd.evaluation.retrieval_metrics(q_emb, q_lab, g_emb, g_lab, ks=ks)
        grid_q, grid_g = query, gallery
    else:
        test = random_subset(data.test, FLAGS.max_test_examples, FLAGS.seed)
        q_emb, q_lab = kd.evaluation.embed(model, eval_ds(test), verbose=FLAGS.verbose)
        g_emb = g_lab = None
        metrics = kd.evaluation.retrieval_metrics(q_emb, q_lab, ks=ks)
        grid_q, grid_g = test, test
    metrics = {k: float(v) for k, v in metrics.items()}

    report = {
        "data": data.name, "split": "query/gallery" if data.query is not None else "test",
        "num_queries": int(len(q_emb)), "loss": FLAGS.loss, "backbone": FLAGS.backbone,
        "embedding_dim": FLAGS.embedding_dim, "epochs": FLAGS.epochs,
        "selected_by": "val_" + val_cb.monitor_key if val_cb else "last epoch",
        "train_seconds_total": round(time.time() - started, 1),
        **metrics, **(extra_metrics or {}),
    }
    write_json(os.path.join(out, "metrics.json"), report)
    logging.info("test metrics: %s", json.dumps(metrics))
    _plots(out, model, grid_q, grid_g, q_emb, g_emb, q_lab, g_lab)
    if FLAGS.export:
        path = export(model, out, native_shape or data.train.image_shape, normalization,
                      eval_tf)
        logging.info("exported %s", path)
    return report


def _plots(out, model, query_split, gallery_split, q_emb, g_emb, q_lab, g_lab,
           correct=None):
    hist = history_from_csv(out)
    keys = [k for k in hist if k.startswith("val_")]
    if keys:
        kd.plots.recall_curve(hist, os.path.join(out, "recall_curve.png"), keys=keys)
    n = min(FLAGS.num_plot_queries, len(q_emb))
    if n == 0:
        return
    pick = np.linspace(0, len(q_emb) - 1, n).astype(int)
    same_set = g_emb is None
    neighbours = nearest_excluding_self(q_emb, pick, None if same_set else g_emb, 5)
    q_images = _images(query_split, pick)
    g_images = _images(gallery_split, np.unique(neighbours))
    remap = {int(i): j for j, i in enumerate(np.unique(neighbours))}
    local = np.vectorize(remap.get)(neighbours)
    gallery_labels = (q_lab if same_set else g_lab)[np.unique(neighbours)]
    kd.plots.retrieval_grid(
        q_images, g_images, None if correct is not None else q_lab[pick],
        None if correct is not None else gallery_labels, local,
        os.path.join(out, "retrievals.png"),
        correct=None if correct is None else correct[pick])


def nearest_excluding_self(emb, pick, gallery=None, k=5, score="cosine"):
    """Top-k neighbours of the queries ``emb[pick]``: in ``gallery``, or in
    ``emb`` itself with each query removed by index."""
    if gallery is not None:
        return kd.evaluation.top_k_neighbours(emb[pick], gallery, k=k, score=score)
    found = kd.evaluation.top_k_neighbours(emb[pick], emb, k=k + 1, score=score)
    return np.stack([row[row != p][:k] for p, row in zip(pick, found)])


def _images(split, indices):
    """The uint8 images ``indices`` of ``split``, as a list (sizes may vary)."""
    sub = split.subset(np.asarray(indices), "plot")
    return [x.numpy() for x, _ in sub.dataset()]


# -------------------------------------------------------- continuous labels
def run_continuous_retrieval(data, label_distance, label_distance_kwargs=None,
                             transforms=None, test_label_distances=None,
                             embedding_distance="euclidean"):
    """Train and evaluate on a continuous-label task (pose, layout, captions).

    ``label_distance`` names a ``kd.label_distances`` function (its kwargs in
    ``label_distance_kwargs``); ``transforms`` = (train, eval) image
    transforms; ``test_label_distances`` an optional precomputed [N, N]
    matrix of the test split (e.g. cached caption-set distances).
    """
    out = prepare_output_dir()
    keras.utils.set_random_seed(FLAGS.seed)
    started = time.time()
    ks = _ints(FLAGS.ks)
    kwargs = dict(label_distance_kwargs or {})
    train_all = random_subset(data.train, FLAGS.max_train_examples, FLAGS.seed)
    train, val = hold_out_examples(train_all, FLAGS.val_fraction, FLAGS.seed)
    # Metrics@K need K items besides the query: fail now, not after training.
    n_test = len(data.test) if FLAGS.max_test_examples is None else \
        min(len(data.test), FLAGS.max_test_examples)
    for name, n in (("validation", None if val is None else len(val)), ("test", n_test)):
        if n is not None and n - 1 < max(ks):
            raise ValueError(
                f"--ks up to {max(ks)} needs more than {max(ks)} {name} examples; there "
                f"are {n} (raise --val_fraction / --max_test_examples or lower --ks).")
    if transforms is None:
        train_tf, eval_tf, normalization = _transforms(data.image_shape)
    else:
        (train_tf, eval_tf), normalization = transforms, \
            kd.backbones.preprocessing_name(FLAGS.backbone)

    # The authors' batches: an anchor, its 5 nearest in label space, others.
    neighbours, _ = kd.data.samplers.nearest_neighbours(
        train.labels, k=5, distance=label_distance, chunk_size=2048, **kwargs)
    sampler = kd.data.samplers.LabelSpaceBatchSampler(
        neighbours, batch_size=min(FLAGS.batch_size, len(train)), num_neighbours=5,
        seed=FLAGS.seed)
    train_ds = kd.data.make_train_pipeline(
        train, sampler.batch_size, augment=train_tf, sampler=sampler,
        normalize=normalization)
    steps = FLAGS.steps_per_epoch
    steps_per_epoch = steps or int(train_ds.cardinality().numpy())

    def eval_ds(split):
        return kd.data.make_eval_pipeline(split, FLAGS.eval_batch_size, transform=eval_tf,
                                          normalize=normalization)

    loss = CONTINUOUS_LOSSES[FLAGS.loss](label_distance, kwargs)
    model = build_model(None)
    compile_model(model, loss, steps_per_epoch, False)
    val_cb = None
    if val is not None:
        val_cb = kd.evaluation.ContinuousRetrievalCallback(
            eval_ds(val), ks=ks, label_distance=label_distance,
            embedding_distance=embedding_distance, label_distance_kwargs=kwargs or None)
        val_cb.monitor_key = f"ndcg@{ks[0]}"
    _fit(model, train_ds, FLAGS.epochs, callbacks(out, val_cb), steps)
    best = os.path.join(out, "best.weights.h5")
    if val_cb is not None and os.path.exists(best):
        model.load_weights(best)

    test = data.test
    dist = test_label_distances
    if FLAGS.max_test_examples is not None and FLAGS.max_test_examples < len(test):
        idx = np.sort(np.random.default_rng(FLAGS.seed).choice(
            len(test), FLAGS.max_test_examples, replace=False))
        test = test.subset(idx, "test")
        dist = None if dist is None else np.asarray(dist)[np.ix_(idx, idx)]
    emb, _ = kd.evaluation.embed(model, eval_ds(test), verbose=FLAGS.verbose)
    metrics = kd.evaluation.continuous_metrics(
        emb, test.labels, ks=ks, label_distance=label_distance if dist is None else dist,
        embedding_distance=embedding_distance,
        label_distance_kwargs=(kwargs or None) if dist is None else None)
    metrics = {k: float(v) for k, v in metrics.items()}
    write_json(os.path.join(out, "metrics.json"), {
        "data": data.name, "split": "test", "num_queries": int(len(emb)),
        "loss": FLAGS.loss, "backbone": FLAGS.backbone,
        "embedding_dim": FLAGS.embedding_dim, "epochs": FLAGS.epochs,
        "selected_by": "val_" + val_cb.monitor_key if val_cb else "last epoch",
        "train_seconds_total": round(time.time() - started, 1), **metrics})
    logging.info("test metrics: %s", json.dumps(metrics))

    # Retrievals: green = among the query's 5 nearest in label space.
    n = min(FLAGS.num_plot_queries, len(emb))
    if n:
        pick = np.linspace(0, len(emb) - 1, n).astype(int)
        if dist is None:
            truth, _ = kd.data.samplers.nearest_neighbours(
                test.labels, k=5, distance=label_distance, chunk_size=2048, **kwargs)
        else:
            masked = np.array(dist, dtype=np.float64, copy=True)
            np.fill_diagonal(masked, np.inf)
            truth = np.argsort(masked, axis=1, kind="stable")[:, :5]
        found = nearest_excluding_self(
            emb, pick, k=5, score="cosine" if embedding_distance == "cosine" else "euclidean")
        correct = np.array([[f in set(truth[p]) for f in row] for p, row in zip(pick, found)])
        uniq = np.unique(found)
        local = np.vectorize({int(i): j for j, i in enumerate(uniq)}.get)(found)
        kd.plots.retrieval_grid(_images(test, pick), _images(test, uniq), None, None, local,
                                os.path.join(out, "retrievals.png"), correct=correct)
    hist = history_from_csv(out)
    keys = [k for k in hist if k.startswith("val_")]
    if keys:
        kd.plots.recall_curve(hist, os.path.join(out, "recall_curve.png"), keys=keys)
    if FLAGS.export:
        export(model, out, data.train.image_shape, normalization, eval_tf)
