"""Keras callbacks that evaluate retrieval at the end of training epochs.

The metrics are written into the epoch ``logs`` (with a prefix, "val_" by
default), so ``History``, ``TensorBoard``, ``CSVLogger``, ``EarlyStopping``
and ``ModelCheckpoint(monitor="val_recall@1", mode="max")`` see them. Keras
calls callbacks in list order: put the retrieval callback *before* the
callbacks that read its metrics. On epochs that are skipped (``every`` > 1)
the keys are absent, as with Keras' own ``validation_freq``.

A callback only ever embeds the data it was given: pass a validation split
(never the test split unless that is what you mean to monitor).

``callback.monitor`` is the logged key that selects a checkpoint (prefix
included, e.g. "val_recall@1") and ``callback.mode`` its direction, so

    keras.callbacks.ModelCheckpoint(path, monitor=cb.monitor, mode=cb.mode, ...)

needs no key spelled out by hand.
"""

import keras

from keras_dml.evaluation.continuous import continuous_metrics
from keras_dml.evaluation.embed import embed
from keras_dml.evaluation.retrieval import retrieval_metrics


class _EvaluationCallback(keras.callbacks.Callback):
    """Embeds ``data`` (and ``gallery``) every ``every`` epochs and logs metrics."""

    # Metrics where lower is better; every other monitored metric is "max".
    _LOWER_IS_BETTER = ("mean_label_distance",)

    def __init__(self, data, gallery=None, every=1, prefix="val_",
                 batch_size=256, verbose=0, monitor=None):
        super().__init__()
        if int(every) != every or every < 1:
            raise ValueError(f"every must be a positive integer; got {every!r}.")
        self.data = data
        self.gallery = gallery
        self.every = int(every)
        self.prefix = prefix
        self.batch_size = batch_size
        self.verbose = verbose
        # The metric (without prefix) that selects checkpoints.
        self.monitor_key = monitor
        # Evaluations made so far: {"epoch": [0-based epochs], "<key>": [...]}.
        self.history = {"epoch": []}

    @property
    def monitor(self):
        """The key in ``logs`` to select checkpoints by, e.g. "val_recall@1"."""
        return self.prefix + self.monitor_key

    @property
    def mode(self):
        """"max" or "min": the better direction of ``monitor``."""
        return "min" if self.monitor_key.startswith(self._LOWER_IS_BETTER) else "max"

    def _compute(self, query_emb, query_labels, gallery_emb, gallery_labels):
        raise NotImplementedError

    def evaluate(self, model=None):
        """Embed the data with ``model`` (default: the training model) and
        return the metrics dict (keys without the prefix)."""
        model = model if model is not None else self.model
        verbose = 1 if self.verbose > 1 else 0
        q, ql = embed(model, self.data, verbose=verbose, batch_size=self.batch_size)
        if self.gallery is None:
            g, gl = None, None
        else:
            g, gl = embed(model, self.gallery, verbose=verbose,
                          batch_size=self.batch_size)
        return self._compute(q, ql, g, gl)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        results = {self.prefix + k: v for k, v in self.evaluate().items()}
        if logs is not None:
            logs.update(results)
        self.history["epoch"].append(epoch)
        for key, value in results.items():
            self.history.setdefault(key, []).append(value)
        if self.verbose:
            text = " - ".join(f"{k}: {v:.4f}" for k, v in results.items())
            print(f"Epoch {epoch + 1}: {text}", flush=True)


class RetrievalCallback(_EvaluationCallback):
    """Recall@K / MAP@R / R-precision (/ NMI) of the model's embeddings.

    Args:
        data: a batched ``tf.data.Dataset`` of ``(images, labels)``, or an
            ``(x, y)`` numpy tuple. Without ``gallery`` every item is a query
            searching the others (CUB, Cars, SOP protocol).
        ks: the K of Recall@K.
        every: evaluate every ``every`` epochs (epochs every, 2*every, ...).
        metrics: see ``retrieval_metrics``.
        prefix: prepended to the keys in ``logs`` ("val_recall@1", ...).
        monitor: the metric that selects checkpoints (default
            "recall@<first K>"); see ``monitor`` and ``mode``.
        gallery: optional gallery data in the same form (In-Shop protocol:
            ``data`` is the query set).
        batch_size: batch size for numpy data.
        verbose: 1 prints the metrics, 2 also shows embedding progress bars.
        **metric_kwargs: passed on to ``retrieval_metrics`` (``lone_queries``,
            ``chunk_size``, ``seed``).
    """

    def __init__(self, data, ks=(1, 2, 4, 8), every=1,
                 metrics=("recall", "map_at_r", "r_precision"), prefix="val_",
                 gallery=None, batch_size=256, verbose=0, monitor=None,
                 **metric_kwargs):
        self.ks = tuple(ks)
        if not self.ks:
            raise ValueError("ks must name at least one K.")
        super().__init__(data, gallery=gallery, every=every, prefix=prefix,
                         batch_size=batch_size, verbose=verbose,
                         monitor=monitor or f"recall@{self.ks[0]}")
        self.metrics = metrics
        self.metric_kwargs = metric_kwargs

    def _compute(self, q, ql, g, gl):
        if ql is None or (g is not None and gl is None):
            raise ValueError("RetrievalCallback data must yield (x, labels).")
        return retrieval_metrics(q, ql, g, gl, ks=self.ks, metrics=self.metrics,
                                 **self.metric_kwargs)


class ContinuousRetrievalCallback(_EvaluationCallback):
    """Mean label distance@K and nDCG@K for continuous labels.

    Args:
        data: a batched ``tf.data.Dataset`` of ``(x, label_vectors)`` or an
            ``(x, y)`` numpy tuple (queries; all of it if no ``gallery``).
        ks, label_distance, metric, metrics: see
            ``continuous_metrics`` (a precomputed ``label_distance`` matrix
            must match the query x gallery sizes; the labels are then unused).
        every, prefix, gallery, batch_size, verbose: as ``RetrievalCallback``.
        monitor: the metric that selects checkpoints (default "ndcg@<first
            K>"; a "mean_label_distance@K" is minimised).
        **metric_kwargs: passed on (``chunk_size``, ``label_distance_kwargs``).
    """

    def __init__(self, data, ks=(1, 5, 10, 20), every=1,
                 label_distance="squared_l2", metric="euclidean",
                 metrics=("mean_label_distance", "ndcg"), prefix="val_",
                 gallery=None, batch_size=256, verbose=0, monitor=None,
                 **metric_kwargs):
        self.ks = tuple(ks)
        if not self.ks:
            raise ValueError("ks must name at least one K.")
        default = "ndcg" if "ndcg" in metrics else metrics[0]
        super().__init__(data, gallery=gallery, every=every, prefix=prefix,
                         batch_size=batch_size, verbose=verbose,
                         monitor=monitor or f"{default}@{self.ks[0]}")
        self.label_distance = label_distance
        self.metric = metric
        self.metrics = metrics
        self.metric_kwargs = metric_kwargs

    def _compute(self, q, ql, g, gl):
        return continuous_metrics(
            q, ql, g, gl, ks=self.ks, label_distance=self.label_distance,
            metric=self.metric, metrics=self.metrics,
            **self.metric_kwargs)
