"""Exact nearest-neighbour search in chunks of queries on the TensorFlow device.

Every evaluation in keras_dml ranks a gallery for each query by a score
(higher = closer) and never builds the full [Nq, Ng] matrix: queries are
processed ``chunk_size`` rows at a time, so the working memory is
O(chunk_size * (Ng + k)) on top of the embeddings themselves. The matmul
and the reductions run on whatever device TensorFlow picks (a GPU if there
is one).

Scores:
    "cosine":    s(q, g) = <q / |q|, g / |g|>            (zero vectors stay zero)
    "euclidean": s(q, g) = 2 <q, g> - |g|^2 = |q|^2 - |q - g|^2,
                 which orders the gallery exactly as -|q - g| does.

Ranking and ties (one rule everywhere): items are ranked by decreasing score;
items with an equal score are ranked by increasing gallery index. This is the
order of ``tf.math.top_k`` (documented: "the lower-index element appears
first"), and the rank-counting code below implements the same rule.

Self exclusion: when the queries are the gallery (query i is gallery item i),
query i's own item gets the score -inf before ranking, i.e. it is excluded by
index. Other items identical to the query (duplicates) are ranked normally.
"""

import numpy as np
import tensorflow as tf

from keras_dml import ops

DEFAULT_MEMORY_BUDGET = 512 * 1024 ** 2   # bytes per chunk's [chunk, Ng] work

_SCORES = ("cosine", "euclidean")


def as_embeddings(x, name):
    """A finite float32 numpy array of shape [N, D], or a clear ValueError."""
    if isinstance(x, tf.Tensor):
        x = x.numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape [N, D]; got shape {x.shape}.")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{name} must be numeric; got dtype {x.dtype}.")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return x


def auto_chunk_size(num_queries, num_gallery, extra_columns=0,
                    bytes_per_entry=16, memory_budget=DEFAULT_MEMORY_BUDGET):
    """Rows per chunk so that ``rows * (Ng + extra) * bytes_per_entry <= budget``.

    ``bytes_per_entry`` accounts for the float32 score matrix plus the boolean /
    integer temporaries of the same shape that the reductions create.
    """
    per_row = max(1, (num_gallery + extra_columns) * bytes_per_entry)
    rows = max(1, memory_budget // per_row)
    return int(max(1, min(num_queries, rows)))


def check_chunk_size(chunk_size, num_queries, num_gallery, extra_columns=0,
                     bytes_per_entry=16):
    if chunk_size is None:
        return auto_chunk_size(num_queries, num_gallery, extra_columns,
                               bytes_per_entry)
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}.")
    return int(min(chunk_size, max(num_queries, 1)))


class Gallery:
    """Gallery embeddings prepared once for chunked scoring.

    Args:
        gallery: float array [Ng, D].
        score: "cosine" or "euclidean" (see module docstring).
    """

    def __init__(self, gallery, score="cosine"):
        if score not in _SCORES:
            raise ValueError(f"score must be one of {_SCORES}; got {score!r}.")
        self.score = score
        g = tf.convert_to_tensor(gallery, tf.float32)
        if score == "cosine":
            self.embeddings = ops.l2_normalize(g)
            self.bias = tf.zeros([tf.shape(g)[0]], tf.float32)
        else:
            self.embeddings = g
            self.bias = tf.reduce_sum(tf.square(g), axis=1)
        self.size = int(g.shape[0])

    def prepare_queries(self, queries):
        q = tf.convert_to_tensor(queries, tf.float32)
        return ops.l2_normalize(q) if self.score == "cosine" else q


def _scores(q, g, g_bias, start, scale, exclude_self):
    """[c, Ng] scores ``scale * <q, g> - bias``, self entries set to -inf."""
    s = tf.matmul(q, g, transpose_b=True)
    s = scale * s - g_bias[None, :]
    if exclude_self:
        c = tf.shape(q)[0]
        rows = tf.range(c)
        idx = tf.stack([rows, start + rows], axis=1)
        s = tf.tensor_scatter_nd_update(
            s, idx, tf.fill([c], tf.constant(-np.inf, s.dtype)))
    return s


