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


def _row_hashes(x, chunk=65536):
    """A 64-bit hash of every row's bytes (wrapping integer dot product with
    fixed odd weights), computed in chunks so memory stays O(chunk * D)."""
    bits = x.view(np.uint32)
    weights = np.random.default_rng(0x5EED).integers(
        1, 2 ** 62, bits.shape[1], dtype=np.uint64) | np.uint64(1)
    out = np.empty(x.shape[0], np.uint64)
    with np.errstate(over="ignore"):
        for i in range(0, x.shape[0], chunk):
            out[i:i + chunk] = bits[i:i + chunk].astype(np.uint64) @ weights
    return out


def unique_rows(x):
    """``(first, inverse)`` with ``x[first][inverse] == x`` row for row, or
    None when all rows are distinct. ``first`` lists the first occurrence of
    each distinct row in increasing order."""
    if x.shape[0] < 2:
        return None
    _, first, inverse = np.unique(_row_hashes(x), return_index=True,
                                  return_inverse=True)
    if len(first) == x.shape[0]:
        return None
    inverse = inverse.reshape(-1)
    collision = any(
        not np.array_equal(x[i:i + 65536], x[first[inverse[i:i + 65536]]])
        for i in range(0, x.shape[0], 65536))
    if collision:        # astronomically rare: fall back to a byte-wise sort
        rows = np.ascontiguousarray(x).view(
            np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).reshape(-1)
        _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    # np.unique orders by hash; renumber the distinct rows by first position.
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse]


class Gallery:
    """Gallery embeddings prepared once for chunked scoring.

    Exact ties: identical gallery rows are scored once and their score is
    copied to every duplicate (``unique_rows``), so they tie bit for bit
    whatever the matmul kernel does with column order, and the tie rule
    (lower index first) decides between them. Cosine normalisation divides by
    ``sqrt`` (``ops.l2_normalize``), which is correctly rounded on every CPU;
    ``rsqrt`` is not (its approximation differs between processors).

    Args:
        gallery: float array [Ng, D].
        score: "cosine" or "euclidean" (see module docstring).
    """

    def __init__(self, gallery, score="cosine"):
        if score not in _SCORES:
            raise ValueError(f"score must be one of {_SCORES}; got {score!r}.")
        self.score = score
        # + 0 turns -0.0 into +0.0, so numerically equal rows hash alike.
        g = np.asarray(gallery, np.float32) + np.float32(0)
        self.size = int(g.shape[0])
        dedup = unique_rows(g)
        if dedup is None:
            rows, inverse = g, np.arange(self.size)
        else:
            rows, inverse = g[dedup[0]], dedup[1]
        rows = tf.convert_to_tensor(rows, tf.float32)
        if score == "cosine":
            self.embeddings = ops.l2_normalize(rows)
            self.bias = tf.zeros([tf.shape(rows)[0]], tf.float32)
        else:
            self.embeddings = rows
            self.bias = tf.reduce_sum(tf.square(rows), axis=1)
        self.inverse = tf.convert_to_tensor(inverse, tf.int32)
        self.scale = tf.constant(1.0 if score == "cosine" else 2.0, tf.float32)

    @property
    def parts(self):
        """(distinct rows, their bias, row of each gallery item, scale): the
        arguments of ``scores`` after the queries."""
        return self.embeddings, self.bias, self.inverse, self.scale

    def prepare_queries(self, queries):
        q = tf.convert_to_tensor(queries, tf.float32)
        return ops.l2_normalize(q) if self.score == "cosine" else q


