"""kd.retrieval.calibrate: the curve against a brute force, the chosen
thresholds, and the target precision reached on held-out data."""

import numpy as np
import pytest

import keras_dml as kd
from keras_dml.retrieval import Calibration, Index

# Backend-neutral: CI runs this module under tensorflow, jax and torch.
pytestmark = pytest.mark.backends

# Held-out precision may fall short of the target by binomial noise: with
# ~1000 accepted queries its standard deviation at p = 0.9 is ~0.01; the
# tolerance is 3 of them.
TOLERANCE = 0.03


def clusters(rng, n_classes, per_class, dim=16, spread=0.55, offset=0):
    centres = np.random.default_rng(100 + offset).normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    x = centres[labels] / np.sqrt(dim) * 3 + spread * rng.normal(
        size=(len(labels), dim)) / np.sqrt(dim) * 3
    return x.astype(np.float32), labels + offset


def setup(rng):
    gallery, g_labels = clusters(rng, 30, 5)
    index = Index(16)
    index.add(gallery, labels=g_labels)
    known, k_labels = clusters(rng, 30, 80)
    unknown, u_labels = clusters(rng, 10, 60, offset=1000)   # open set
    queries = np.concatenate([known, unknown])
    labels = np.concatenate([k_labels, u_labels])
    order = rng.permutation(len(queries))
    return index, queries[order], labels[order]


def brute_curve(scores, correct, known):
    out = []
    for t in sorted(set(scores.tolist()), reverse=True):
        acc = scores >= t
        tp = np.sum(acc & correct)
        out.append((t, tp / acc.sum(), tp / known))
    return np.array(out)


def test_curve_matches_brute_force(rng):
    index, q, y = setup(rng)
    q, y = q[:300], y[:300]
    cal = kd.retrieval.calibrate(index, q, y, target_precision=0.8)
    nn = index.search(q, 1)
    expected = brute_curve(nn.scores[:, 0].astype(np.float64),
                           nn.labels[:, 0] == y, np.sum(y < 1000))
    np.testing.assert_allclose(cal.thresholds, expected[:, 0])
    np.testing.assert_allclose(cal.precision, expected[:, 1])
    np.testing.assert_allclose(cal.recall, expected[:, 2])
    ok = expected[:, 1] >= 0.8
    assert float(cal) == pytest.approx(expected[ok, 0].min())
    assert cal.threshold_precision >= 0.8
    best = kd.retrieval.calibrate(index, q, y, target_precision=None)
    f1 = 2 * expected[:, 1] * expected[:, 2] / (expected[:, 1] + expected[:, 2])
    assert best.threshold_f1 == pytest.approx(f1.max())
    assert float(best) == pytest.approx(expected[np.argmax(f1), 0])
    assert isinstance(cal, Calibration) and isinstance(cal, float)


def test_tied_scores_are_decided_together(rng):
    index = Index(2)
    index.add(np.array([[1, 0], [0, 1]], np.float32), labels=[0, 1])
    q = np.array([[1, 0], [1, 0], [0, 1], [1, 1e-3]], np.float32)
    cal = kd.retrieval.calibrate(index, q, [0, 1, 1, 0], target_precision=0.6)
    # the three queries at score 1 are accepted or rejected together
    np.testing.assert_allclose(cal.thresholds[0], 1.0)
    np.testing.assert_allclose(cal.precision, [2 / 3, 3 / 4])
    assert float(cal) < 1.0


def test_target_precision_holds_on_held_out_data(rng):
    index, q, y = setup(rng)
    half = len(q) // 2
    for target in (0.9, 0.95):
        cal = kd.retrieval.calibrate(index, q[:half], y[:half],
                                     target_precision=target)
        m = index.match(q[half:], cal)
        accepted = m.labels >= 0
        precision = np.mean(m.labels[accepted] == y[half:][accepted])
        assert accepted.sum() > 500
        assert precision >= target - TOLERANCE, (target, precision)
        # not trivially strict: a good share of the known queries is matched
        assert np.mean(accepted[y[half:] < 1000]) > 0.5


def test_calibrate_bad_input(rng):
    index, q, y = setup(rng)
    tiny = Index(2)
    tiny.add(np.array([[1, 0]], np.float32), labels=[0])
    with pytest.raises(ValueError, match="no threshold reaches precision 0.9: "
                                         "the best is 0.5"):
        kd.retrieval.calibrate(tiny, np.array([[1, 0], [1, 0.2]], np.float32),
                               [1, 0], target_precision=0.9)
    with pytest.raises(ValueError, match="target_precision must be in"):
        kd.retrieval.calibrate(index, q, y, target_precision=1.5)
    with pytest.raises(ValueError, match="labels must have shape"):
        kd.retrieval.calibrate(index, q, y[:-1])
    unlabelled = Index(16)
    unlabelled.add(q[:10])
    with pytest.raises(ValueError, match="no labels"):
        kd.retrieval.calibrate(unlabelled, q, y)
    with pytest.raises(ValueError, match="no calibration query has a class"):
        kd.retrieval.calibrate(index, q[:5], np.full(5, 5000))
    with pytest.raises(ValueError, match="threshold must be finite"):
        index.match(q[:2], float("nan"))
