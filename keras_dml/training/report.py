"""The evaluation and report of a run: test metrics, ``metrics.json``, the
recall curve, the retrieval grid and the test gallery (``index/`` and the
Projector run).

    test = report.evaluate(model, recipe, task, sets, pipes.eval, verbose)
    metrics, written = report.write_report(paths, recipe, data, task, sets, test, ...)
"""

import dataclasses
import json
from typing import Dict, Optional, Tuple

import numpy as np
from absl import logging

from keras_dml.training.rundir import RunPaths, write_json

# Retrieval-grid neighbours per query.
GRID_K = 5


@dataclasses.dataclass
class Evaluation:
    """The test queries' (and gallery's) embeddings and the metrics on them."""

    q_emb: np.ndarray
    q_labels: np.ndarray
    g_emb: Optional[np.ndarray]
    g_labels: Optional[np.ndarray]
    metrics: Dict[str, float]
    # kd.retrieval.model_fingerprint of the model that made the embeddings.
    model_fingerprint: Optional[str] = None


def evaluate(model, recipe, task, sets, eval_ds, verbose=1) -> Evaluation:
    """Embed the test split (or query/gallery) once and compute its metrics."""
    from keras_dml import evaluation
    q_emb, q_lab = evaluation.embed(model, eval_ds(sets.query), verbose=verbose)
    g_emb, g_lab = (None, None) if sets.gallery is None else \
        evaluation.embed(model, eval_ds(sets.gallery), verbose=verbose)
    if task.continuous:
        args = task.label_distance_args()
        if sets.test_distances is not None:
            args = {"label_distance": sets.test_distances, "label_distance_kwargs": None}
        metrics = evaluation.continuous_metrics(
            q_emb, sets.query.labels, ks=recipe.ks,
            metric=task.metric, **args)
    else:
        metrics = evaluation.retrieval_metrics(q_emb, q_lab, g_emb, g_lab, ks=recipe.ks)
    metrics = {k: float(v) for k, v in metrics.items()}
    from keras_dml.retrieval import model_fingerprint
    return Evaluation(q_emb, q_lab, g_emb, g_lab, metrics, model_fingerprint(model))


def _images(split, indices):
    """The uint8 images ``indices`` of ``split``, as a list (sizes may vary)."""
    sub = split.subset(np.asarray(indices), "plot")
    return [x.numpy() for x, _ in sub.dataset()]


def retrieval_grid(path, query, gallery, q_emb, g_emb, num_queries, metric="cosine",
                   q_labels=None, g_labels=None, truth=None, title=None):
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
        q_emb[pick], q_emb if same_set else g_emb, k=GRID_K, metric=metric,
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
        None if correct is not None else g_labels[uniq], local, path, correct=correct,
        title=title or (f"{n} test queries (left) and their {GRID_K} nearest "
                        f"{'in the test set' if same_set else 'gallery items'}"
                        + (" (relevant: among the query's label-space nearest)"
                           if truth is not None else "")))


def label_space_truth(labels, task, dist=None):
    """[N, GRID_K] nearest in label space of every item (itself excluded)."""
    if dist is None:
        return task.label_neighbours(labels, GRID_K)
    masked = np.array(dist, dtype=np.float64, copy=True)
    np.fill_diagonal(masked, np.inf)
    return np.argsort(masked, axis=1, kind="stable")[:, :GRID_K]


def write_report(paths: RunPaths, recipe, data, task, sets, test: Evaluation, val_cb,
                 seconds: float, index: bool = True) -> Tuple[dict, Dict[str, str]]:
    """Write ``metrics.json``, the recall curve, the retrieval grid and,
    for class labels, the test gallery as ``index/`` (unless not ``index``)
    and as the Projector run. Returns (the report, ``{name: path}`` of the
    plots and gallery written)."""
    from keras_dml import plots
    from keras_dml.training import gallery as kgallery
    report = {
        "data": data.name, "split": "test" if sets.gallery is None else "query/gallery",
        "num_queries": int(len(test.q_emb)), "loss": recipe.loss,
        "backbone": recipe.backbone, "embedding_dim": recipe.embedding_dim,
        "epochs": recipe.epochs,
        "selected_by": val_cb.monitor if val_cb else "last epoch",
        "train_seconds_total": round(seconds, 1), **test.metrics,
    }
    write_json(paths.metrics, report)
    logging.info("test metrics: %s", json.dumps(test.metrics))
    written: Dict[str, str] = {}

    history = paths.read_history()
    if val_cb is not None:
        # One axis of fractions: nDCG for continuous labels (label
        # distances are not percentages), all metrics for classes.
        keys = [k for k in history if k.startswith(val_cb.prefix)
                and not (task.continuous and "label_distance" in k)]
        if keys:
            written["recall_curve"] = plots.recall_curve(
                history, paths.recall_curve, keys=keys,
                title="validation " + ("nDCG@K" if task.continuous else "retrieval"))
    truth = label_space_truth(sets.query.labels, task, sets.test_distances) \
        if task.continuous else None
    metric = "euclidean" if task.continuous and task.metric != "cosine" else "cosine"
    grid = retrieval_grid(paths.retrievals, sets.query, sets.gallery, test.q_emb, test.g_emb,
                          recipe.num_plot_queries, metric=metric, q_labels=test.q_labels,
                          g_labels=test.g_labels, truth=truth)
    if grid is not None:
        written["retrievals"] = grid
    if not task.continuous:
        # The gallery the test queries searched, with the embeddings
        # already computed for the metrics.
        g_split, g_e, g_l = (sets.query, test.q_emb, test.q_labels) if sets.gallery is None \
            else (sets.gallery, test.g_emb, test.g_labels)
        thumbs = None
        if index:
            thumbs = kgallery.gallery_thumbnails(g_split)
            # Items are tagged with the split's role in the run ("test" or
            # "gallery"), whatever the loader or a split helper named it.
            written["index"] = kgallery.write_index(
                paths.root, g_split, g_e, g_l, thumbs,
                split_name="test" if sets.gallery is None else "gallery",
                model_fingerprint=test.model_fingerprint)
            logging.info("wrote the test gallery index %s (%d items)", written["index"],
                         len(g_e))
        written["projector"] = kgallery.write_projector(
            paths.logs, g_split, g_e, g_l, thumbs, seed=recipe.seed)["config"]
    return report, written