_SIG = [tf.TensorSpec([None, None], tf.float32),   # queries (prepared)
        tf.TensorSpec([None, None], tf.float32),   # gallery (prepared)
        tf.TensorSpec([None], tf.float32),         # gallery bias
        tf.TensorSpec([], tf.int32),               # start row of the chunk
        tf.TensorSpec([], tf.float32),             # scale (1 cosine, 2 euclid)
        tf.TensorSpec([], tf.int32)]               # k


@tf.function(input_signature=_SIG)
def _topk_chunk_self(q, g, g_bias, start, scale, k):
    return tf.math.top_k(_scores(q, g, g_bias, start, scale, True), k=k)


@tf.function(input_signature=_SIG)
def _topk_chunk(q, g, g_bias, start, scale, k):
    return tf.math.top_k(_scores(q, g, g_bias, start, scale, False), k=k)


def topk_chunk(q, gallery, start, k, exclude_self):
    """Top-k (values, indices) of one prepared query chunk, self excluded if asked."""
    fn = _topk_chunk_self if exclude_self else _topk_chunk
    scale = 1.0 if gallery.score == "cosine" else 2.0
    return fn(q, gallery.embeddings, gallery.bias, tf.constant(start, tf.int32),
              tf.constant(scale, tf.float32), tf.constant(k, tf.int32))


def top_k_neighbours(query_emb, gallery_emb=None, k=5, exclude_self=None,
                     score="cosine", chunk_size=None, return_scores=False):
    """Indices of the k nearest gallery items of every query, best first.

    Args:
        query_emb: [Nq, D] embeddings.
        gallery_emb: [Ng, D] embeddings, or None to search the queries
            themselves.
        k: neighbours per query.
        exclude_self: exclude gallery item i from query i's results (by index,
            so duplicates of the query are still found). Defaults to True when
            ``gallery_emb`` is None and False otherwise; with a gallery it
            requires Nq <= Ng (query i is gallery item i).
        score: "cosine" (L2-normalised dot product) or "euclidean".
        chunk_size: queries per chunk (None: from a 512 MB budget).
        return_scores: also return the [Nq, k] scores.

    Returns:
        int64 numpy array [Nq, k] (and float32 scores [Nq, k] if asked). Ties
        are broken by the lower gallery index.
    """
    q = as_embeddings(query_emb, "query_emb")
    if gallery_emb is None:
        g = q
        exclude_self = True if exclude_self is None else bool(exclude_self)
    else:
        g = as_embeddings(gallery_emb, "gallery_emb")
        exclude_self = False if exclude_self is None else bool(exclude_self)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query_emb has dimension {q.shape[1]} but gallery_emb "
                         f"has {g.shape[1]}.")
    if exclude_self and q.shape[0] > g.shape[0]:
        raise ValueError("exclude_self=True needs query i to be gallery item i, "
                         f"but there are {q.shape[0]} queries and only "
                         f"{g.shape[0]} gallery items.")
    available = g.shape[0] - int(exclude_self)
    if int(k) != k or k < 1 or k > available:
        raise ValueError(f"k must be an integer in [1, {available}]; got {k!r}.")
    k = int(k)
    gallery = Gallery(g, score)
    chunk = check_chunk_size(chunk_size, q.shape[0], g.shape[0], k)
    indices = np.empty((q.shape[0], k), np.int64)
    values = np.empty((q.shape[0], k), np.float32)
    for start in range(0, q.shape[0], chunk):
        qc = gallery.prepare_queries(q[start:start + chunk])
        v, i = topk_chunk(qc, gallery, start, k, exclude_self)
        indices[start:start + chunk] = i.numpy()
        values[start:start + chunk] = v.numpy()
    return (indices, values) if return_scores else indices
