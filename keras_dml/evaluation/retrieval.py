"""Class-label retrieval metrics: Recall@K, MAP@R, R-precision, NMI.

Definitions (for a query q with label y_q, gallery items ranked by decreasing
cosine similarity, ties by lower gallery index, q itself excluded by index in
self-retrieval):

    R_q        = number of gallery items with label y_q (q itself not counted)
    rel_q(i)   = 1 if the item at rank i (1-based) has label y_q, else 0
    first_q    = rank of the highest-ranked item with label y_q

    Recall@K    = mean_q [first_q <= K]
    R-precision = mean_q (1/R_q) sum_{i=1..R_q} rel_q(i)
    MAP@R       = mean_q (1/R_q) sum_{i=1..R_q} rel_q(i) * P_q(i),
                  P_q(i) = (1/i) sum_{j=1..i} rel_q(j)

MAP@R and R-precision are those of Musgrave et al. 2020, "A Metric Learning
Reality Check", and equal pytorch-metric-learning's ``AccuracyCalculator``
("mean_average_precision_at_r", "r_precision"); Recall@1 equals its
"precision_at_1".

Queries with R_q = 0 ("lone" queries: a class with a single item in
self-retrieval, or a query class absent from the gallery) have no correct
answer. By default (``lone_queries="exclude"``) they are left out of every
metric's mean, exactly as ``AccuracyCalculator`` does. ``lone_queries="count"``
keeps them in the denominators as failures (Recall@K 0, MAP@R 0,
R-precision 0), which is what the papers' own scripts do for Recall@K.

Ties: items with equal similarity are ranked by increasing gallery index, in
every metric and on every Keras backend (``search.top_k_exact``). Exact ties only arise
with duplicated or degenerate (e.g. all-zero) embeddings. For comparison, the
Proxy-Anchor In-Shop script counts only strictly more similar negatives (ties
go the query's way), and its self-retrieval scripts drop the first neighbour
assuming it is the query, which is wrong when the query has duplicates; here
the query is excluded by its index.

NMI: k-means (scikit-learn, k = number of distinct query labels, seeded) on
the L2-normalised query embeddings, scored with
``sklearn.metrics.normalized_mutual_info_score`` against the query labels.

Cost: per chunk of queries one matmul against the gallery and one exact
top-k (``search.top_k_blocked``) with k = max(max R_q, min(max K, 64)): MAP@R and
R-precision read the top R_q, Recall@K reads ``first_q`` from the top k. When
max K is larger than that k (SOP's K = 1000), ``first_q`` of the queries whose
first same-class item is not in the top k is found by counting instead (items
scored above the best same-class item, plus equal-scored items of lower
index), so a large K costs no large top-k. Memory per chunk is
O(chunk * (Ng + k)); the full [Nq, Ng] matrix is never formed. The chunk size
defaults to 512 MB / (16 bytes * Ng) rows. Self-retrieval on the host path
(TensorFlow or JAX on a CPU, no duplicate embeddings) computes each score
once from half the Gram matrix instead (``search.Gallery.host_self_top_k``):
half the multiply-adds, in blocks of 1024 rows whatever ``chunk_size``.
"""

from typing import Dict, Optional, Sequence, Union

import numpy as np
from keras import ops

from keras_dml import search
from keras_dml._types import TensorLike

METRICS = ("recall", "map_at_r", "r_precision", "nmi")
# The keys of the result name the metrics too: metrics=("map@r",) is "map_at_r".
METRIC_ALIASES = {"map@r": "map_at_r"}
LONE_QUERY_POLICIES = ("exclude", "count")


def _as_labels(labels, name, n):
    if ops.is_tensor(labels):
        labels = ops.convert_to_numpy(labels)
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"{name} must be class labels of shape [N] or [N, 1]; "
                         f"got shape {labels.shape}.")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries but there are "
                         f"{n} embeddings.")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return labels


# Recall@K for K up to this many comes from top_k; larger K (SOP's 1000) from
# counting, only for the queries whose first same-class item is not in the top.
_TOPK_CAP = 64
_NO_RANK = np.iinfo(np.int32).max


