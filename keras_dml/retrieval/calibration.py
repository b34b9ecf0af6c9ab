"""Calibrating the match threshold of an index on labelled held-out data.

For every calibration query q (label y_q, not in the index) the index's
nearest item n(q) gives a score s_q and a predicted label l_q. A threshold t
accepts q when s_q >= t (``Index.match``). Over the queries:

    accepted(t)  = #{q : s_q >= t}
    correct(t)   = #{q : s_q >= t and l_q == y_q}
    known        = #{q : y_q is a label present in the index}
    precision(t) = correct(t) / accepted(t)        (1 where nothing is accepted)
    recall(t)    = correct(t) / known

Queries of classes absent from the index (open set) can only be wrong when
accepted, so they lower precision and are not in recall's denominator.
The curve is evaluated at every distinct s_q (descending). With
``target_precision=p`` the chosen threshold is the lowest one with
precision(t) >= p (the most recall at that precision); with
``target_precision=None``, the one with the best F1 = 2PR / (P + R) (ties:
the higher threshold). Thresholds are scores (higher = closer): cosine
similarity, or ``-|q - g|^2`` for a euclidean index.

On held-out data from the same distribution the precision reached is close
to the target, within binomial noise: about sqrt(p (1 - p) / accepted)
(0.01 for p = 0.9 and 1000 accepted queries).
"""

import numpy as np

from keras_dml.retrieval.index import _as_int64


class Calibration(float):
    """The chosen threshold (a float: pass it to ``Index.match``) with its
    curve: ``thresholds`` [T] descending, ``precision``, ``recall``, ``f1``
    [T], and at the chosen threshold ``threshold_precision``,
    ``threshold_recall``, ``threshold_f1``; ``target_precision`` (None for
    best F1), ``num_queries``, ``num_known``."""

    def __new__(cls, threshold, **attrs):
        self = super().__new__(cls, threshold)
        self.__dict__.update(attrs)
        return self

    @property
    def threshold(self):
        return float(self)

    def __repr__(self):
        goal = ("best F1" if self.target_precision is None
                else f"precision >= {self.target_precision}")
        return (f"Calibration(threshold={float(self):.6g}, {goal}: precision="
                f"{self.threshold_precision:.4f}, recall={self.threshold_recall:.4f})")

    def as_dict(self):
        return {"threshold": float(self), "precision": self.threshold_precision,
                "recall": self.threshold_recall, "f1": self.threshold_f1,
                "target_precision": self.target_precision}


def curve(scores, correct, num_known):
    """(thresholds desc, precision, recall, accepted counts) of decisions
    ``score >= t`` at every distinct score, vectorised (one sort)."""
    scores = np.asarray(scores, np.float64)
    correct = np.asarray(correct, bool)
    order = np.argsort(-scores, kind="stable")
    s, c = scores[order], correct[order]
    tp = np.cumsum(c)
    # The last position of every run of equal scores: accepting t = s
    # accepts the whole run.
    last = np.r_[np.nonzero(s[1:] != s[:-1])[0], len(s) - 1]
    accepted = last + 1
    precision = tp[last] / accepted
    recall = tp[last] / max(num_known, 1)
    return s[last], precision, recall, accepted


def calibrate(index, embeddings, labels, target_precision=0.9):
    """The match threshold of ``index`` for held-out labelled ``embeddings``.

    Args:
        index: a ``kd.retrieval.Index`` with labels.
        embeddings: [N, D] calibration queries (not items of the index).
        labels: [N] their class ids.
        target_precision: in (0, 1]: the lowest threshold whose precision is
            at least this; None: the threshold of best F1.

    Returns:
        a ``Calibration`` (a float, the threshold, with the curve attached).
        Raises ValueError if no threshold reaches ``target_precision``.
    """
    result = index.search(embeddings, 1)
    n = result.ids.shape[0]
    if n == 0:
        raise ValueError("calibrate needs at least one labelled query.")
    labels = _as_int64(labels, "labels", n)
    if not index._store.any_label():
        raise ValueError("the index has no labels to calibrate against.")
    known = int(np.sum(index.has_labels(labels) & (labels >= 0)))
    if known == 0:
        raise ValueError("no calibration query has a class present in the index.")
    correct = (result.labels[:, 0] == labels) & (labels >= 0)
    scores = result.scores[:, 0]
    valid = np.isfinite(scores)          # an ANN index may find nothing
    thresholds, precision, recall, accepted = curve(scores[valid], correct[valid], known)
    f1 = np.where(precision + recall > 0,
                  2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    if target_precision is None:
        at = int(np.argmax(f1))        # first maximum = the higher threshold
    else:
        p = float(target_precision)
        if not 0 < p <= 1:
            raise ValueError(f"target_precision must be in (0, 1] or None; got {p}.")
        ok = np.nonzero(precision >= p)[0]
        if ok.size == 0:
            raise ValueError(
                f"no threshold reaches precision {p}: the best is "
                f"{precision.max():.4f} (at threshold {thresholds[np.argmax(precision)]:.6g}).")
        at = int(ok[-1])
    return Calibration(
        float(thresholds[at]), thresholds=thresholds, precision=precision,
        recall=recall, f1=f1, accepted=accepted,
        threshold_precision=float(precision[at]),
        threshold_recall=float(recall[at]), threshold_f1=float(f1[at]),
        target_precision=None if target_precision is None else float(target_precision),
        num_queries=int(n), num_known=known)
