"""Retrieval metrics for continuous labels (Kim et al., CVPR 2019).

For a query q, the gallery is ranked by embedding distance (closest first,
ties by lower gallery index; in self-retrieval q itself is excluded by index).
With d_q(r) the label distance D_y(y_q, y_g) of the item at rank r:

    mean_label_distance@K = mean_q (1/K) sum_{r=1..K} d_q(r)
    DCG_q@K  = sum_{r=1..K} rel(d_q(r)) / log2(r + 1),   rel(d) = 1 / (1 + d)
    IDCG_q@K = the same sum over the gallery sorted by increasing label
               distance (q itself excluded in self-retrieval)
    ndcg@K   = mean_q DCG_q@K / IDCG_q@K

This is the evaluation of the authors' code (Beyond-Binary-Supervision-CVPR19,
``utils.eval_retrieval``): the cumulative mean of the label distances of the
top 1..K, and nDCG with relevance 2^(-log2(d + 1)) = 1 / (1 + d). Their code
evaluates a query set against a disjoint database (query/gallery mode here)
and multiplies the mean pose distance by 224/288, a pixel scale specific to
their MPII crops, which is left to the caller (scale the labels).

Label distances: "squared_l2" (float64 numpy on the host, the same formula
as ``keras_dml.ops.pairwise_squared_distances``, so the numbers are the same
on every Keras backend, JAX's float32-only default included), any other
name of ``keras_dml.label_distances`` ("one_minus_miou", "caption_set"), a
callable ``fn(labels_a, labels_b) -> [Na, Nb]``, or a precomputed [Nq, Ng]
matrix ([N, N] in self-retrieval). They are computed per chunk of queries, so
neither the embedding nor the label-distance matrix is ever held whole unless
it was given precomputed.
"""

from typing import Callable, Dict, Optional, Sequence, Union

import numpy as np
from keras import ops

from keras_dml import search
from keras_dml._types import TensorLike

METRICS = ("mean_label_distance", "ndcg")
# Embedding metrics: squared euclidean ranks as euclidean does.
_SEARCH_METRICS = {"euclidean": "euclidean", "squared_euclidean": "euclidean",
                   "cosine": "cosine"}


def _length(labels):
    if isinstance(labels, tuple):
        return _length(labels[0])
    return int(labels.shape[0]) if hasattr(labels, "shape") else len(labels)


def _slice(labels, start, stop):
    if isinstance(labels, tuple):
        return tuple(_slice(p, start, stop) for p in labels)
    return labels[start:stop]


def _host(x):
    """A numpy array of ``x`` (a backend tensor, array or list)."""
    return np.asarray(ops.convert_to_numpy(x) if ops.is_tensor(x) else x)


def _label_distance_fn(label_distance, kwargs):
    """(labels_a, labels_b) -> float64 numpy [Na, Nb]."""
    if callable(label_distance):
        def fn(a, b):
            return label_distance(a, b, **kwargs)
        return fn
    if not isinstance(label_distance, str):
        raise ValueError("label_distance must be a name, a callable or a "
                         f"precomputed matrix; got {type(label_distance).__name__}.")

    def named(a, b):
        # keras_dml.label_distances; tuple labels are (values, mask), e.g.
        # poses with joint visibility.
        from keras_dml import label_distances
        return label_distances.pairwise_label_distances(
            a, fn=label_distance, labels2=b, chunk_size=max(1, _length(a)),
            dtype=np.float64, **kwargs)

    if label_distance != "squared_l2" or kwargs:
        from keras_dml import label_distances
        label_distances.get(label_distance, **kwargs)    # validates the name
        return named

    def squared_l2(a, b):          # plain label vectors
        if isinstance(a, tuple):
            return named(a, b)
        a = _host(a).astype(np.float64).reshape(len(a), -1)
        b = _host(b).astype(np.float64).reshape(len(b), -1)
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"query labels have {a.shape[1]} values but "
                             f"gallery labels have {b.shape[1]}.")
        # |a|^2 + |b|^2 - 2 a.b, clamped at 0 (ops.pairwise_squared_distances)
        d = (np.einsum("ij,ij->i", a, a)[:, None] - 2.0 * (a @ b.T)
             + np.einsum("ij,ij->i", b, b)[None, :])
        return np.maximum(d, 0.0)
    return squared_l2


def _checked_distances(d, shape):
    d = np.asarray(d, np.float64)
    if d.shape != shape:
        raise ValueError(f"label distances have shape {d.shape}; expected {shape}.")
    if not np.all(np.isfinite(d)):
        raise ValueError("label distances contain NaN or infinite values.")
    if d.size and d.min() < 0:
        scale = max(1.0, float(np.abs(d).max()))
        if d.min() < -1e-6 * scale:
            raise ValueError(f"label distances must be >= 0; got {d.min()}.")
        d = np.maximum(d, 0.0)   # rounding noise of a distance computed as a difference
    return d


