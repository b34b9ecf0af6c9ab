"""Retrieval metrics against brute-force loop references, hand cases and PML."""

import numpy as np
import pytest

import keras_dml as kd
import keras_dml.evaluation.retrieval as retrieval_module
from references import reference

retrieval_metrics = kd.evaluation.retrieval_metrics

# Backend-neutral: CI runs this module under tensorflow, jax and torch.
pytestmark = pytest.mark.backends


@pytest.fixture(params=[1, 3, None], ids=["cap1", "cap3", "default_cap"])
def topk_cap(request, monkeypatch):
    """Recall@K comes from top_k up to a cap and from counting beyond it: a
    small cap sends most queries through the counting path."""
    if request.param is not None:
        monkeypatch.setattr(retrieval_module, "_TOPK_CAP", request.param)
    return request.param


# ---------------------------------------------------------------- reference
def reference_metrics(q, ql, g=None, gl=None, ks=(1, 2, 4, 8),
                      lone_queries="exclude"):
    """Loops straight from the definitions (float64 cosine, ties by index)."""
    self_mode = g is None
    if self_mode:
        g, gl = q, ql
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-6)
    gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-6)
    sims = qn.astype(np.float64) @ gn.astype(np.float64).T
    recalls = {k: [] for k in ks}
    aps, rps = [], []
    for i in range(len(q)):
        candidates = [j for j in range(len(g)) if not (self_mode and j == i)]
        ranking = sorted(candidates, key=lambda j: (-sims[i, j], j))
        rel = [1 if gl[j] == ql[i] else 0 for j in ranking]
        r = sum(rel)
        if r == 0:
            if lone_queries == "exclude":
                continue
            for k in ks:
                recalls[k].append(0.0)
            aps.append(0.0)
            rps.append(0.0)
            continue
        for k in ks:
            recalls[k].append(1.0 if sum(rel[:k]) > 0 else 0.0)
        ap = 0.0
        hits = 0
        for pos in range(r):
            if rel[pos]:
                hits += 1
                ap += hits / (pos + 1)
        aps.append(ap / r)
        rps.append(sum(rel[:r]) / r)
    out = {f"recall@{k}": np.mean(recalls[k]) for k in ks}
    out["map@r"] = np.mean(aps)
    out["r_precision"] = np.mean(rps)
    return out


def assert_close(ours, ref, atol=1e-9):
    assert set(ours) == set(ref)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=atol), key


def clustered(rng, n, dim, num_classes, noise):
    labels = rng.integers(0, num_classes, n)
    centres = rng.standard_normal((num_classes, dim))
    x = centres[labels] + noise * rng.standard_normal((n, dim))
    return x.astype(np.float32), labels


def exact_tie_embeddings(rng, n, dim):
    """Rows with entries in {-1, 0, 1} and 0, 1 or 4 non-zeros: normalised
    entries are 0, +-1 or +-0.5, so every cosine is an exact multiple of 0.25
    in float32 and float64 alike -- many exact ties."""
    x = np.zeros((n, dim), np.float32)
    for i in range(n):
        nnz = rng.choice([0, 1, 4], p=[0.1, 0.5, 0.4])
        cols = rng.choice(dim, size=nnz, replace=False)
        x[i, cols] = rng.choice([-1.0, 1.0], size=nnz)
    return x


# ---------------------------------------------------- against the reference
@pytest.mark.parametrize("chunk_size", [1, 7, None])
def test_self_retrieval_matches_reference(rng, chunk_size, topk_cap, monkeypatch):
    # Distinct rows: on the host path (TensorFlow / JAX on a CPU) this is the
    # half-Gram search; blocks of 16 rows make it cross many block pairs.
    monkeypatch.setattr(kd.search, "SELF_SEARCH_BLOCK", 16)
    x, y = clustered(rng, 90, 6, 12, noise=1.0)
    ks = (1, 2, 4, 8, 88)           # up to the largest K allowed (N - 2)
    ours = retrieval_metrics(x, y, ks=ks, chunk_size=chunk_size)
    assert_close(ours, reference_metrics(x, y, ks=ks))
    recall_only = retrieval_metrics(x, y, ks=ks, chunk_size=chunk_size,
                                    metrics=("recall",))
    assert recall_only == {k: v for k, v in ours.items() if k.startswith("recall")}
    assert 0.0 < ours["recall@1"] < 1.0 and 0.0 < ours["map@r"] < 1.0
    with pytest.raises(ValueError, match="K=89 is not below the 89"):
        retrieval_metrics(x, y, ks=(1, 89), chunk_size=chunk_size)


