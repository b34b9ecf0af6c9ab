"""The k nearest neighbours of every label in label space, in chunks.

    neighbours(i) = the k indices j (j != i with exclude_self) of smallest
                    D_y(labels[i], labels[j]), nearest first

For N up to 100k+ labels: never an N x N matrix. This is the neighbour list
``keras_dml.data.samplers.LabelSpaceBatchSampler`` builds its batches from.
"""

import numpy as np

from keras_dml.label_distances._label_sets import _as_compute, _length, _resolve_offline, _slice

__all__ = ["nearest_neighbours"]


def nearest_neighbours(labels, k, distance="squared_l2", chunk_size=1024,
                       exclude_self=True, compute_dtype=np.float64,
                       **distance_kwargs):
    """The k nearest neighbours in label space of every label, in chunks.

    Query blocks of ``chunk_size`` labels are compared with database blocks
    of ``chunk_size`` labels; each block's k best candidates (``argpartition``)
    are merged into a running top-k. Memory: O(chunk_size^2 + N k), never an
    N x N matrix. Results are sorted by increasing distance; equal distances
    are ordered by index within the kept candidates (which of several tied
    k-th candidates is kept is deterministic but not specified).

    Args:
      labels: [N, ...] array, or a tuple (values, mask) (see
        ``pairwise_label_distances``).
      k: neighbours per label (k <= N - 1 with ``exclude_self``).
      distance: a name from ``get`` or a callable ``fn(a, b) -> [na, nb]``.
      exclude_self: a label is not its own neighbour (by index).
      **distance_kwargs: bound into ``distance`` (e.g. ``num_classes=5``).
    Returns:
      (indices int64 [N, k], distances float32 [N, k]).
    """
    call = _resolve_offline(distance, distance_kwargs)
    labels = _as_compute(labels, compute_dtype)
    n = _length(labels)
    k = int(k)
    if k < 1 or k > n - (1 if exclude_self else 0):
        raise ValueError(
            f"k must be in [1, {n - (1 if exclude_self else 0)}] for {n} labels; got {k}.")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1.")
    out_i = np.empty((n, k), np.int64)
    out_d = np.empty((n, k), np.float32)
    for i0 in range(0, n, chunk_size):
        i1 = min(i0 + chunk_size, n)
        q = i1 - i0
        a = _slice(labels, i0, i1)
        best_d = np.full((q, k), np.inf)
        best_i = np.full((q, k), -1, np.int64)
        for j0 in range(0, n, chunk_size):
            j1 = min(j0 + chunk_size, n)
            d = np.array(call(a, _slice(labels, j0, j1)), np.float64)
            if d.shape != (q, j1 - j0):
                raise ValueError(f"distance returned shape {d.shape}; expected {(q, j1 - j0)}.")
            if np.isnan(d).any():
                raise ValueError("label distances contain NaN.")
            cols = np.arange(j0, j1)
            if exclude_self:
                lo, hi = max(i0, j0), min(i1, j1)
                if lo < hi:
                    r = np.arange(lo, hi)
                    d[r - i0, r - j0] = np.inf
            if d.shape[1] > k:
                part = np.argpartition(d, k - 1, axis=1)[:, :k]
                d = np.take_along_axis(d, part, axis=1)
                cols = cols[part]
            else:
                cols = np.broadcast_to(cols, d.shape)
            cand_d = np.concatenate([best_d, d], axis=1)
            cand_i = np.concatenate([best_i, cols], axis=1)
            order = np.lexsort((cand_i, cand_d), axis=1)[:, :k]
            best_d = np.take_along_axis(cand_d, order, axis=1)
            best_i = np.take_along_axis(cand_i, order, axis=1)
        out_i[i0:i1] = best_i
        out_d[i0:i1] = best_d
    return out_i, out_d
