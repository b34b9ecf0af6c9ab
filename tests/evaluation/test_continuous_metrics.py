"""Continuous-label retrieval metrics against loop references and the authors' formula."""

import numpy as np
import pytest

import keras_dml as kd

continuous_metrics = kd.evaluation.continuous_metrics

# Backend-neutral: CI runs this module under tensorflow, jax and torch.
pytestmark = pytest.mark.backends


def reference(q, yq, g=None, yg=None, ks=(1, 5), label_fn=None,
              metric="euclidean"):
    """Loops from the definitions, float64, ties by lower index."""
    self_mode = g is None
    if self_mode:
        g, yg = q, yq
    q = q.astype(np.float64)
    g = g.astype(np.float64)
    if label_fn is None:
        def label_fn(a, b):
            return float(np.sum((np.asarray(a, np.float64) - b) ** 2))
    out = {f"mean_label_distance@{k}": [] for k in ks}
    out.update({f"ndcg@{k}": [] for k in ks})
    for i in range(len(q)):
        cand = [j for j in range(len(g)) if not (self_mode and j == i)]
        if metric == "cosine":
            qn = q[i] / np.linalg.norm(q[i])
            dist = {j: -float(qn @ (g[j] / np.linalg.norm(g[j]))) for j in cand}
        else:
            dist = {j: float(np.sum((q[i] - g[j]) ** 2)) for j in cand}
        ranking = sorted(cand, key=lambda j: (dist[j], j))
        d = [label_fn(yq[i], yg[j]) for j in ranking]
        d_ideal = sorted(d)
        for k in ks:
            out[f"mean_label_distance@{k}"].append(sum(d[:k]) / k)
            dcg = sum(1.0 / (1.0 + d[r]) / np.log2(r + 2) for r in range(k))
            idcg = sum(1.0 / (1.0 + d_ideal[r]) / np.log2(r + 2) for r in range(k))
            out[f"ndcg@{k}"].append(dcg / idcg)
    return {key: float(np.mean(v)) for key, v in out.items()}


def authors_eval(q, g, label_dist, ks):
    """The structure of the authors' ``eval_retrieval`` (query vs database,
    squared Euclidean embedding distance, argsort), vectorised."""
    emb_dist = (np.sum(q ** 2, 1)[:, None] - 2 * q @ g.T + np.sum(g ** 2, 1)[None, :])
    nn_emb = np.argsort(emb_dist, axis=1, kind="stable")
    nn_label = np.argsort(label_dist, axis=1, kind="stable")
    out = {}
    for k in ks:
        top = np.take_along_axis(label_dist, nn_emb[:, :k], axis=1)
        out[f"mean_label_distance@{k}"] = float(np.mean(np.cumsum(top, 1)[:, -1] / k))
        discounts = 1 / np.log2(np.arange(1, k + 1) + 1)
        relevance = 2 ** (-np.log2(label_dist + 1))
        dcg = np.sum(np.take_along_axis(relevance, nn_emb[:, :k], 1) * discounts, 1)
        idcg = np.sum(np.take_along_axis(relevance, nn_label[:, :k], 1) * discounts, 1)
        out[f"ndcg@{k}"] = float(np.mean(dcg / idcg))
    return out


def assert_close(ours, ref, rel=1e-6):
    assert set(ours) == set(ref)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], rel=rel, abs=1e-9), key


def data(rng, n, dim=4, label_dim=3):
    y = rng.standard_normal((n, label_dim))
    x = y @ rng.standard_normal((label_dim, dim)) + 0.7 * rng.standard_normal((n, dim))
    return x.astype(np.float32), y


@pytest.mark.parametrize("chunk_size", [1, 7, None])
def test_self_retrieval_matches_reference(rng, chunk_size):
    x, y = data(rng, 45)
    ks = (1, 2, 5, 10)
    ours = continuous_metrics(x, y, ks=ks, chunk_size=chunk_size)
    assert_close(ours, reference(x, y, ks=ks))
    assert 0.0 < ours["ndcg@5"] < 1.0


def test_cosine_metric(rng):
    x, y = data(rng, 40)
    ours = continuous_metrics(x, y, ks=(1, 3), metric="cosine")
    assert_close(ours, reference(x, y, ks=(1, 3), metric="cosine"))
    squared = continuous_metrics(x, y, ks=(1, 3), metric="squared_euclidean")
    assert_close(squared, continuous_metrics(x, y, ks=(1, 3)))


def test_query_gallery_matches_authors_formula(rng):
    x, y = data(rng, 70)
    q, yq, g, yg = x[:20], y[:20], x[20:], y[20:]
    ks = (1, 5, 10, 20)
    label_dist = np.sum((yq[:, None, :] - yg[None, :, :]) ** 2, axis=-1)
    ours = continuous_metrics(q, yq, g, yg, ks=ks, chunk_size=6)
    assert_close(ours, authors_eval(q.astype(np.float64), g.astype(np.float64),
                                    label_dist, ks))
    assert_close(ours, reference(q, yq, g, yg, ks=ks))