def test_self_retrieval_takes_the_half_gram_search_where_it_applies(rng, monkeypatch):
    # Host path (TensorFlow / JAX on a CPU), cosine, distinct rows: the
    # default self-retrieval computes each score once (the speed-up is the
    # path users get); with a duplicate row, or on a device, the chunked one.
    calls = []
    halved = kd.search.Gallery.host_self_top_k

    def counted(self, *args, **kwargs):
        calls.append(self.size)
        return halved(self, *args, **kwargs)

    monkeypatch.setattr(kd.search.Gallery, "host_self_top_k", counted)
    x, y = clustered(rng, 60, 6, 8, noise=1.0)
    host = kd.search.host_matmul()
    ours = retrieval_metrics(x, y, ks=(1, 4))
    assert_close(ours, reference_metrics(x, y, ks=(1, 4)))
    assert calls == ([60] if host else [])
    x[7] = x[3]                                   # a duplicate: no halving
    assert not kd.search.Gallery(x).can_halve_self_search()
    assert_close(retrieval_metrics(x, y, ks=(1, 4)), reference_metrics(x, y, ks=(1, 4)))
    assert calls == ([60] if host else [])


@pytest.mark.parametrize("chunk_size", [5, None])
def test_query_gallery_matches_reference(rng, chunk_size, topk_cap):
    q, ql = clustered(rng, 40, 5, 10, noise=1.0)
    g, gl = clustered(rng, 70, 5, 10, noise=1.0)
    ql[:3] = 99                     # query classes absent from the gallery
    ks = (1, 3, 10)
    for lone in ("exclude", "count"):
        ours = retrieval_metrics(q, ql, g, gl, ks=ks, chunk_size=chunk_size,
                                 lone_queries=lone)
        assert_close(ours, reference_metrics(q, ql, g, gl, ks=ks,
                                             lone_queries=lone))


@pytest.mark.parametrize("chunk_size", [3, None])
def test_exact_ties_broken_by_lower_index(rng, chunk_size, topk_cap):
    x = exact_tie_embeddings(rng, 80, 5)
    y = rng.integers(0, 6, 80)
    ks = (1, 2, 4, 8, 30)
    for metrics in (("recall",), ("recall", "map_at_r", "r_precision")):
        ours = retrieval_metrics(x, y, ks=ks, chunk_size=chunk_size, metrics=metrics)
        ref = reference_metrics(x, y, ks=ks)
        assert_close(ours, {k: ref[k] for k in ours})
    ours = retrieval_metrics(x, y, ks=ks, chunk_size=chunk_size)
    assert_close(ours, reference_metrics(x, y, ks=ks))
    g = exact_tie_embeddings(rng, 50, 5)
    gl = rng.integers(0, 6, 50)
    ours = retrieval_metrics(x, y, g, gl, ks=ks, chunk_size=chunk_size)
    assert_close(ours, reference_metrics(x, y, g, gl, ks=ks))


def test_tie_rule_on_a_hand_case(topk_cap):
    # Query 0 scores 1.0 against items 1, 2 and 3 (all identical).
    x = np.array([[1, 0], [1, 0], [1, 0], [1, 0], [0, 1]], np.float32)
    # The positive is item 3: items 1 and 2 (lower index, equal score) rank
    # before it, so its rank is 3.
    y = np.array([0, 1, 2, 0, 3])
    ours = retrieval_metrics(x[:1], y[:1], x[1:], y[1:], ks=(1, 2, 3))
    assert ours == {"recall@1": 0.0, "recall@2": 0.0, "recall@3": 1.0,
                    "map@r": 0.0, "r_precision": 0.0}
    # The positive is item 1 instead: rank 1.
    y = np.array([0, 0, 2, 1, 3])
    ours = retrieval_metrics(x[:1], y[:1], x[1:], y[1:], ks=(1, 2, 3))
    assert ours == {"recall@1": 1.0, "recall@2": 1.0, "recall@3": 1.0,
                    "map@r": 1.0, "r_precision": 1.0}