def _first_rank_by_counting(s, ql, gl):
    """1-based rank of the best same-class item, ties to the lower index.

    rank = #{j : s_j > best} + #{j : s_j == best, j < first same-class j with
    s_j == best} + 1, one pass per term over the [m, Ng] scores.
    """
    n = s.shape[1]
    same = ops.equal(ops.expand_dims(ql, 1), ops.expand_dims(gl, 0))
    best = ops.max(ops.where(same, s, ops.cast(-np.inf, s.dtype)), axis=1,
                   keepdims=True)
    above = ops.sum(ops.cast(s > best, "int32"), axis=1)
    col = ops.expand_dims(ops.arange(n, dtype="int32"), 0)
    ties = ops.equal(s, best)
    first_pos = ops.min(ops.where(ops.logical_and(ties, same), col, n), axis=1,
                        keepdims=True)
    tied_before = ops.sum(
        ops.cast(ops.logical_and(ties, col < first_pos), "int32"), axis=1)
    return above + tied_before + 1


def _top_same(gallery, q, ql, gl, exclude, k_top):
    """Rank of the first same-class item among the top k_top ([c] int32,
    ``_NO_RANK`` if none) and the same-class flags of the top k_top
    ([c, k_top] bool) of one chunk of queries: one compiled call."""
    block = search.block_size(gallery.size, k_top)
    scorer = gallery.scorer()

    def make(score):
        def fn(tensors, q, ql, gl, exclude):
            s = scorer(tensors, q, exclude)
            _, top_idx = search.top_k_blocked(s, k_top, block)
            same = ops.equal(ops.take(gl, top_idx, axis=0), ops.expand_dims(ql, 1))
            ranks = ops.expand_dims(ops.arange(1, k_top + 1, dtype="int32"), 0)
            return ops.min(ops.where(same, ranks, _NO_RANK), axis=1), same
        return fn
    first_rank, same = gallery.compiled(("top_same", k_top), make)(
        gallery.tensors, q, ql, gl, exclude)
    return ops.convert_to_numpy(first_rank).astype(np.int64), ops.convert_to_numpy(same)


def _counted_ranks(gallery, q, ql, gl, exclude, missing):
    """``_first_rank_by_counting`` (numpy [m]) of the chunk's queries at the
    positions ``missing`` [m]. The positions are padded to the chunk's rows
    (repeating the last) so that a compiling backend sees one shape."""
    m = missing.size
    index = ops.convert_to_tensor(
        search.pad_rows(missing.astype(np.int32), int(q.shape[0]), missing[-1]))

    scorer = gallery.scorer()

    def make(score):
        def fn(tensors, q, ql, gl, exclude, index):
            pick = lambda x: None if x is None else ops.take(x, index, axis=0)  # noqa: E731
            return _first_rank_by_counting(
                scorer(tensors, pick(q), pick(exclude)), pick(ql), gl)
        return fn
    return ops.convert_to_numpy(gallery.compiled(("count",), make)(
        gallery.tensors, q, ql, gl, exclude, index))[:m]


def _chunk_stats(gallery, q, ql, gl, exclude, k_top, count_beyond, has_match):
    """Rank of the first same-class item [c] and same-class flags [c, k_top]
    of the top k_top, as numpy.

    Ranks beyond k_top are exact if ``count_beyond`` and ``_NO_RANK``
    otherwise: they are counted (the scores recomputed) only for the queries
    with a match and none in the top k_top.
    """
    first_rank, top_same = _top_same(gallery, q, ql, gl, exclude, k_top)
    if count_beyond:
        missing = np.nonzero(has_match & (first_rank == _NO_RANK))[0]
        if missing.size:
            first_rank[missing] = _counted_ranks(gallery, q, ql, gl, exclude, missing)
    return first_rank, top_same


def _host_chunk_stats(gallery, q, qid, gid, exclude, k_top, count_beyond, has_match):
    """``_chunk_stats`` on the host path (``search.host_matmul()``): numpy
    scores and ``search.host_top_k``, the same ranks and flags; ranks beyond
    k_top are counted with the same ``_first_rank_by_counting``."""
    s = gallery.host_scores(q, exclude)
    _, top = search.host_top_k(s, k_top)
    return _host_ranks(top, qid, gid, count_beyond, has_match, lambda rows: s[rows])


