"""Pair verification metrics: ROC AUC, EER, TAR@FAR, best accuracy.

A verification pair (a_i, b_i) with ground truth same_i (same identity or
not) gets a score s_i (higher = more alike): cosine similarity of the two
embeddings, or ``-|a_i - b_i|^2`` with ``metric="euclidean"``. A threshold t
accepts the pair ("same") when s_i >= t. With P positive and N negative
pairs:

    TAR(t) = TPR(t) = #{same, s >= t} / P        (true accept rate)
    FAR(t) = FPR(t) = #{not same, s >= t} / N    (false accept rate)

The ROC is evaluated at every distinct score (plus t = +inf, the point
(0, 0)), exactly as ``sklearn.metrics.roc_curve(same, s,
drop_intermediate=False)``:

    roc_auc        = trapezoidal area under (FAR, TAR) (= the probability that
                     a random positive scores above a random negative, ties
                     counting one half; sklearn's ``roc_auc_score``)
    tar@far=f      = max TAR(t) over thresholds with FAR(t) <= f
    eer            = the equal error rate: the FAR where FAR = 1 - TAR, linearly
                     interpolated on the ROC segment where FAR - (1 - TAR)
                     changes sign
    best_accuracy  = max_t (TP(t) + TN(t)) / (P + N), over the ROC thresholds
    best_threshold = the t of best_accuracy (the lowest such t; accept s >= t)

TAR@FAR=1e-4 needs well over 10^4 negative pairs to mean anything; with
fewer it is the TAR at FAR = 0.
"""

import numpy as np

from keras_dml.search import as_embeddings

FARS = (1e-2, 1e-3, 1e-4)


def pair_scores(emb_a, emb_b, metric="cosine", chunk=65536):
    """Scores [N] of the pairs (emb_a[i], emb_b[i]), in chunks of rows."""
    a = as_embeddings(emb_a, "emb_a")
    b = as_embeddings(emb_b, "emb_b")
    if a.shape != b.shape:
        raise ValueError(f"emb_a and emb_b must have the same shape; got "
                         f"{a.shape} and {b.shape}.")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean'; got {metric!r}.")
    out = np.empty(a.shape[0], np.float64)
    for i in range(0, a.shape[0], chunk):
        x = a[i:i + chunk].astype(np.float64)
        y = b[i:i + chunk].astype(np.float64)
        if metric == "cosine":
            nx = np.sqrt(np.maximum(np.einsum("ij,ij->i", x, x), 1e-12))
            ny = np.sqrt(np.maximum(np.einsum("ij,ij->i", y, y), 1e-12))
            out[i:i + chunk] = np.einsum("ij,ij->i", x, y) / (nx * ny)
        else:
            d = x - y
            out[i:i + chunk] = -np.einsum("ij,ij->i", d, d)
    return out


def _as_same(same, n):
    same = np.asarray(same)
    if same.ndim == 2 and same.shape[1] == 1:
        same = same[:, 0]
    if same.shape != (n,):
        raise ValueError(f"same must have shape [{n}] (one per pair); got {same.shape}.")
    if same.dtype != bool:
        if not np.all(np.isin(same, (0, 1))):
            raise ValueError("same must be booleans or 0/1.")
        same = same.astype(bool)
    return same


def roc(scores, same):
    """(far, tar, thresholds) at t = +inf and every distinct score, with
    thresholds decreasing: sklearn's ``roc_curve(..., drop_intermediate=False)``."""
    scores = np.asarray(scores, np.float64)
    same = _as_same(same, scores.shape[0])
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values.")
    positives = int(same.sum())
    negatives = int(same.size - positives)
    if positives == 0 or negatives == 0:
        raise ValueError(f"verification needs positive and negative pairs; got "
                         f"{positives} positive and {negatives} negative.")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order]
    last = np.r_[np.nonzero(s[1:] != s[:-1])[0], len(s) - 1]
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    far = np.r_[0.0, fp / negatives]
    tar = np.r_[0.0, tp / positives]
    thresholds = np.r_[np.inf, s[last]]
    return far, tar, thresholds


def verification_metrics(emb_a, emb_b, same, metric="cosine"):
    """ROC AUC, EER, TAR at FAR 1e-2/1e-3/1e-4 and the best-accuracy
    threshold of pairs (emb_a[i], emb_b[i]) labelled ``same`` [N] (bool).

    Returns ``{"roc_auc", "eer", "tar@far=1e-2", "tar@far=1e-3",
    "tar@far=1e-4", "best_accuracy", "best_threshold"}`` (floats; see the
    module docstring for the definitions).
    """
    scores = pair_scores(emb_a, emb_b, metric)
    return metrics_from_scores(scores, same)


def metrics_from_scores(scores, same):
    """``verification_metrics`` from precomputed pair scores [N]."""
    far, tar, thresholds = roc(scores, same)
    same = _as_same(same, len(scores))
    positives = int(same.sum())
    negatives = len(same) - positives
    out = {"roc_auc": float(np.trapezoid(tar, far))}
    # EER: d = FAR - FNR rises from -1 (t = inf) to 1 (accept all).
    d = far - (1.0 - tar)
    i = int(np.argmax(d >= 0))
    if d[i] == 0 or i == 0:
        eer = far[i]
    else:
        w = d[i - 1] / (d[i - 1] - d[i])
        eer = far[i - 1] + w * (far[i] - far[i - 1])
    out["eer"] = float(eer)
    for f in FARS:
        out[f"tar@far={f:.0e}".replace("e-0", "e-")] = float(tar[far <= f].max())
    correct = tar * positives + (1.0 - far) * negatives
    best = int(np.argmax(correct[::-1]))       # the lowest threshold of the best
    best = len(correct) - 1 - best
    out["best_accuracy"] = float(correct[best] / (positives + negatives))
    t = thresholds[best]
    out["best_threshold"] = float(np.nextafter(thresholds[1], np.inf)
                                  if np.isinf(t) else t)
    return out
