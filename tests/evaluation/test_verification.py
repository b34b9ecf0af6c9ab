"""kd.evaluation.verification_metrics against scikit-learn and brute force."""

import numpy as np
import pytest

import keras_dml as kd
from keras_dml.evaluation import verification
from references import reference

# Backend-neutral: CI runs this module under tensorflow, jax and torch.
pytestmark = pytest.mark.backends

KEYS = {"roc_auc", "eer", "tar@far=1e-2", "tar@far=1e-3", "tar@far=1e-4",
        "best_accuracy", "best_threshold"}


def pairs(rng, n=6000, dim=8, noise=1.0, quantise=None):
    a = rng.normal(size=(n, dim)).astype(np.float32)
    same = rng.random(n) < 0.3
    b = np.where(same[:, None], a + noise * rng.normal(size=a.shape),
                 rng.normal(size=a.shape)).astype(np.float32)
    if quantise:           # coarse values: many tied scores
        a, b = np.round(a * quantise) / quantise, np.round(b * quantise) / quantise
    return a, b, same


def sklearn_reference(scores, same):
    metrics = reference("sklearn.metrics", "verification metrics parity")
    fpr, tpr, thr = metrics.roc_curve(same, scores, drop_intermediate=False)
    out = {"roc_auc": metrics.roc_auc_score(same, scores)}
    for f, key in ((1e-2, "tar@far=1e-2"), (1e-3, "tar@far=1e-3"),
                   (1e-4, "tar@far=1e-4")):
        out[key] = tpr[fpr <= f].max()
    fnr = 1 - tpr
    i = np.nonzero(fpr >= fnr)[0][0]          # the crossing, interpolated
    d0, d1 = fpr[i - 1] - fnr[i - 1], fpr[i] - fnr[i]
    out["eer"] = fpr[i - 1] + d0 / (d0 - d1) * (fpr[i] - fpr[i - 1])
    return out, (fpr, tpr, thr)


@pytest.mark.parametrize("quantise", [None, 1])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_agrees_with_sklearn(rng, quantise, metric):
    a, b, same = pairs(rng, dim=2 if quantise else 8, quantise=quantise)
    got = kd.evaluation.verification_metrics(a, b, same, metric=metric)
    assert set(got) == KEYS
    scores = verification.pair_scores(a, b, metric)
    expected, (fpr, tpr, thr) = sklearn_reference(scores, same)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    far, tar, thresholds = verification.roc(scores, same)
    np.testing.assert_allclose(far, fpr)
    np.testing.assert_allclose(tar, tpr)
    np.testing.assert_allclose(thresholds[1:], thr[1:])
    if quantise:
        assert len(far) < len(same) / 10       # ties were collapsed


def test_best_accuracy_is_the_brute_force_maximum(rng):
    a, b, same = pairs(rng, n=400, quantise=4)
    got = kd.evaluation.verification_metrics(a, b, same)
    s = verification.pair_scores(a, b)
    candidates = np.r_[np.unique(s), np.inf]
    acc = np.array([np.mean((s >= t) == same) for t in candidates])
    assert got["best_accuracy"] == pytest.approx(acc.max())
    assert np.mean((s >= got["best_threshold"]) == same) == pytest.approx(acc.max())
    assert got["best_threshold"] == pytest.approx(candidates[np.argmax(acc)])


def test_cosine_scores_and_perfect_separation(rng):
    a = rng.normal(size=(50, 4)).astype(np.float32)
    got = kd.evaluation.verification_metrics(
        np.concatenate([a, a]), np.concatenate([2 * a, -a]),
        np.r_[np.ones(50, bool), np.zeros(50, bool)])
    assert got["roc_auc"] == 1.0 and got["eer"] == 0.0
    assert got["tar@far=1e-4"] == 1.0 and got["best_accuracy"] == 1.0
    np.testing.assert_allclose(verification.pair_scores(a, 2 * a), 1.0, atol=1e-6)


def test_bad_input(rng):
    a = rng.normal(size=(10, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="same shape"):
        kd.evaluation.verification_metrics(a, a[:9], np.ones(10, bool))
    with pytest.raises(ValueError, match="positive and negative"):
        kd.evaluation.verification_metrics(a, a, np.ones(10, bool))
    with pytest.raises(ValueError, match=r"same must have shape \[10\]"):
        kd.evaluation.verification_metrics(a, a, np.ones(9, bool))
    with pytest.raises(ValueError, match="booleans or 0/1"):
        kd.evaluation.verification_metrics(a, a, np.full(10, 2))
    bad = a.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        kd.evaluation.verification_metrics(a, bad, np.arange(10) % 2)


def test_plot_writes_a_png(rng, tmp_path):
    import matplotlib.image
    a, b, same = pairs(rng, n=500)
    s = verification.pair_scores(a, b)
    path = kd.plots.verification_curves(s, same, str(tmp_path / "roc.png"),
                                        operating_threshold=0.5, dpi=50)
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (200, 500)
    assert image[..., :3].std() > 0.05       # something was drawn