def _host_ranks(top, qid, gid, count_beyond, has_match, score_rows):
    """(first rank [c], top_same [c, k]) of host-path queries from their top
    columns; ``score_rows(rows)`` gives the full score rows of the queries
    whose first match lies beyond the top k (counted)."""
    top_same = gid[top] == qid[:, None]
    first_rank = np.where(top_same.any(axis=1), np.argmax(top_same, axis=1) + 1,
                          _NO_RANK).astype(np.int64)
    if count_beyond:
        missing = np.nonzero(has_match & (first_rank == _NO_RANK))[0]
        if missing.size:
            first_rank[missing] = ops.convert_to_numpy(_first_rank_by_counting(
                ops.convert_to_tensor(score_rows(missing)), ops.convert_to_tensor(qid[missing]),
                ops.convert_to_tensor(gid)))
    return first_rank, top_same


def _host_self_stats(gallery, q, qid, gid, k_top, count_beyond, has_match):
    """(start, stop, rank, top_same) by row blocks of self-retrieval on the
    host path, from half the Gram matrix (``Gallery.host_self_top_k``)."""
    for start, stop, _, top in gallery.host_self_top_k(k_top):
        def score_rows(rows, start=start):
            index = rows + start
            return gallery.host_scores(q[index], index)
        rank, top_same = _host_ranks(top, qid[start:stop], gid, count_beyond,
                                     has_match[start:stop], score_rows)
        yield start, stop, rank, top_same


def _chunk_blocks(gallery, q, qid, gid, g_ids, chunk, self_retrieval, k_top, count_beyond,
                  has_match):
    """(start, stop, rank, top_same) by chunks of ``chunk`` queries: numpy on
    the host path, else one compiled call per chunk (padded to few shapes)."""
    for start in range(0, q.shape[0], chunk):
        stop = min(start + chunk, q.shape[0])
        if gallery.host_product:
            rank, top_same = _host_chunk_stats(
                gallery, q[start:stop], qid[start:stop], gid,
                search.exclusion(start, stop, self_retrieval), k_top, count_beyond,
                has_match[start:stop])
        else:
            rows = search.padded_rows(stop - start, chunk, q.shape[0])   # few shapes
            qc = gallery.prepare_queries(search.pad_rows(q[start:stop], rows))
            rank, top_same = _chunk_stats(
                gallery, qc,
                ops.convert_to_tensor(search.pad_rows(qid[start:stop], rows, -1)),
                g_ids, search.exclusion(start, stop, self_retrieval, rows=rows),
                k_top, count_beyond,
                search.pad_rows(has_match[start:stop], rows, False))
            rank, top_same = rank[:stop - start], top_same[:stop - start]
        yield start, stop, rank, top_same


def _average_precision_at_r(top_same, r):
    """Per-row MAP@R and R-precision from [n, k] same-class flags and R [n]."""
    k = top_same.shape[1]
    in_r = np.arange(k)[None, :] < r[:, None]
    rel = top_same & in_r
    hits = np.cumsum(rel, axis=1)
    prec = hits / np.arange(1, k + 1)[None, :]
    r_safe = np.maximum(r, 1)
    ap = np.sum(prec * rel, axis=1) / r_safe
    rp = np.sum(rel, axis=1) / r_safe
    return ap, rp


def _nmi(embeddings, labels, seed):
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    x = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True),
                                1e-6)
    k = len(np.unique(labels))
    if k > x.shape[0]:
        raise ValueError("NMI needs at least as many queries as classes.")
    clusters = KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(x)
    return float(normalized_mutual_info_score(labels, clusters))