def scores(q, rows, bias, inverse, scale, exclude):
    """[c, Ng] scores ``scale * <q, g> - bias`` of prepared queries ``q``.

    ``rows``/``bias`` hold the distinct gallery rows, ``inverse`` [Ng] maps each
    gallery item to its row, ``exclude`` [c] is one gallery index per query
    whose score becomes -inf (-1: none). Graph code, for use inside
    ``tf.function``.
    """
    # scale (1 or 2, a power of two) multiplies the queries: bit for bit the
    # same as scaling the [c, Ng] product, at O(c * D) instead of a pass
    # over the scores. A zero bias (cosine) is not subtracted (x - 0 = x).
    s = tf.matmul(scale * q, rows, transpose_b=True)
    s = tf.cond(tf.reduce_any(tf.not_equal(bias, 0)),
                lambda: s - bias[None, :], lambda: s)
    s = tf.cond(tf.shape(rows)[0] < tf.shape(inverse)[0],
                lambda: tf.gather(s, inverse, axis=1), lambda: s)

    def drop_excluded():
        drop = tf.equal(tf.range(tf.shape(s)[1])[None, :], exclude[:, None])
        return tf.where(drop, tf.constant(-np.inf, s.dtype), s)
    # Searching an index excludes nothing: skip the [c, Ng] mask pass.
    return tf.cond(tf.reduce_any(exclude >= 0), drop_excluded, lambda: s)


def block_size(num_columns, k):
    """Columns per block of ``top_k_blocked``: about sqrt(Ng / k), a power of
    two in [64, 4096], so that both top-k passes stay short."""
    ideal = np.sqrt(max(num_columns, 1) / max(k, 1))
    return int(2 ** np.clip(np.round(np.log2(max(ideal, 1.0))), 6, 12))