def test_duplicates_of_the_query_count_as_hits(topk_cap):
    # Items 0 and 1 are identical and of the same class. Excluding "the first
    # neighbour" instead of the query's own index could drop the duplicate.
    x = np.array([[1, 0], [1, 0], [0, 1], [0.1, 0.9], [0.2, 0.8]], np.float32)
    y = np.array([0, 0, 1, 1, 1])
    ours = retrieval_metrics(x, y, ks=(1,))
    assert ours["recall@1"] == 1.0
    assert_close(ours, reference_metrics(x, y, ks=(1,)))
    # All items identical: every query's own index is excluded, the other
    # copies are found, ties resolved by index.
    x = np.ones((6, 3), np.float32)
    y = np.array([0, 1, 0, 1, 2, 2])
    ours = retrieval_metrics(x, y, ks=(1, 2, 4))
    assert_close(ours, reference_metrics(x, y, ks=(1, 2, 4)))
    # Ranking = the other indices in increasing order, so only query 2 (its
    # first candidate, item 0, is of its class) has its first positive at rank
    # 1; query 0 finds item 2 at rank 2, queries 4 and 5 at rank 5 (beyond
    # the largest K allowed, 4).
    assert ours["recall@1"] == pytest.approx(1 / 6)
    assert ours["recall@2"] == pytest.approx(3 / 6)
    assert ours["recall@4"] == pytest.approx(4 / 6)


def test_map_at_r_hand_computed():
    def at(deg):
        return [np.cos(np.radians(deg)), np.sin(np.radians(deg))]

    query = np.array([at(0)], np.float32)
    # Query class 7 with R = 3; ranking by angle: 10 (pos), 20 (neg), 30 (pos),
    # 40 (pos), 90 (neg) -> relevance in the top R: 1, 0, 1.
    gallery = np.array([at(30), at(90), at(10), at(40), at(20)], np.float32)
    labels = np.array([7, 1, 7, 7, 2])
    ours = retrieval_metrics(query, [7], gallery, labels, ks=(1, 2))
    assert ours["map@r"] == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert ours["r_precision"] == pytest.approx(2 / 3)
    # A metric is named by its key too: "map@r" is "map_at_r".
    assert retrieval_metrics(query, [7], gallery, labels, metrics=("map@r",)) == \
        {"map@r": ours["map@r"]}
    assert ours["recall@1"] == 1.0
    # Second query: ranking 5 (neg), 10 (pos), 50 (pos); R = 2, top 2 = 0, 1.
    query2 = np.array([at(0)], np.float32)
    gallery2 = np.array([at(50), at(5), at(10)], np.float32)
    ours2 = retrieval_metrics(query2, [3], gallery2, [3, 4, 3], ks=(1, 2))
    assert ours2["map@r"] == pytest.approx((1 / 2) / 2)
    assert ours2["r_precision"] == pytest.approx(1 / 2)
    assert ours2["recall@1"] == 0.0 and ours2["recall@2"] == 1.0
    # Both queries together: means over queries.
    both = retrieval_metrics(np.concatenate([query, query2]), [7, 3],
                             np.concatenate([gallery, gallery2]),
                             np.concatenate([labels, [3, 4, 3]]), ks=(1,))
    # In the joint gallery query 2's ranking gains items of other classes
    # only; recompute with the reference rather than by hand.
    assert_close(both, reference_metrics(
        np.concatenate([query, query2]), np.array([7, 3]),
        np.concatenate([gallery, gallery2]),
        np.concatenate([labels, [3, 4, 3]]), ks=(1,)))


def test_lone_queries_excluded_or_counted():
    # Class 5 has one item: in self-retrieval it has R = 0.
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.7, 0.7]], np.float32)
    y = np.array([0, 0, 1, 1, 5])
    excl = retrieval_metrics(x, y, ks=(1,))
    assert excl == {"recall@1": 1.0, "map@r": 1.0, "r_precision": 1.0}
    count = retrieval_metrics(x, y, ks=(1,), lone_queries="count")
    assert count == pytest.approx({"recall@1": 0.8, "map@r": 0.8,
                                   "r_precision": 0.8})


def test_zero_embeddings_are_finite_ties(topk_cap):
    x = np.zeros((7, 4), np.float32)
    y = np.array([0, 0, 1, 1, 1, 2, 2])
    ours = retrieval_metrics(x, y, ks=(1, 3))
    assert all(np.isfinite(v) for v in ours.values())
    assert_close(ours, reference_metrics(x, y, ks=(1, 3)))


def test_string_labels_and_column_labels(rng):
    x, y = clustered(rng, 40, 4, 5, noise=0.8)
    names = np.array([f"class_{v}" for v in y])
    a = retrieval_metrics(x, names)
    b = retrieval_metrics(x, y[:, None])
    assert a == b


