"""One experiment runner for class-label and continuous-label retrieval.

    result = kd.training.run(recipe, data, "runs/cub")       # -> RunResult

``run`` does, in order:

1. split: a random subset of the training data (``max_train_examples``),
   then a validation hold-out used only to pick the checkpoint (whole
   classes, or random examples; continuous labels: examples); the test split
   is looked at once, at the end;
2. build backbone -> embedding head (-> proxies when the loss takes them)
   and compile the recipe's optimiser (lr schedule, proxy lr multiplier,
   warm-up, clipping, frozen BatchNorm);
3. ``fit`` with progress bars, TensorBoard (``logs/``), ``history.csv``,
   validation metrics, best-checkpoint saving (``best.weights.h5``) and
   ``BackupAndRestore`` (``backup/``, for ``resume=True``);
4. restore the best weights, evaluate the test split (or query/gallery) and
   write ``metrics.json``, ``recall_curve.png``, ``retrievals.png`` and
   ``recipe.cfg`` (the recipe that ran, as a flagfile);
5. class labels: save the test gallery (its embeddings from step 4, labels,
   image references and thumbnails) as ``index/``, a ``kd.retrieval.Index``
   that ``keras-dml search`` queries (``index=False`` skips it), and as an
   Embedding Projector run ``logs/projector`` (see ``training.gallery``);
6. export ``saved_model/`` (``export=False`` skips it).

What the labels need beyond the recipe (label distance, image transforms)
is a :class:`Task`, looked up from ``data.label_type`` by default.
"""

import csv
import dataclasses
import json
import os
import shutil
import time
from typing import Callable, Optional

from absl import logging
import keras
import numpy as np

from keras_dml import label_distances, optimizers
from keras_dml.training.recipe import Recipe, RecipeError

BACKUP_DIR = "backup"
RUN_TIME_FILE = "run_time.json"
# Retrieval-grid neighbours, and label-space neighbours per anchor in a
# continuous batch (the log-ratio authors' sampler).
GRID_K = 5
NUM_NEIGHBOURS = 5


class OutputDirError(RuntimeError):
    """output_dir holds an interrupted run and resume was not asked for."""


# ------------------------------------------------------------------ tasks
def _pose_transforms(recipe):
    from keras_dml.data import mpii
    return (mpii.pose_train_transform(recipe.image_size, seed=recipe.seed),
            mpii.pose_eval_transform(recipe.image_size))


def _whole_frame(recipe):
    # A room layout is tied to the whole frame: resize, no crop or flip.
    from keras_dml.data import augment
    whole = augment.resize_transform(recipe.image_size)
    return whole, whole


@dataclasses.dataclass(frozen=True)
class Task:
    """What a data set's labels need beyond the recipe.

    Attributes:
      continuous: float label vectors (continuous losses, nDCG metrics)
        rather than class ids.
      label_distance, label_distance_kwargs: a ``kd.label_distances`` name
        and its arguments (continuous tasks).
      embedding_distance: "euclidean" or "cosine" (continuous metrics).
      transforms: ``recipe -> (train transform, eval transform)``; None for
        the default random-resized-crop / centre-crop pair.
    """

    continuous: bool = False
    label_distance: Optional[str] = None
    label_distance_kwargs: Optional[dict] = None
    embedding_distance: str = "euclidean"
    transforms: Optional[Callable] = None


TASKS = {
    "class": Task(),
    "pose": Task(True, "squared_l2", transforms=_pose_transforms),
    "layout": Task(True, "one_minus_miou", {"num_classes": 5}, transforms=_whole_frame),
    "caption": Task(True, "caption_set"),
}


def task_for(data):
    """The :class:`Task` of ``data.label_type`` (see ``TASKS``)."""
    try:
        return TASKS[data.label_type]
    except KeyError:
        raise ValueError(f"no task for label_type {data.label_type!r}; pass task=Task(...) "
                         f"(known: {sorted(TASKS)}).") from None


@dataclasses.dataclass
class RunResult:
    """What a run produced.

    Attributes:
      metrics: the ``metrics.json`` report (test metrics and run facts).
      history: per-epoch logs of the whole run (also across resumes).
      output_dir: the run directory.
      paths: ``{"metrics", "history", "recipe", "logs", "best_weights",
        "recall_curve", "retrievals", "index", "projector", "saved_model"}``
        of what was written ("projector": its projector_config.pbtxt).
      model: the trained ``MetricModel`` with the selected weights.
    """

    metrics: dict
    history: dict
    output_dir: str
    paths: dict
    model: object = None