def test_callable_and_precomputed_label_distances(rng):
    x, y = data(rng, 30)

    def l1(a, b):
        return np.abs(np.asarray(a)[:, None, :] - np.asarray(b)[None, :, :]).sum(-1)

    ours = continuous_metrics(x, y, ks=(1, 4), label_distance=l1, chunk_size=4)
    ref = reference(x, y, ks=(1, 4),
                    label_fn=lambda a, b: float(np.abs(a - b).sum()))
    assert_close(ours, ref)
    pre = continuous_metrics(x, None, ks=(1, 4), label_distance=l1(y, y))
    assert_close(pre, ref)


def test_duplicate_of_the_query_is_retrieved(rng):
    # Items 0 and 1 share an embedding; 1 is query 0's nearest neighbour.
    x = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [3.0, 0.0]], np.float32)
    y = np.array([[0.0], [0.5], [1.0], [2.0]])
    ours = continuous_metrics(x, y, ks=(1,))
    # Query 0 -> item 1 (d=0.25); 1 -> 0 (0.25); 2 -> 0 (1.0); 3 -> 2 (1.0).
    assert ours["mean_label_distance@1"] == pytest.approx((0.25 + 0.25 + 1 + 1) / 4)
    assert_close(ours, reference(x, y, ks=(1,)))


def test_hand_computed_case():
    q = np.array([[0.0]], np.float32)
    g = np.array([[1.0], [2.0], [3.0]], np.float32)       # ranked 0, 1, 2
    yg = np.array([[2.0], [1.0], [3.0]])                  # label distances 4, 1, 9
    ours = continuous_metrics(q, np.array([[0.0]]), g, yg, ks=(1, 2))
    assert ours["mean_label_distance@1"] == pytest.approx(4.0)
    assert ours["mean_label_distance@2"] == pytest.approx(2.5)
    with pytest.raises(ValueError, match="K=3 is not below the 3"):
        continuous_metrics(q, np.array([[0.0]]), g, yg, ks=(1, 3))
    dcg2 = 1 / 5 + (1 / 2) / np.log2(3)
    idcg2 = 1 / 2 + (1 / 5) / np.log2(3)
    assert ours["ndcg@1"] == pytest.approx((1 / 5) / (1 / 2))
    assert ours["ndcg@2"] == pytest.approx(dcg2 / idcg2)


def test_perfect_embedding_gives_ndcg_one(rng):
    y = rng.standard_normal((25, 2))
    ours = continuous_metrics(y.astype(np.float32), y, ks=(1, 3, 8))
    for k in (1, 3, 8):
        assert ours[f"ndcg@{k}"] == pytest.approx(1.0, abs=1e-6)


def test_named_label_distance_from_label_distances(rng):
    ld = kd.label_distances
    maps = rng.integers(0, 3, size=(12, 4, 4))
    x = rng.standard_normal((12, 3)).astype(np.float32)
    ours = continuous_metrics(x, maps, ks=(1, 3), label_distance="one_minus_miou",
                              label_distance_kwargs={"num_classes": 3})
    matrix = np.asarray(ld.one_minus_miou(maps, maps, num_classes=3))
    pre = continuous_metrics(x, None, ks=(1, 3), label_distance=matrix)
    assert_close(ours, pre)
    ref = reference(x, maps, ks=(1, 3),
                    label_fn=lambda a, b: float(np.asarray(
                        ld.one_minus_miou(a[None], b[None], num_classes=3))[0, 0]))
    assert_close(ours, ref, rel=1e-5)


def test_pose_labels_with_visibility(rng):
    ld = kd.label_distances
    poses = rng.standard_normal((15, 6))
    visible = rng.integers(0, 2, size=(15, 3))
    visible[:, 0] = 1                                 # at least one shared joint
    x = rng.standard_normal((15, 3)).astype(np.float32)
    ours = continuous_metrics(x, (poses, visible), ks=(1, 4))
    matrix = np.asarray(ld.squared_l2(poses, poses, visible, visible))
    assert_close(ours, continuous_metrics(x, None, ks=(1, 4),
                                          label_distance=matrix), rel=1e-5)
    # Visibility changes the distances, so the metrics differ from plain L2.
    assert ours != continuous_metrics(x, poses, ks=(1, 4))


def test_bad_input(rng):
    x, y = data(rng, 6)
    with pytest.raises(ValueError, match="K=5 is not below the 5"):
        continuous_metrics(x, y, ks=(5,))
    with pytest.raises(ValueError, match=">= 0"):
        continuous_metrics(x, None, ks=(1,), label_distance=-np.ones((6, 6)))
    with pytest.raises(ValueError, match="NaN"):
        continuous_metrics(x, None, ks=(1,), label_distance=np.full((6, 6), np.nan))
    with pytest.raises(ValueError, match="shape"):
        continuous_metrics(x, None, ks=(1,), label_distance=np.ones((6, 5)))
    with pytest.raises(ValueError, match="needed"):
        continuous_metrics(x, None, ks=(1,))
    with pytest.raises(ValueError, match="metric must be one of"):
        continuous_metrics(x, y, metric="manhattan")
    with pytest.raises(ValueError, match="metrics"):
        continuous_metrics(x, y, ks=(1,), metrics=("recall",))