def test_metric_selection_and_keys(rng):
    x, y = clustered(rng, 30, 4, 5, noise=0.5)
    assert set(retrieval_metrics(x, y, ks=(1, 5), metrics=("recall",))) == {
        "recall@1", "recall@5"}
    assert set(retrieval_metrics(x, y, metrics=("map_at_r",))) == {"map@r"}


def test_nmi():
    rng = np.random.default_rng(3)
    centres = np.eye(4, 16, dtype=np.float32) * 10
    y = np.repeat(np.arange(4), 25)
    x = centres[y] + 0.1 * rng.standard_normal((100, 16)).astype(np.float32)
    out = retrieval_metrics(x, y, metrics=("recall", "nmi"), ks=(1,))
    assert out["nmi"] == pytest.approx(1.0)
    assert out["recall@1"] == 1.0
    shuffled = rng.permutation(y)
    low = retrieval_metrics(x, shuffled, metrics=("nmi",))["nmi"]
    assert 0.0 <= low < 0.2
    assert retrieval_metrics(x, shuffled, metrics=("nmi",)) == {"nmi": low}


def test_bad_input():
    x = np.ones((4, 3), np.float32)
    y = np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.full((4, 3), np.nan), y)
    with pytest.raises(ValueError, match="entries"):
        retrieval_metrics(x, y[:3])
    with pytest.raises(ValueError, match="metrics"):
        retrieval_metrics(x, y, metrics=("accuracy",))
    with pytest.raises(ValueError, match="ks"):
        retrieval_metrics(x, y, ks=(0,))
    with pytest.raises(ValueError, match="gallery_labels"):
        retrieval_metrics(x, y, gallery_emb=x)
    with pytest.raises(ValueError, match="dimension"):
        retrieval_metrics(x, y, np.ones((4, 2)), y)
    with pytest.raises(ValueError, match="No query"):
        retrieval_metrics(x, np.arange(4), ks=(1,))
    with pytest.raises(ValueError, match="lone_queries"):
        retrieval_metrics(x, y, lone_queries="drop")


# ------------------------------------------------------------- PML parity
@pytest.mark.parametrize("mode", ["self", "query_gallery"])
def test_parity_with_pml_accuracy_calculator(rng, mode):
    torch = reference("torch", "PML AccuracyCalculator parity")
    reference("faiss", "PML AccuracyCalculator parity")
    acc = reference("pytorch_metric_learning.utils.accuracy_calculator",
                    "PML AccuracyCalculator parity")
    calc = acc.AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
        k="max_bin_count", device=torch.device("cpu"))
    x, y = clustered(rng, 160, 8, 30, noise=1.2)
    y[:4] = [100, 101, 102, 103]    # lone queries
    # PML's default k-NN is faiss IndexFlatL2 on the raw embeddings: give it
    # unit vectors so that its ranking is the cosine ranking.
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    if mode == "self":
        ours = retrieval_metrics(x, y, ks=(1,))
        pml = calc.get_accuracy(x, y)
    else:
        ours = retrieval_metrics(x[:60], y[:60], x[60:], y[60:], ks=(1,))
        pml = calc.get_accuracy(x[:60], y[:60], x[60:], y[60:])
    assert ours["recall@1"] == pytest.approx(pml["precision_at_1"], abs=1e-9)
    assert ours["map@r"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(pml["r_precision"], abs=1e-6)
    assert 0.05 < ours["map@r"] < 0.95


# ------------------------------------------------------- neighbour search
def test_top_k_neighbours_matches_brute_force(rng):
    x = exact_tie_embeddings(rng, 30, 4)
    g = exact_tie_embeddings(rng, 25, 4)
    for gallery, exclude in ((None, True), (g, False)):
        ref_g = x if gallery is None else g
        sims = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)) @ (
            ref_g / np.maximum(np.linalg.norm(ref_g, axis=1, keepdims=True), 1e-6)).T
        idx = kd.evaluation.top_k_neighbours(x, gallery, k=6, chunk_size=4)
        for i in range(len(x)):
            cand = [j for j in range(len(ref_g)) if not (exclude and j == i)]
            expected = sorted(cand, key=lambda j: (-sims[i, j], j))[:6]
            assert list(idx[i]) == expected
    with pytest.raises(ValueError, match="k must"):
        kd.evaluation.top_k_neighbours(x, None, k=30)