def continuous_metrics(query_emb: TensorLike, query_labels: Optional[TensorLike],
                       gallery_emb: Optional[TensorLike] = None,
                       gallery_labels: Optional[TensorLike] = None, ks: Union[int, Sequence[int]] = (1, 5, 10, 20),
                       label_distance: Union[str, Callable, TensorLike] = "squared_l2",
                       metric: str = "euclidean",
                       metrics: Union[str, Sequence[str]] = METRICS,
                       chunk_size: Optional[int] = None,
                       label_distance_kwargs: Optional[dict] = None) -> Dict[str, float]:
    """Mean label distance of the top K and nDCG@K (see module docstring).

    Args:
        query_emb: [Nq, D] embeddings.
        query_labels: [Nq, ...] labels (array, list, or a tuple of arrays sliced
            together); may be None with a precomputed matrix.
        gallery_emb, gallery_labels: the gallery; None for self-retrieval.
        ks: the K of the metrics.
        label_distance: "squared_l2", another ``keras_dml.label_distances``
            name, a callable ``(labels_a, labels_b) -> [Na, Nb]``, or a
            precomputed [Nq, Ng] matrix.
        metric: how embeddings are compared: "euclidean" (=
            "squared_euclidean", same ranking) or "cosine" (``kd.search``).
        metrics: any of "mean_label_distance", "ndcg".
        chunk_size: queries per chunk (None: from a 512 MB budget).
        label_distance_kwargs: keyword arguments bound into a named or callable
            label distance (e.g. ``num_classes`` for "one_minus_miou").

    Returns:
        dict of Python floats "mean_label_distance@K" and "ndcg@K".
    """
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not metrics or set(metrics) - set(METRICS):
        raise ValueError(f"metrics must be a non-empty subset of {METRICS}; "
                         f"got {metrics!r}.")
    if metric not in _SEARCH_METRICS:
        raise ValueError(f"metric must be one of {tuple(_SEARCH_METRICS)}; got {metric!r}.")
    ks = search.check_ks(ks)
    q, g, self_retrieval = search.query_gallery(query_emb, gallery_emb, gallery_labels)
    gl = query_labels if self_retrieval else gallery_labels
    nq, ng = q.shape[0], g.shape[0]

    kwargs = dict(label_distance_kwargs or {})
    precomputed = None
    if isinstance(label_distance, np.ndarray) or ops.is_tensor(label_distance):
        precomputed = _host(label_distance)
        if precomputed.shape != (nq, ng):
            raise ValueError(f"the precomputed label-distance matrix has shape "
                             f"{precomputed.shape}; expected {(nq, ng)}.")
        distance_fn = None
    else:
        distance_fn = _label_distance_fn(label_distance, kwargs)
        for name, labels, n in (("query_labels", query_labels, nq),
                                ("gallery_labels", gl, ng)):
            if labels is None:
                raise ValueError(f"{name} are needed unless label_distance is "
                                 "a precomputed matrix.")
            if _length(labels) != n:
                raise ValueError(f"{name} has {_length(labels)} entries but "
                                 f"there are {n} embeddings.")

    available = ng - int(self_retrieval)
    k_max = max(ks)
    if k_max >= available:
        # At K = every retrievable item, the metrics no longer depend on the
        # embedding (all methods retrieve the same set).
        raise ValueError(f"K={k_max} is not below the {available} gallery "
                         "items a query can retrieve; use K < "
                         f"{available}.")

    gallery = search.Gallery(g, _SEARCH_METRICS[metric])
    chunk = search.check_chunk_size(chunk_size, nq, ng, k_max, bytes_per_entry=32)
    retrieved = np.empty((nq, k_max))
    ideal = np.empty((nq, k_max))
    for start in range(0, nq, chunk):
        stop = min(start + chunk, nq)
        _, idx = search.chunk_top_k(gallery, q, start, stop, chunk, k_max,
                                    self_retrieval)
        if precomputed is not None:
            d = _checked_distances(precomputed[start:stop], (stop - start, ng))
        else:
            assert distance_fn is not None    # set whenever nothing is precomputed
            d = _checked_distances(
                distance_fn(_slice(query_labels, start, stop), gl),
                (stop - start, ng))
        retrieved[start:stop] = np.take_along_axis(d, idx, axis=1)
        if self_retrieval:
            d = d.copy()
            rows = np.arange(stop - start)
            d[rows, start + rows] = np.inf
        part = np.partition(d, k_max - 1, axis=1)[:, :k_max]
        ideal[start:stop] = np.sort(part, axis=1)

    out = {}
    ranks = np.arange(1, k_max + 1)
    if "mean_label_distance" in metrics:
        cum_mean = np.cumsum(retrieved, axis=1) / ranks[None, :]
        for k in ks:
            out[f"mean_label_distance@{k}"] = float(np.mean(cum_mean[:, k - 1]))
    if "ndcg" in metrics:
        discount = 1.0 / np.log2(ranks + 1.0)
        dcg = np.cumsum(discount / (1.0 + retrieved), axis=1)
        idcg = np.cumsum(discount / (1.0 + ideal), axis=1)
        ndcg = dcg / idcg            # idcg >= 1 / (1 + max d) > 0
        for k in ks:
            out[f"ndcg@{k}"] = float(np.mean(ndcg[:, k - 1]))
    return out