def top_k_blocked(s, k, block):
    """``tf.math.top_k(s, k)`` (values, indices), same order and tie rule,
    without running top-k over all Ng columns.

    The columns are cut into blocks of ``block``. Order elements by (value
    descending, column ascending); a block's best element is its maximum at
    its lowest column. Every element of the row's top k lies in one of the k
    blocks whose best elements come first: otherwise k blocks' best elements
    would precede it. So: one cheap ``reduce_max`` per block, top-k over the
    block maxima (ties by lower block = lower columns), the chosen k blocks
    gathered in increasing column order (so position order is column order
    and ``top_k``'s lower-position rule is still the lower-column rule), and
    top-k over k * block candidates. TF's CPU top-k over a long row costs
    several times the matmul that produced it; this costs about one extra
    pass. Falls back to plain top-k when the row is short. Graph code.
    """
    c = tf.shape(s)[0]
    n = tf.shape(s)[1]
    nb = (n + block - 1) // block

    def plain():
        values, column = tf.math.top_k(s, k=k)
        return values, column

    def blocked():
        padded = tf.pad(s, [[0, 0], [0, nb * block - n]],
                        constant_values=-np.inf)
        blocks = tf.reshape(padded, [c, nb, block])
        _, best = tf.math.top_k(tf.reduce_max(blocks, axis=2), k=k)
        best = tf.sort(best, axis=1)                     # column order
        cand = tf.reshape(tf.gather(blocks, best, axis=1, batch_dims=1),
                          [c, k * block])
        values, pos = tf.math.top_k(cand, k=k)
        column = tf.gather(best, pos // block, batch_dims=1) * block + pos % block
        return values, column

    # Padding is -inf and can tie with an excluded (-inf) item only if k
    # reached past every finite score, which k <= available items forbids.
    return tf.cond(nb > 4 * k, blocked, plain)


_SIG = [tf.TensorSpec([None, None], tf.float32),   # queries (prepared)
        tf.TensorSpec([None, None], tf.float32),   # distinct gallery rows
        tf.TensorSpec([None], tf.float32),         # their bias
        tf.TensorSpec([None], tf.int32),           # row of each gallery item
        tf.TensorSpec([], tf.float32),             # scale (1 cosine, 2 euclid)
        tf.TensorSpec([None], tf.int32),           # excluded index per query
        tf.TensorSpec([], tf.int32)]               # k


@tf.function(input_signature=_SIG + [tf.TensorSpec([], tf.int32)])
def _topk_chunk(q, rows, bias, inverse, scale, exclude, k, block):
    return top_k_blocked(scores(q, rows, bias, inverse, scale, exclude), k, block)


def exclusion(start, stop, exclude_self=False, exclude_index=None):
    """The excluded gallery index of queries ``start..stop-1`` ([c] int32)."""
    if exclude_index is not None:
        return tf.constant(exclude_index[start:stop], tf.int32)
    if exclude_self:
        return tf.range(start, stop, dtype=tf.int32)
    return tf.fill([stop - start], -1)


def topk_chunk(q, gallery, start, k, exclude_self=False, exclude_index=None):
    """Top-k (values, indices) of one prepared query chunk (rows ``start``..),
    self (query i = gallery item i) or ``exclude_index`` excluded if given."""
    stop = start + int(q.shape[0])
    return _topk_chunk(q, *gallery.parts,
                       exclusion(start, stop, exclude_self, exclude_index),
                       tf.constant(k, tf.int32),
                       tf.constant(block_size(gallery.size, k), tf.int32))


def search_gallery(gallery, queries, k, chunk_size=None, exclude_self=False,
                   exclude_index=None):
    """Top-k (indices int64 [Nq, k], scores float32 [Nq, k]) of checked
    float32 ``queries`` [Nq, D] against a prepared ``Gallery``, in chunks of
    queries. The gallery is prepared once and searched as often as needed
    (``kd.retrieval.Index`` keeps one). Arguments are not re-validated: see
    ``top_k_neighbours`` for their meaning and checks."""
    k = int(k)
    nq = int(queries.shape[0])
    chunk = check_chunk_size(chunk_size, nq, gallery.size, k)
    indices = np.empty((nq, k), np.int64)
    values = np.empty((nq, k), np.float32)
    for start in range(0, nq, chunk):
        qc = gallery.prepare_queries(queries[start:start + chunk])
        v, i = topk_chunk(qc, gallery, start, k, exclude_self, exclude_index)
        indices[start:start + chunk] = i.numpy()
        values[start:start + chunk] = v.numpy()
    return indices, values


def top_k_neighbours(query_emb, gallery_emb=None, k=5, exclude_self=None,
                     score="cosine", chunk_size=None, return_scores=False,
                     exclude_index=None):
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
        exclude_index: optional int array [Nq]: the gallery index to leave
            out of each query's results (-1 for none), e.g. the query's own
            position when the queries are a subset of the gallery. Replaces
            ``exclude_self`` (give one or the other).

    Returns:
        int64 numpy array [Nq, k] (and float32 scores [Nq, k] if asked). Ties
        are broken by the lower gallery index; identical gallery rows tie
        exactly (see ``Gallery``).
    """
    q = as_embeddings(query_emb, "query_emb")
    if gallery_emb is None:
        g = q
        default_self = True
    else:
        g = as_embeddings(gallery_emb, "gallery_emb")
        default_self = False
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query_emb has dimension {q.shape[1]} but gallery_emb "
                         f"has {g.shape[1]}.")
    if exclude_index is not None:
        if exclude_self:
            raise ValueError("give exclude_self or exclude_index, not both.")
        exclude_self = False
        exclude_index = np.asarray(exclude_index)
        if (exclude_index.shape != (q.shape[0],)
                or not np.issubdtype(exclude_index.dtype, np.integer)):
            raise ValueError(f"exclude_index must be {q.shape[0]} integers (one "
                             f"per query); got {exclude_index.dtype} "
                             f"{exclude_index.shape}.")
        if np.any((exclude_index < -1) | (exclude_index >= g.shape[0])):
            raise ValueError(f"exclude_index entries must be -1 or gallery "
                             f"indices in [0, {g.shape[0]}).")
        excluded = bool(np.any(exclude_index >= 0))
    else:
        exclude_self = default_self if exclude_self is None else bool(exclude_self)
        if exclude_self and q.shape[0] > g.shape[0]:
            raise ValueError("exclude_self=True needs query i to be gallery item "
                             f"i, but there are {q.shape[0]} queries and only "
                             f"{g.shape[0]} gallery items.")
        excluded = exclude_self
    if g.shape[0] == 0:
        raise ValueError("the gallery is empty.")
    available = g.shape[0] - int(excluded)
    if int(k) != k or k < 1 or k > available:
        raise ValueError(f"k must be an integer in [1, {available}] (the items a "
                         f"query can retrieve); got {k!r}.")
    k = int(k)
    indices, values = search_gallery(Gallery(g, score), q, k, chunk_size,
                                     exclude_self, exclude_index)
    return (indices, values) if return_scores else indices