# ------------------------------------------------------------ run clock
class RunClock(keras.callbacks.Callback):
    """Wall time of a run summed over all its processes (``resume``): kept
    in ``output_dir/run_time.json``, saved every ``every`` seconds of
    training and at each epoch's end, so a killed process loses little."""

    def __init__(self, out, continuing, every=10.0):
        super().__init__()
        self.path = os.path.join(out, RUN_TIME_FILE)
        self.every = every
        self.base = 0.0
        if continuing and os.path.exists(self.path):
            with open(self.path) as f:
                self.base = float(json.load(f)["seconds"])
        self.start = self._saved = time.monotonic()

    def seconds(self):
        return self.base + time.monotonic() - self.start

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"seconds": round(self.seconds(), 3)}, f)
        os.replace(tmp, self.path)
        self._saved = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self._saved >= self.every:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.save()


# ------------------------------------------------------------- helpers
def prepare_output_dir(output_dir, resume):
    """Create ``output_dir``; refuse to clobber an interrupted run unless
    ``resume``. Returns (path, whether an interrupted run is continued)."""
    out = os.fspath(output_dir)
    backup = os.path.join(out, BACKUP_DIR)
    interrupted = os.path.isdir(backup)
    if interrupted and not resume:
        raise OutputDirError(
            f"{out} holds an interrupted run ({backup}); pass --resume (resume=True) to "
            "continue it, or choose another output directory.")
    os.makedirs(out, exist_ok=True)
    return out, interrupted


def history_from_csv(out):
    """Per-epoch logs of the whole run (also across resumes), from history.csv."""
    path = os.path.join(out, "history.csv")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        rows = list(csv.DictReader(f))
    hist = {}
    for row in rows:
        for key, value in row.items():
            if key == "epoch" or value in ("", None, "NA"):  # NA: val_* without validation
                continue
            hist.setdefault(key, []).append(float(value))
    return hist


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)


def build_loss(recipe, task):
    """The recipe's loss, checked against the task's kind of labels."""
    from keras_dml import losses
    allowed = losses.available(continuous_labels=task.continuous)
    if recipe.loss not in allowed:
        kind = "continuous" if task.continuous else "class"
        raise RecipeError(f"loss {recipe.loss!r} does not take {kind} labels; losses for "
                          f"{kind} labels: {', '.join(allowed)}.")
    kwargs = recipe.loss_arguments()
    if task.continuous:
        return losses.get(recipe.loss, label_distance=task.label_distance,
                          label_distance_kwargs=task.label_distance_kwargs or None, **kwargs)
    return losses.get(recipe.loss, **kwargs)


def split_train(recipe, data, task):
    """(train, val or None): subset, then the validation hold-out."""
    from keras_dml.data import splits
    train_all = splits.random_subset(data.train, recipe.max_train_examples, recipe.seed)
    how = recipe.val_split
    if how == "auto":
        how = "examples" if task.continuous else "classes"
    if task.continuous and how == "classes":
        raise RecipeError("val_split='classes' needs class labels; continuous tasks hold "
                          "out examples (val_split='examples' or 'auto').")
    if how == "classes":
        return splits.hold_out_classes(train_all, recipe.val_fraction, recipe.seed)
    return splits.hold_out_examples(train_all, recipe.val_fraction, recipe.seed,
                                    relabel_classes=not task.continuous)


def test_sets(recipe, data, task):
    """(query, gallery or None, precomputed test label distances or None)."""
    from keras_dml.data import splits
    if data.query is not None:
        return (splits.random_subset(data.query, recipe.max_test_examples, recipe.seed),
                data.gallery, None)
    if data.test is None:
        raise ValueError(f"data {data.name!r} has neither a test split nor query/gallery.")
    idx = splits.random_indices(len(data.test), recipe.max_test_examples, recipe.seed)
    dist = data.test.info.get("label_distances") if task.continuous else None
    if idx is None:
        return data.test, None, dist
    return (data.test.subset(idx, "test"), None,
            None if dist is None else np.asarray(dist)[np.ix_(idx, idx)])