def retrieval_metrics(query_emb: TensorLike, query_labels: TensorLike,
                      gallery_emb: Optional[TensorLike] = None,
                      gallery_labels: Optional[TensorLike] = None,
                      ks: Union[int, Sequence[int]] = (1, 2, 4, 8),
                      metrics: Union[str, Sequence[str]] = ("recall", "map_at_r", "r_precision"),
                      lone_queries: str = "exclude", chunk_size: Optional[int] = None,
                      seed: int = 0) -> Dict[str, float]:
    """Recall@K, MAP@R, R-precision (and NMI) of cosine nearest neighbours.

    Args:
        query_emb: [Nq, D] embeddings (any scale; they are L2-normalised).
        query_labels: [Nq] class labels (any hashable numpy dtype: ints, str).
        gallery_emb, gallery_labels: [Ng, D] / [Ng] gallery (query/gallery mode,
            e.g. In-Shop). If None, every query searches the other queries and
            is excluded from its own results by index.
        ks: the K of Recall@K; each must be below the number of items a query
            can retrieve (Ng, or N - 1 in self-retrieval), else ValueError.
        metrics: any of "recall", "map_at_r" (or its key "map@r"),
            "r_precision", "nmi".
        lone_queries: "exclude" (PML's behaviour) or "count"; see module doc.
        chunk_size: queries per chunk (None: from a 512 MB budget).
        seed: k-means seed for NMI.

    Returns:
        dict of Python floats: "recall@K" for each K, "map@r", "r_precision",
        "nmi" (those requested).
    """
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    metrics = tuple(METRIC_ALIASES.get(m, m) for m in metrics)
    unknown = set(metrics) - set(METRICS)
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {METRICS}; "
                         f"got {metrics!r}.")
    if lone_queries not in LONE_QUERY_POLICIES:
        raise ValueError(f"lone_queries must be one of {LONE_QUERY_POLICIES}; "
                         f"got {lone_queries!r}.")
    ks = search.check_ks(ks)
    if gallery_emb is not None and gallery_labels is None:
        raise ValueError("gallery_emb given without gallery_labels.")
    q, g, self_retrieval = search.query_gallery(query_emb, gallery_emb, gallery_labels)
    ql = _as_labels(query_labels, "query_labels", q.shape[0])
    gl = ql if self_retrieval else _as_labels(gallery_labels, "gallery_labels", g.shape[0])
    available = g.shape[0] - int(self_retrieval)
    if "recall" in metrics and max(ks) >= available:
        # Recall@K with K >= the retrievable items is 1 for every query with
        # a match, whatever the embedding: a number that says nothing.
        raise ValueError(
            f"K={max(ks)} is not below the {available} gallery items a query "
            "can retrieve, so Recall@K would be 1 by construction; use K < "
            f"{available}.")

    # Integer class ids shared by queries and gallery.
    _, ids = np.unique(np.concatenate([ql, gl]), return_inverse=True)
    ids = ids.reshape(-1).astype(np.int32)
    qid, gid = ids[:q.shape[0]], ids[q.shape[0]:]
    counts = np.bincount(gid, minlength=int(ids.max()) + 1)
    r = counts[qid] - (1 if self_retrieval else 0)        # R_q
    has_match = r > 0

    out = {}
    need_knn = [m for m in metrics if m != "nmi"]
    if need_knn:
        if lone_queries == "exclude":
            if not np.any(has_match):
                raise ValueError(
                    "No query has a same-class item in the gallery (every "
                    "class has a single item in self-retrieval, or the query "
                    "classes are absent from the gallery): retrieval metrics "
                    "are undefined.")
            weight = has_match.astype(np.float64)
        else:
            weight = np.ones(q.shape[0], np.float64)
        need_top = any(m in ("map_at_r", "r_precision") for m in metrics)
        k_recall = min(max(ks), _TOPK_CAP) if "recall" in metrics else 0
        k_top = min(available, max(int(r.max()) if need_top else 0, k_recall, 1))
        count_beyond = "recall" in metrics and max(ks) > k_top
        chunk = search.check_chunk_size(chunk_size, q.shape[0], g.shape[0], k_top)
        gallery = search.Gallery(g, "cosine")
        g_ids = ops.convert_to_tensor(gid, "int32")
        first_rank = np.empty(q.shape[0], np.int64)
        ap = np.zeros(q.shape[0])
        rp = np.zeros(q.shape[0])
        if self_retrieval and gallery.can_halve_self_search():
            blocks = _host_self_stats(gallery, q, qid, gid, k_top, count_beyond, has_match)
        else:
            blocks = _chunk_blocks(gallery, q, qid, gid, g_ids, chunk, self_retrieval, k_top,
                                   count_beyond, has_match)
        for start, stop, rank, top_same in blocks:
            first_rank[start:stop] = rank
            if need_top:
                ap[start:stop], rp[start:stop] = _average_precision_at_r(
                    top_same, r[start:stop])
        first_rank[~has_match] = np.iinfo(np.int64).max     # never a hit
        ap[~has_match] = 0.0
        rp[~has_match] = 0.0
        total = weight.sum()
        if "recall" in metrics:
            for k in ks:
                out[f"recall@{k}"] = float(np.sum(weight * (first_rank <= k)) / total)
        if "map_at_r" in metrics:
            out["map@r"] = float(np.sum(weight * ap) / total)
        if "r_precision" in metrics:
            out["r_precision"] = float(np.sum(weight * rp) / total)
    if "nmi" in metrics:
        out["nmi"] = _nmi(q, qid, seed)
    return out