def check_ks(recipe, val, query, gallery=None):
    """Fail before training unless every K is below the items a query can
    retrieve (the rest of its set, or the gallery): at K >= those, Recall@K
    is 1 and the continuous metrics are the same for any embedding, and the
    metric functions refuse them."""
    k = max(recipe.ks)
    for name, split, searched in (("validation", val, None), ("test", query, gallery)):
        if split is None:
            continue
        available = len(searched) if searched is not None else len(split) - 1
        if k >= available:
            where = "gallery items" if searched is not None else f"other {name} examples"
            raise RecipeError(
                f"ks up to {k} needs more than {k} {where} per query; there are "
                f"{available} (raise val_fraction / max_test_examples or lower ks).")


def transforms(recipe, data, task):
    """(train transform, eval transform, normalisation name)."""
    from keras_dml import backbones
    from keras_dml.data import augment as aug
    normalization = backbones.preprocessing_name(recipe.backbone)
    if task.transforms is not None:
        return (*task.transforms(recipe), normalization)
    size = recipe.image_size
    native = data.image_shape or data.train.image_shape
    rgb = native[-1] == 1
    if native[0] is not None and native[0] < size:
        # Small images (Fashion-MNIST): upscale whole; crops would lose too much.
        return (aug.train_transform(size, scale=(0.5, 1.0), rgb=rgb),
                aug.resize_transform(size, rgb=rgb), normalization)
    return aug.train_transform(size, rgb=rgb), aug.eval_transform(size, rgb=rgb), normalization


def train_pipeline(recipe, task, loss, train, train_tf, normalization):
    """The training tf.data pipeline and its batch size (class batches of P
    classes x M images for pair losses; label-space batches for continuous)."""
    from keras_dml import data as kdata
    batch_size, sampler = recipe.batch_size, None
    if recipe.sampler == "label_space" and not task.continuous:
        raise RecipeError("sampler='label_space' needs continuous labels; class tasks use "
                          "sampler='auto' or 'random'.")
    if recipe.sampler == "random":
        # Shuffled examples (e.g. the "log-ratio without dense mining" ablation).
        batch_size = min(batch_size, len(train))
    elif task.continuous:
        neighbours, _ = label_distances.nearest_neighbours(
            train.labels, k=NUM_NEIGHBOURS, distance=task.label_distance, chunk_size=2048,
            **(task.label_distance_kwargs or {}))
        sampler = kdata.samplers.LabelSpaceBatchSampler(
            neighbours, batch_size=min(batch_size, len(train)),
            num_neighbours=NUM_NEIGHBOURS, seed=recipe.seed)
        batch_size = sampler.batch_size
    elif recipe.m_per_class or not loss.takes_proxies:
        # Pair losses need positives in every batch: P classes x M images
        # (M = 3 unless m_per_class; fewer classes per batch if few exist).
        num_classes = int(train.labels.max()) + 1
        m = recipe.m_per_class or max(3, -(-batch_size // num_classes))
        batch_size = m * min(num_classes, batch_size // m)
        if batch_size != recipe.batch_size:
            logging.warning("batch size %d -> %d (%d classes x %d images)",
                            recipe.batch_size, batch_size, batch_size // m, m)
        sampler = kdata.samplers.MPerClassSampler(train.labels, m, batch_size,
                                                  seed=recipe.seed)
    return kdata.make_train_pipeline(
        train, batch_size, augment=train_tf, sampler=sampler, normalize=normalization,
        cache=recipe.cache and sampler is None, seed=recipe.seed)


def learning_rate(recipe, steps_per_epoch):
    """A float or a schedule: inverse-time decay, step decay, or constant."""
    if recipe.lr_inverse_decay > 0:
        return keras.optimizers.schedules.InverseTimeDecay(
            recipe.lr, decay_steps=1, decay_rate=recipe.lr_inverse_decay)
    decay = list(recipe.lr_decay_epochs)
    if not decay or recipe.lr_decay_gamma == 1.0:
        return recipe.lr
    return optimizers.step_decay(recipe.lr, steps_per_epoch,
                             decay[0] if len(decay) == 1 else decay, recipe.lr_decay_gamma)


def build_model(recipe, loss, num_classes):
    """Backbone -> embedding head (-> proxies if the loss takes them)."""
    import keras_dml as kd
    weights = None if recipe.weights in ("", "none", "None") else recipe.weights
    shape = (recipe.image_size, recipe.image_size, 3)
    backbone = kd.backbones.get(recipe.backbone, input_shape=shape, weights=weights)
    # avg+max for CNN feature maps; the class token for keras-hub transformers.
    embedder = kd.models.build_embedder(backbone, embedding_dim=recipe.embedding_dim,
                                        pooling=kd.backbones.info(recipe.backbone).pooling,
                                        normalize=True)
    proxies = None
    if loss.takes_proxies:
        proxies = kd.layers.Proxies(num_classes, proxies_per_class=loss.proxies_per_class)
    return kd.models.MetricModel(embedder, proxies=proxies,
                                 memory_size=recipe.memory_size or None)


def compile_model(model, recipe, loss, steps_per_epoch):
    lr = learning_rate(recipe, steps_per_epoch)
    if recipe.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(lr, momentum=0.9,
                                         weight_decay=recipe.weight_decay or None)
    else:
        optimizer = keras.optimizers.AdamW(lr, weight_decay=recipe.weight_decay)
    model.compile(optimizer=optimizer, loss=loss,
                  proxy_lr_multiplier=recipe.proxy_lr_multiplier if loss.takes_proxies else 1.0,
                  warmup_epochs=recipe.warmup_epochs, clip_value=recipe.clip_value or None,
                  freeze_batchnorm=recipe.freeze_bn)


def validation_callback(recipe, task, val_ds):
    from keras_dml import evaluation
    if task.continuous:
        return evaluation.ContinuousRetrievalCallback(
            val_ds, ks=recipe.ks, label_distance=task.label_distance,
            embedding_distance=task.embedding_distance,
            label_distance_kwargs=task.label_distance_kwargs or None)
    return evaluation.RetrievalCallback(val_ds, ks=recipe.ks)


def standard_callbacks(out, val_cb, resume):
    """Validation metrics first (they write into logs), then the consumers."""
    monitor, mode = (val_cb.monitor, val_cb.mode) if val_cb else ("loss", "min")
    best_path = os.path.join(out, "best.weights.h5")
    threshold = None
    if resume and os.path.exists(best_path):
        # The interrupted run's best so far (ModelCheckpoint, before the CSV
        # logger, saw every logged epoch): only a better epoch replaces it.
        seen = history_from_csv(out).get(monitor)
        if seen:
            threshold = max(seen) if mode == "max" else min(seen)
    return [val_cb] * (val_cb is not None) + [
        keras.callbacks.ModelCheckpoint(best_path, monitor=monitor, mode=mode,
                                        save_best_only=True, save_weights_only=True,
                                        initial_value_threshold=threshold),
        keras.callbacks.CSVLogger(os.path.join(out, "history.csv"), append=resume),
        keras.callbacks.TensorBoard(os.path.join(out, "logs")),
        keras.callbacks.BackupAndRestore(os.path.join(out, BACKUP_DIR)),
        keras.callbacks.TerminateOnNaN(),
    ]


def _images(split, indices):
    """The uint8 images ``indices`` of ``split``, as a list (sizes may vary)."""
    sub = split.subset(np.asarray(indices), "plot")
    return [x.numpy() for x, _ in sub.dataset()]


def retrieval_grid(path, query, gallery, q_emb, g_emb, num_queries, score="cosine",
                   q_labels=None, g_labels=None, truth=None):
    """retrievals.png: ``num_queries`` queries spread over ``query`` and
    their GRID_K nearest in ``gallery`` (in ``query`` itself, each query
    excluded by index, when ``gallery`` is None). Borders from the class
    labels, or from ``truth`` [Nq, k] (the label-space nearest of each query:
    a retrieved item among them is correct)."""
    from keras_dml import evaluation, plots
    n = min(num_queries, len(q_emb))
    if n == 0:
        return None
    pick = np.linspace(0, len(q_emb) - 1, n).astype(int)
    same_set = gallery is None
    found = evaluation.top_k_neighbours(
        q_emb[pick], q_emb if same_set else g_emb, k=GRID_K, score=score,
        exclude_index=pick if same_set else None)
    uniq = np.unique(found)
    local = np.searchsorted(uniq, found)
    gallery = query if same_set else gallery
    correct = None
    if truth is not None:
        correct = (found[:, :, None] == truth[pick][:, None, :]).any(-1)
    else:
        g_labels = q_labels if same_set else g_labels
    return plots.retrieval_grid(
        _images(query, pick), _images(gallery, uniq),
        None if correct is not None else q_labels[pick],
        None if correct is not None else g_labels[uniq], local, path, correct=correct)


def label_space_truth(labels, task, dist=None):
    """[N, GRID_K] nearest in label space of every item (itself excluded)."""
    if dist is None:
        truth, _ = label_distances.nearest_neighbours(
            labels, k=GRID_K, distance=task.label_distance, chunk_size=2048,
            **(task.label_distance_kwargs or {}))
        return truth
    masked = np.array(dist, dtype=np.float64, copy=True)
    np.fill_diagonal(masked, np.inf)
    return np.argsort(masked, axis=1, kind="stable")[:, :GRID_K]


# ------------------------------------------------------------------ run
def run(recipe, data, output_dir, *, task=None, resume=False, export=True, index=True,
        verbose=1, callbacks=()):
    """Train, select, evaluate, report and export one recipe on ``data``.

    Args:
      recipe: a :class:`Recipe`.
      data: a ``kd.data.RetrievalData`` (train plus test, or query/gallery).
      output_dir: the run directory (created; an interrupted run in it is
        refused unless ``resume``).
      task: a :class:`Task`; default ``task_for(data)``.
      resume: continue an interrupted run in ``output_dir``.
      export: write ``saved_model/`` (images -> embeddings). TensorFlow
        backend only: under JAX / PyTorch the run logs why it skips the
        export and writes ``final.weights.h5`` instead.
      index: class labels: write ``index/``, the test gallery as a
        ``kd.retrieval.Index`` (the Projector run is written either way).
      verbose: Keras verbosity (1: progress bars, 0: silent).
      callbacks: extra Keras callbacks, called after the runner's own.

    Returns:
      :class:`RunResult`.
    """
    from keras_dml import data as kdata, evaluation, export as kexport, plots
    from keras_dml.training import gallery as kgallery
    if not isinstance(recipe, Recipe):
        raise TypeError(f"run takes a kd.training.Recipe; got {type(recipe).__name__}.")
    task = task or task_for(data)
    loss = build_loss(recipe, task)
    keras.utils.set_random_seed(recipe.seed)
    train, val = split_train(recipe, data, task)
    query, gallery, test_dist = test_sets(recipe, data, task)
    check_ks(recipe, val, query, gallery)
    out, interrupted = prepare_output_dir(output_dir, resume)
    clock = RunClock(out, continuing=resume and interrupted)
    paths = {"metrics": os.path.join(out, "metrics.json"),
             "history": os.path.join(out, "history.csv"),
             "recipe": os.path.join(out, "recipe.cfg"),
             "logs": os.path.join(out, "logs"),
             "best_weights": os.path.join(out, "best.weights.h5")}
    with open(paths["recipe"], "w") as f:
        f.write(recipe.to_flagfile())
    try:
        num_classes = None if task.continuous else int(train.labels.max()) + 1
        logging.info("data %s: train %d images%s, val %s", data.name, len(train),
                     "" if num_classes is None else f" / {num_classes} classes",
                     None if val is None else len(val))
        train_tf, eval_tf, normalization = transforms(recipe, data, task)
        train_ds = train_pipeline(recipe, task, loss, train, train_tf, normalization)
        steps_per_epoch = recipe.steps_per_epoch or int(train_ds.cardinality().numpy())
        if recipe.steps_per_epoch:
            # Exactly steps_per_epoch steps every epoch: the stream repeats
            # (each pass is the sampler's next epoch) instead of running dry.
            train_ds = train_ds.repeat()

        def eval_ds(split):
            return kdata.make_eval_pipeline(split, recipe.eval_batch_size, transform=eval_tf,
                                            normalize=normalization)

        model = build_model(recipe, loss, num_classes)
        compile_model(model, recipe, loss, steps_per_epoch)
        val_cb = None if val is None else validation_callback(recipe, task, eval_ds(val))
        model.fit(train_ds, epochs=recipe.epochs, verbose=verbose,
                  steps_per_epoch=recipe.steps_per_epoch,
                  callbacks=standard_callbacks(out, val_cb, resume) + [clock, *callbacks])
        if val_cb is not None and os.path.exists(paths["best_weights"]):
            model.load_weights(paths["best_weights"])

        # Test: once, with the selected weights.
        q_emb, q_lab = evaluation.embed(model, eval_ds(query), verbose=verbose)
        g_emb, g_lab = (None, None) if gallery is None else \
            evaluation.embed(model, eval_ds(gallery), verbose=verbose)
        if task.continuous:
            metrics = evaluation.continuous_metrics(
                q_emb, query.labels, ks=recipe.ks,
                label_distance=task.label_distance if test_dist is None else test_dist,
                embedding_distance=task.embedding_distance,
                label_distance_kwargs=(task.label_distance_kwargs or None)
                if test_dist is None else None)
        else:
            metrics = evaluation.retrieval_metrics(q_emb, q_lab, g_emb, g_lab, ks=recipe.ks)
        metrics = {k: float(v) for k, v in metrics.items()}
        report = {
            "data": data.name, "split": "test" if gallery is None else "query/gallery",
            "num_queries": int(len(q_emb)), "loss": recipe.loss,
            "backbone": recipe.backbone, "embedding_dim": recipe.embedding_dim,
            "epochs": recipe.epochs,
            "selected_by": val_cb.monitor if val_cb else "last epoch",
            "train_seconds_total": round(clock.seconds(), 1), **metrics,
        }
        _write_json(paths["metrics"], report)
        logging.info("test metrics: %s", json.dumps(metrics))

        history = history_from_csv(out)
        if val_cb is not None:
            # One axis of fractions: nDCG for continuous labels (label
            # distances are not percentages), all metrics for classes.
            keys = [k for k in history if k.startswith(val_cb.prefix)
                    and not (task.continuous and "label_distance" in k)]
            if keys:
                paths["recall_curve"] = plots.recall_curve(
                    history, os.path.join(out, "recall_curve.png"), keys=keys,
                    title="validation " + ("nDCG@K" if task.continuous else "retrieval"))
        truth = label_space_truth(query.labels, task, test_dist) if task.continuous else None
        score = "euclidean" if task.continuous and task.embedding_distance != "cosine" \
            else "cosine"
        grid = retrieval_grid(os.path.join(out, "retrievals.png"), query, gallery,
                              q_emb, g_emb, recipe.num_plot_queries, score=score,
                              q_labels=q_lab, g_labels=g_lab, truth=truth)
        if grid is not None:
            paths["retrievals"] = grid
        if not task.continuous:
            # The gallery the test queries searched, with the embeddings
            # already computed above.
            g_split, g_e, g_l = (query, q_emb, q_lab) if gallery is None else \
                (gallery, g_emb, g_lab)
            thumbs = None
            if index:
                thumbs = kgallery.gallery_thumbnails(g_split)
                paths["index"] = kgallery.write_index(out, g_split, g_e, g_l, thumbs)
                logging.info("wrote the test gallery index %s (%d items)",
                             paths["index"], len(g_e))
            paths["projector"] = kgallery.write_projector(
                paths["logs"], g_split, g_e, g_l, thumbs, seed=recipe.seed)["config"]
        if export and keras.backend.backend() != "tensorflow":
            # The SavedModel's serving functions trace the model with
            # TensorFlow; a JAX/PyTorch model's weights are backend-neutral.
            paths["final_weights"] = os.path.join(out, "final.weights.h5")
            model.save_weights(paths["final_weights"])
            logging.warning(
                "SavedModel export skipped: it needs KERAS_BACKEND=tensorflow "
                "(this run used %s). The weights are in %s: build the same "
                "recipe's model under the TensorFlow backend, load them and "
                "call kd.export.export_saved_model.", keras.backend.backend(),
                paths["final_weights"])
        elif export:
            path = os.path.join(out, "saved_model")
            if os.path.isdir(path):
                shutil.rmtree(path)
            kexport.export_saved_model(
                model, path, image_shape=data.train.image_shape, preprocess=normalization,
                resize_to=(recipe.image_size, recipe.image_size), transform=eval_tf)
            paths["saved_model"] = path
            logging.info("exported %s", path)
    finally:
        clock.save()
    return RunResult(metrics=report, history=history, output_dir=out, paths=paths,
                     model=model)
