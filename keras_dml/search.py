"""Exact nearest-neighbour search in chunks of queries, with ``keras.ops``.

The one search engine of keras_dml, at the bottom of the package: the
retrieval and continuous metrics, ``kd.retrieval.Index``'s exact backend,
the retrieval SavedModel export and the plots all rank with it.

Every evaluation in keras_dml ranks a gallery for each query by a score
(higher = closer) and never builds the full [Nq, Ng] matrix: queries are
processed ``chunk_size`` rows at a time, so the working memory is
O(chunk_size * (Ng + k)) on top of the embeddings themselves. The matmul
and the reductions run on the Keras backend's device (PyTorch, or a GPU
under any backend), in one compiled function per chunk; where TensorFlow or
JAX compute on the CPU, the same operations run in numpy instead (the host
path: BLAS product, ``host_top_k``), which is faster there (``host_matmul``).

Scores (``metric=``, the same name as ``kd.retrieval.Index(metric=...)``):
    "cosine":    s(q, g) = <q / |q|, g / |g|>            (zero vectors stay zero)
    "euclidean": s(q, g) = 2 <q, g> - |g|^2 = |q|^2 - |q - g|^2,
                 which orders the gallery exactly as -|q - g| does.

Ranking and ties (one rule everywhere, on every backend): items are ranked
by decreasing score; items with an equal score are ranked by increasing
gallery index. ``keras.ops.top_k`` does not promise an order among equal
values (PyTorch's differs from TensorFlow's and JAX's), so ``top_k_exact``
uses it only for the k largest *values*, which are unambiguous, and picks
and orders the items by explicit keys that are all distinct.

Self exclusion: when the queries are the gallery (query i is gallery item i),
query i's own item gets the score -inf before ranking, i.e. it is excluded by
index. Other items identical to the query (duplicates) are ranked normally.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Tuple

import numpy as np
from keras import ops

from keras_dml import _backend
from keras_dml import ops as dml_ops

DEFAULT_MEMORY_BUDGET = 512 * 1024 ** 2   # bytes per chunk's [chunk, Ng] work

METRICS = ("cosine", "euclidean")

# Rows per block of Gallery.host_self_top_k: a [1024, 1024] product is large
# enough for BLAS to run near peak and its scores (4 MB) stay in cache for the
# row and column passes.
SELF_SEARCH_BLOCK = 1024
# Gallery.host_top_k_by_blocks: [1024, 8192] float32 scores (32 MB) per step
# (alternated against [256..1024] x [4096..16384] at 100k and 1M x 128: within 10 %).
HOST_QUERY_CHUNK = 1024
HOST_COLUMN_BLOCK = 8192


def as_embeddings(x, name):
    """A finite float32 numpy array of shape [N, D], or a clear ValueError."""
    if ops.is_tensor(x):
        x = ops.convert_to_numpy(x)
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape [N, D]; got shape {x.shape}.")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{name} must be numeric; got dtype {x.dtype}.")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return x


def check_ks(ks) -> Tuple[int, ...]:
    """The K of a metric as a non-empty tuple of positive ints (an int is one K)."""
    if isinstance(ks, (int, np.integer)):
        ks = (ks,)
    ks = tuple(ks)
    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers; got {ks!r}.")
    return tuple(int(k) for k in ks)


def query_gallery(query_emb, gallery_emb=None, gallery_labels=None, allow_no_queries=False
                  ) -> Tuple[np.ndarray, np.ndarray, bool]:
    """``(queries, gallery, self_retrieval)``: checked float32 [N, D]
    embeddings (``as_embeddings``) of the same dimension, and whether the
    queries search themselves (``gallery_emb`` None: the gallery is the
    queries, and ``gallery_labels`` must be None too). Refuses an empty
    gallery, and an empty query set unless ``allow_no_queries``."""
    q = as_embeddings(query_emb, "query_emb")
    if q.shape[0] == 0 and not allow_no_queries:
        raise ValueError("the query set must not be empty.")
    if gallery_emb is None:
        if gallery_labels is not None:
            raise ValueError("gallery_labels given without gallery_emb.")
        g = q
    else:
        g = as_embeddings(gallery_emb, "gallery_emb")
        if g.shape[1] != q.shape[1]:
            raise ValueError(f"query_emb has dimension {q.shape[1]} but gallery_emb "
                             f"has {g.shape[1]}.")
    if g.shape[0] == 0:
        raise ValueError("the gallery is empty.")
    return q, g, gallery_emb is None


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
        metric: "cosine" or "euclidean" (see module docstring).
    """

    def __init__(self, gallery, metric: str = "cosine"):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}; got {metric!r}.")
        self.metric = metric
        # + 0 turns -0.0 into +0.0, so numerically equal rows hash alike.
        g = np.asarray(gallery, np.float32) + np.float32(0)
        self.size = int(g.shape[0])
        dedup = unique_rows(g)
        if dedup is None:
            rows, inverse = g, np.arange(self.size)
        else:
            rows, inverse = g[dedup[0]], dedup[1]
        self.has_duplicates = dedup is not None
        self.host_product = host_matmul()
        # What compiled code may depend on (shapes, which steps apply).
        self.spec = (metric, self.has_duplicates, self.size, int(rows.shape[0]),
                     int(rows.shape[1]), self.host_product)
        # Eager, never compiled: Grappler and XLA rewrite x / sqrt(y) into
        # x * rsqrt(y), whose rounding differs between CPUs (ops.l2_normalize).
        rows = ops.convert_to_tensor(rows, "float32")
        if metric == "cosine":
            self.embeddings = dml_ops.l2_normalize(rows)
            self.bias = ops.zeros_like(rows[:, 0])
        else:
            self.embeddings = rows
            self.bias = ops.sum(ops.square(rows), axis=1)
        self.inverse = ops.convert_to_tensor(inverse.astype(np.int32), "int32")
        # A power of two: multiplying the queries by it is exact.
        self.scale_value = 1.0 if metric == "cosine" else 2.0
        self.scale = ops.convert_to_tensor(self.scale_value, "float32")
        # The host path (see host_matmul): numpy copies of the same tensors.
        self.rows_t = self.host_bias = self.host_inverse = None
        if self.host_product:
            self.rows_t = np.ascontiguousarray(ops.convert_to_numpy(self.embeddings).T)
            if metric != "cosine":
                self.host_bias = ops.convert_to_numpy(self.bias)
            if self.has_duplicates:
                self.host_inverse = inverse.astype(np.intp)

    @property
    def parts(self):
        """(distinct rows, their bias, row of each gallery item, scale): the
        arguments of ``scores`` after the queries."""
        return self.embeddings, self.bias, self.inverse, self.scale

    def prepare_queries(self, queries):
        """Queries as the compiled scorer takes them: L2-normalised for
        cosine, eagerly (see __init__)."""
        q = ops.convert_to_tensor(queries, "float32")
        return dml_ops.l2_normalize(q) if self.metric == "cosine" else q

    def _host_queries(self, queries) -> np.ndarray:
        q = ops.convert_to_numpy(self.prepare_queries(queries))
        if self.scale_value != 1.0:
            q = q * np.float32(self.scale_value)
        return q

    def host_top_k_by_blocks(self, queries, k: int, exclude=None):
        """``host_top_k(host_scores(queries, exclude), k)`` without the [c, Ng]
        score matrix: queries in chunks of ``HOST_QUERY_CHUNK`` against
        gallery blocks of ``HOST_COLUMN_BLOCK`` columns, each block's scores
        read once while they are in cache, by a comparison with each row's
        running k-th best (``_RunningTopK``; the first block's exact top k
        seeds it). The score matrix of 1000 queries x 100k items is 400 MB:
        writing it and reading it back for the top-k cost as much as the
        product. Requires no duplicate rows and k <= HOST_COLUMN_BLOCK."""
        k = int(k)
        if self.has_duplicates or not 1 <= k <= min(HOST_COLUMN_BLOCK, self.size):
            raise ValueError("host_top_k_by_blocks needs distinct gallery rows and "
                             f"1 <= k <= {min(HOST_COLUMN_BLOCK, self.size)}; got k={k}.")
        q = self._host_queries(queries)
        exclude = (None if exclude is None
                   else np.asarray(ops.convert_to_numpy(exclude)).astype(np.intp))
        values = np.empty((q.shape[0], k), np.float32)
        columns = np.empty((q.shape[0], k), np.int32)
        for start in range(0, q.shape[0], HOST_QUERY_CHUNK):
            rows = slice(start, start + HOST_QUERY_CHUNK)
            top = None
            for col in range(0, self.size, HOST_COLUMN_BLOCK):
                block = self._host_block_scores(q[rows], col, None if exclude is None
                                                else exclude[rows])
                if top is None:         # seed: the first block's exact top k
                    top = _RunningTopK(block.shape[0], k, np.full(block.shape[0], -np.inf,
                                                                  np.float32), self.size)
                    top.values[:], top.columns[:] = host_top_k(block, k)
                else:
                    top.offer(block, 0, col)
            values[rows], columns[rows] = top.values, top.columns
        return values, columns

    def _host_block_scores(self, q, col, exclude):
        cols = slice(col, min(col + HOST_COLUMN_BLOCK, self.size))
        s = q @ self.rows_t[:, cols]
        if self.host_bias is not None:
            s -= self.host_bias[cols]
        if exclude is not None:
            hit = np.nonzero((exclude >= cols.start) & (exclude < cols.stop))[0]
            s[hit, exclude[hit] - cols.start] = -np.inf
        return s

    def host_scores(self, queries, exclude=None) -> np.ndarray:
        """[c, Ng] float32 numpy scores of raw ``queries`` on the host path
        (``host_matmul()``): the same operations as ``scores`` in the same
        order (normalise eagerly, ``(scale * q) @ rows^T`` by numpy's BLAS,
        ``- bias``, copy duplicates' columns, ``-inf`` at ``exclude`` [c]
        (-1: none)), so every score rounds as it would there."""
        s = self._host_queries(queries) @ self.rows_t
        if self.host_bias is not None:
            s -= self.host_bias
        if self.host_inverse is not None:
            s = np.take(s, self.host_inverse, axis=1)
        if exclude is not None:
            exclude = np.asarray(ops.convert_to_numpy(exclude)).astype(np.intp)
            rows = np.nonzero(exclude >= 0)[0]
            s[rows, exclude[rows]] = -np.inf
        return s

    def can_halve_self_search(self) -> bool:
        """True where ``host_self_top_k`` applies: the host path, cosine
        scores (symmetric: no per-column bias) and no duplicate rows (the
        gallery's items are its distinct rows)."""
        return self.host_product and self.metric == "cosine" and not self.has_duplicates

    def host_self_top_k(self, k: int, block: Optional[int] = None):
        """Self-retrieval top-k from half the Gram matrix (host path).

        Every gallery item is a query that excludes itself. Yields
        ``(start, stop, values [c, k], columns int32 [c, k])`` for
        consecutive blocks of ``block`` rows (default ``SELF_SEARCH_BLOCK``),
        in the tie rule of
        ``host_top_k``. Cosine scores are symmetric, so each block pair
        (I, J >= I) is one product S = E_I E_J^T whose rows are candidates
        for block I and whose columns are candidates for block J: half the
        multiply-adds of scoring every query against the gallery, the cost
        that dominates on a CPU.

        Selection by threshold, so that no row or column of S is sorted: a
        row's running k-th best value (at first a lower bound, its k-th best
        score against the first ``block`` items) only rises, and an entry
        below it can never enter its top k. One comparison pass over S per
        side finds the few entries at or above their row's threshold, and
        only those are merged, by (row, value descending, column ascending). Memory: O(block^2 + Ng * k). Requires
        ``can_halve_self_search()``."""
        if not self.can_halve_self_search():
            raise ValueError("host_self_top_k needs the host path, cosine scores and a "
                             "gallery without duplicate rows (can_halve_self_search()).")
        k, block = int(k), int(block or SELF_SEARCH_BLOCK)
        n = self.size
        if not 1 <= k < n:
            raise ValueError(f"k must be in [1, {n - 1}] for a gallery of {n}; got {k}.")
        e = np.ascontiguousarray(self.rows_t.T)
        top = _RunningTopK(n, k, _self_lower_bound(e, self.rows_t, k, max(block, k + 1)), n)
        starts = range(0, n, block)
        for i in starts:
            rows = slice(i, min(i + block, n))
            for j in starts[i // block:]:
                s = e[rows] @ self.rows_t[:, j:j + block]
                if j == i:
                    np.fill_diagonal(s, -np.inf)        # each query excludes itself
                top.offer(s, i, j)                      # rows of block I
                if j > i:
                    top.offer(s, i, j, by_column=True)  # rows of block J
            yield rows.start, rows.stop, top.values[rows].copy(), top.columns[rows].copy()

    @property
    def tensors(self):
        """The gallery's tensors, passed to compiled functions as arguments
        (not captured: ``jax.jit`` would fold a captured gallery into the
        program as a constant)."""
        return self.embeddings, self.bias, self.inverse

    def scorer(self):
        """``fn(tensors, q, exclude=None)`` -> [c, Ng] scores of prepared
        queries (``prepare_queries``), via ``scores``, skipping the zero
        cosine bias, and the copy when there are no duplicates. It closes
        over constants only, never the gallery, so a cached compiled function
        keeps no gallery alive."""
        cosine = self.metric == "cosine"
        duplicates = self.has_duplicates
        scale = self.scale_value

        def fn(tensors, q, exclude=None):
            rows, bias, inverse = tensors
            return scores(q, rows, None if cosine else bias,
                          inverse if duplicates else None, scale, exclude)
        return fn

    def scores(self, queries, exclude=None):
        """[c, Ng] scores of raw float32 ``queries`` (eager; numpy on the
        host path)."""
        if self.host_product:
            return self.host_scores(queries, exclude)
        return self.scorer()(self.tensors, self.prepare_queries(queries), exclude)

    def compiled(self, key, make):
        """``_backend.function(make(self.metric))``, built once per ``key``
        and gallery ``spec`` in this process (a bounded cache: an evaluation
        every epoch traces or compiles once). ``make(metric)`` returns a
        function that closes over constants only (``self.scorer()`` is one),
        usually called as ``fn(gallery.tensors, ...)``."""
        full_key = (_backend.name(), self.spec, key)
        fn = _COMPILED.pop(full_key, None)
        if fn is None:
            fn = _backend.function(make(self.metric))
        _COMPILED[full_key] = fn                 # most recently used last
        while len(_COMPILED) > _COMPILED_MAX:
            _COMPILED.pop(next(iter(_COMPILED)))
        return fn

    def top_k(self, queries, k, exclude=None):
        """Top-k (values [c, k], indices int32 [c, k]) of raw float32
        ``queries`` against the whole gallery, ``exclude`` [c] (or None)
        excluded. Numpy arrays on the host path."""
        k = int(k)
        if self.host_product:
            if not self.has_duplicates and k <= min(HOST_COLUMN_BLOCK, self.size):
                return self.host_top_k_by_blocks(queries, k, exclude)
            return host_top_k(self.host_scores(queries, exclude), k)
        block = block_size(self.size, k)

        scorer = self.scorer()

        def make(metric):
            def fn(tensors, q, exclude):
                return top_k_blocked(scorer(tensors, q, exclude), k, block)
            return fn
        return self.compiled(("top_k", k), make)(
            self.tensors, self.prepare_queries(queries), exclude)


_COMPILED = {}
_COMPILED_MAX = 32



def host_matmul():
    """True where scoring and top-k run on the host path (numpy) rather than
    in the backend: TensorFlow or JAX computing on the CPU. Their CPU matmul
    (Eigen) ran at 0.45x OpenBLAS's speed on this project's 2-core machine
    (800 x 256 by 256 x 20k, alternated), the search spends most of its time
    in the product, and handing a numpy product to a compiled top-k cost a
    [c, Ng] copy plus a slower top-k than ``host_top_k``. PyTorch's CPU matmul
    is a BLAS already; on a GPU everything stays on the device."""
    return _backend.name() in ("tensorflow", "jax") and _backend.computes_on_cpu()


def scores(q, rows, bias, inverse, scale, exclude):
    """[c, Ng] scores ``scale * <q, g> - bias`` of prepared queries ``q``.

    ``rows``/``bias`` hold the distinct gallery rows, ``inverse`` [Ng] maps each
    gallery item to its row, ``exclude`` [c] is one gallery index per query
    whose score becomes -inf (-1: none). ``bias``, ``inverse`` and
    ``exclude`` may be None (zero bias, all rows distinct, nothing
    excluded). ``keras.ops`` only: runs eagerly, in ``tf.function`` (the
    SavedModel export) and under ``jax.jit``. ``Gallery.host_scores`` is the
    same computation in numpy.
    """
    # scale (1 or 2, a power of two) multiplies the queries: bit for bit the
    # same as scaling the [c, Ng] product, at O(c * D) instead of a pass
    # over the scores.
    s = ops.matmul(scale * q, ops.transpose(rows))
    if bias is not None:
        s = s - ops.expand_dims(bias, 0)
    if inverse is not None and s.shape[1] != inverse.shape[0]:
        s = ops.take(s, inverse, axis=1)       # duplicates copy their row's score
    if exclude is not None:
        n = s.shape[1]
        drop = ops.equal(ops.expand_dims(ops.arange(n, dtype="int32"), 0),
                         ops.expand_dims(ops.cast(exclude, "int32"), 1))
        s = ops.where(drop, ops.cast(-np.inf, s.dtype), s)
    return s


def take_rows(x, index):
    """``x[i, index[i, j]]`` for a 2-D ``x`` [c, n] and int32 ``index``
    [c, m] (``take_along_axis(x, index, axis=1)``, as one flat gather: the
    generic version costs many small ops per call on some backends)."""
    n = x.shape[1]
    row = ops.cumsum(ops.ones_like(index[:, :1]), axis=0) - 1     # [c, 1]
    return ops.take(ops.reshape(x, [-1]), row * n + index, axis=0)


def _stable_order_desc(v):
    """The permutation [c, k] that sorts each row of ``v`` by decreasing
    value, equal values keeping their order (a stable sort).

    ``keras.ops.argsort`` is not stable on every backend, so it only ever
    sorts distinct keys: first the values (ties in any order) to number the
    distinct values of each row (0 = largest), then ``number * k + position``.
    """
    k = v.shape[1]
    if k == 1:
        return ops.zeros_like(v, "int32")
    order = ops.cast(ops.argsort(-v, axis=1), "int32")     # ties: any order
    sv = take_rows(v, order)
    new_value = ops.cast(ops.not_equal(sv[:, 1:], sv[:, :-1]), "int32")
    number = ops.concatenate(
        [ops.zeros_like(new_value[:, :1]), ops.cumsum(new_value, axis=1)], axis=1)
    # order is a permutation (distinct keys): its argsort is its inverse.
    number = take_rows(number, ops.cast(ops.argsort(order, axis=1), "int32"))
    position = ops.expand_dims(ops.arange(k, dtype="int32"), 0)
    return ops.cast(ops.argsort(number * k + position, axis=1), "int32")


def top_k_exact(s, k):
    """(values [c, k], columns int32 [c, k]) of the k largest entries of
    every row of ``s`` [c, n], ordered by (value descending, column
    ascending), on every backend.

    ``keras.ops.top_k`` gives the k largest values; whichever entries it
    picked among equal ones, the values are the same. With t the k-th value,
    the answer is every entry > t (fewer than k) and the lowest-column
    entries == t. One more ``top_k`` over integer keys finds them: key
    ``2n - column`` above t, ``n - column`` at t, 0 below, so the k largest
    keys are distinct and positive. They come out above-t first, each group
    in column order; a stable sort by value finishes the ranking.
    Requires k <= n < 2^30. ``keras.ops`` only (graph- and jit-safe).
    """
    n = s.shape[1]
    values = ops.top_k(s, k)[0]
    kth = values[:, k - 1:k]
    reverse = ops.expand_dims(n - ops.arange(n, dtype="int32"), 0)   # [1, n]
    zero = ops.zeros_like(reverse)
    key = ops.where(s > kth, reverse + n, ops.where(s == kth, reverse, zero))
    column = ops.cast(ops.top_k(key, k)[1], "int32")
    picked = take_rows(s, column)
    order = _stable_order_desc(picked)
    return take_rows(picked, order), take_rows(column, order)


_HOST_THREADS = max(1, min(os.cpu_count() or 1, 8))
_HOST_POOL: Optional[ThreadPoolExecutor] = None


def _host_top_k_blocked(s, k):
    """``_host_top_k_rows`` by blocks (the argument of ``top_k_blocked``):
    one max pass over the row, the exact top k of the block maxima, and the
    exact top k of the k chosen blocks' entries, gathered in column order."""
    c, n = s.shape
    block = block_size(n, k)
    nb = -(-n // block)
    if nb <= 4 * k:
        return _host_top_k_rows(s, k)
    if nb * block > n:        # -inf padding: see top_k_blocked
        s = np.concatenate([s, np.full((c, nb * block - n), -np.inf, s.dtype)], axis=1)
    blocks = s.reshape(c, nb, block)
    _, best = _host_top_k_rows(blocks.max(axis=2), k)
    best = np.sort(best, axis=1)                          # column order
    candidates = np.take_along_axis(blocks, best[:, :, None].astype(np.intp), 1)
    values, position = _host_top_k_rows(candidates.reshape(c, k * block), k)
    column = np.take_along_axis(best, position // block, 1) * block + position % block
    return values, column.astype(np.int32)


def _host_top_k_rows(s, k):
    c, n = s.shape
    if k >= n:
        columns = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(s, columns, 1), columns.astype(np.int32)
    kth = np.partition(s, n - k, axis=1)[:, n - k:n - k + 1]
    rows, columns = np.nonzero(s >= kth)      # row-major: rows ascending
    values = s[rows, columns]
    order = np.lexsort((columns, -values, rows))
    counts = np.bincount(rows, minlength=c)
    pick = (np.cumsum(counts) - counts)[:, None] + np.arange(k)
    return values[order][pick], columns[order][pick].astype(np.int32)


def host_top_k(s: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """``top_k_exact`` in numpy: (values [c, k], columns int32 [c, k]) of the
    k largest entries of every row of ``s`` [c, n] (finite or -inf), ordered
    by (value descending, column ascending).

    With t the k-th largest value of a row (``np.partition``: O(n), no sort),
    the answer is every entry > t (fewer than k) and the lowest-column
    entries == t: the entries >= t (usually exactly k) are sorted by (row,
    -value, column) and the first k of each row kept. Long rows go by blocks
    first, as in ``top_k_blocked`` (one max pass, then two short
    selections), which costs a fraction of a partition. Rows are split over
    threads: numpy releases the GIL in partition, comparison and nonzero, and
    the selection is a memory-bound pass that one core does not saturate.
    """
    global _HOST_POOL
    c, n = s.shape
    parts = min(_HOST_THREADS, c) if c * n >= (1 << 20) else 1
    if parts <= 1:
        return _host_top_k_blocked(s, k)
    if _HOST_POOL is None:
        _HOST_POOL = ThreadPoolExecutor(_HOST_THREADS, thread_name_prefix="kd-top-k")
    bounds = np.linspace(0, c, parts + 1).astype(int)
    results = list(_HOST_POOL.map(lambda i: _host_top_k_blocked(s[bounds[i]:bounds[i + 1]], k),
                                  range(parts)))
    return (np.concatenate([v for v, _ in results]),
            np.concatenate([i for _, i in results]))


def _self_lower_bound(e, rows_t, k, m):
    """[n] a lower bound of every item's k-th best score against the others:
    its k-th best against the first m items (itself excluded), m > k."""
    n = e.shape[0]
    m = min(m, n)
    bound = np.empty(n, np.float32)
    for start in range(0, n, 8192):
        s = e[start:start + 8192] @ rows_t[:, :m]
        own = np.arange(start, min(start + 8192, m))
        s[own - start, own] = -np.inf
        bound[start:start + 8192] = np.partition(s, m - k, axis=1)[:, m - k]
    return bound


class _RunningTopK:
    """Each row's best k (value descending, column ascending) over candidate
    score blocks offered to each row in increasing column blocks
    (``Gallery.host_self_top_k``)."""

    def __init__(self, n, k, lower_bound, num_columns):
        self.k = k
        self.sentinel = num_columns                     # after every real column
        self.values = np.full((n, k), -np.inf, np.float32)
        self.columns = np.full((n, k), num_columns, np.int32)
        self.floor = lower_bound

    def offer(self, s, row0, col0, by_column=False):
        """Candidates from a score block s [r, c]: rows row0.. against
        columns col0.., or with ``by_column`` the columns col0.. as the
        queries against the rows row0.. (s^T, read in place: no transposed
        copy)."""
        # flatnonzero: a 2-D nonzero costs ten times as much on a sparse mask.
        width = s.shape[1]
        if by_column:
            threshold = self._threshold(slice(col0, col0 + width))
            flat = np.flatnonzero(s >= threshold[None, :])
            r, c = np.divmod(flat, width)
            by_query = np.argsort(c, kind="stable")     # group by query, rows ascending
            flat, r, c = flat[by_query], r[by_query], c[by_query]
            self._merge(col0 + c, s.ravel()[flat], row0 + r)
        else:
            threshold = self._threshold(slice(row0, row0 + s.shape[0]))
            flat = np.flatnonzero(s >= threshold[:, None])
            r, c = np.divmod(flat, width)
            self._merge(row0 + r, s.ravel()[flat], col0 + c)

    def _threshold(self, rows):
        # An entry below a row's running k-th best (or its lower bound) can
        # never enter the top k; one equal to it may (a lower column).
        return np.maximum(self.floor[rows], self.values[rows, -1])

    def _merge(self, row, value, column):
        """Merge candidates (grouped by ``row``, columns ascending within a
        row, every one above the row's running columns: offers reach a row
        in increasing column blocks) into the running lists: a stable sort
        by value of [running, new] per row then keeps the tie rule."""
        if row.size == 0:
            return
        k = self.k
        touched, first, counts = np.unique(row, return_index=True, return_counts=True)
        slot = k + np.arange(row.size) - np.repeat(first, counts)
        which = np.repeat(np.arange(touched.size), counts)
        values = np.full((touched.size, k + int(counts.max())), -np.inf, np.float32)
        columns = np.full(values.shape, self.sentinel, np.int32)
        values[:, :k] = self.values[touched]
        columns[:, :k] = self.columns[touched]
        values[which, slot] = value
        columns[which, slot] = column
        pick = np.argsort(-values, axis=1, kind="stable")[:, :k]
        self.values[touched] = np.take_along_axis(values, pick, 1)
        self.columns[touched] = np.take_along_axis(columns, pick, 1)


def block_size(num_columns, k):
    """Columns per block of ``top_k_blocked``: about sqrt(Ng / k), a power of
    two in [64, 4096], so that both top-k passes stay short."""
    ideal = np.sqrt(max(num_columns, 1) / max(k, 1))
    return int(2 ** np.clip(np.round(np.log2(max(ideal, 1.0))), 6, 12))


def top_k_blocked(s, k, block):
    """``top_k_exact(s, k)`` (values, columns int32), same order and tie
    rule, without running top-k over all Ng columns.

    The columns are cut into blocks of ``block``. Order elements by (value
    descending, column ascending); a block's best element is its maximum at
    its lowest column. Every element of the row's top k lies in one of the k
    blocks whose best elements come first: otherwise k blocks' best elements
    would precede it. So: one cheap max per block, the exact top k of the
    block maxima (ties by lower block = lower columns), the chosen k blocks
    gathered in increasing column order (so position order is column order
    and the lower-position rule is still the lower-column rule), and the
    exact top k of the k * block candidates. A CPU top-k over a long row
    costs several times the matmul that produced it; this costs about one
    extra pass. Falls back to ``top_k_exact`` when the row is short.
    ``k`` and ``block`` are Python ints; ``keras.ops`` only.
    """
    n = s.shape[1]
    nb = -(-n // block)
    if nb <= 4 * k:
        return top_k_exact(s, k)
    # Padding is -inf and can tie with an excluded (-inf) item only if k
    # reached past every finite score, which k <= available items forbids
    # (and the padding's higher columns would lose the tie anyway).
    if nb * block > n:
        s = ops.pad(s, [[0, 0], [0, nb * block - n]], constant_values=-np.inf)
    blocks = ops.reshape(s, [-1, nb, block])
    _, best = top_k_exact(ops.max(blocks, axis=2), k)
    best = ops.sort(best, axis=1)                       # column order
    row = ops.cumsum(ops.ones_like(best[:, :1]), axis=0) - 1          # [c, 1]
    cand = ops.take(ops.reshape(blocks, [-1, block]), row * nb + best, axis=0)
    values, pos = top_k_exact(ops.reshape(cand, [-1, k * block]), k)
    column = take_rows(best, pos // block) * block + pos % block
    return values, column


def padded_rows(c, chunk, total):
    """Rows that a chunk of ``c`` of ``total`` queries is padded to: ``chunk``
    when there are several chunks (the last one takes the others' shape),
    else the next power of two. A backend that compiles per input shape
    (``jax.jit``) then sees a few shapes, not one per query count; the
    padding rows are zeros whose results are dropped (each row is ranked on
    its own)."""
    if total > chunk:
        return chunk
    return min(chunk, 1 << (c - 1).bit_length())


def pad_rows(x, rows, value=0):
    """numpy ``x`` with ``rows - len(x)`` rows of ``value`` appended."""
    extra = rows - x.shape[0]
    if extra <= 0:
        return x
    return np.concatenate([x, np.full((extra,) + x.shape[1:], value, x.dtype)])


def exclusion(start, stop, exclude_self=False, exclude_index=None, rows=None):
    """The excluded gallery index of queries ``start..stop-1`` ([c] int32,
    -1 for none, padded with -1 to ``rows``), or None when nothing is
    excluded."""
    if exclude_index is not None:
        index = np.asarray(exclude_index[start:stop], np.int32)
    elif exclude_self:
        index = np.arange(start, stop, dtype=np.int32)
    else:
        return None
    return ops.convert_to_tensor(pad_rows(index, rows or 0, -1), "int32")


def chunk_top_k(gallery, queries, start, stop, chunk, k, exclude_self=False,
                exclude_index=None):
    """Top-k (values float32 [c, k], indices int64 [c, k], numpy) of the
    checked float32 queries ``queries[start:stop]`` against ``gallery``,
    query i being gallery item i with ``exclude_self``, or ``exclude_index``
    excluded if given; padded to ``padded_rows(c, chunk)`` rows."""
    c = stop - start
    # Padding keeps a compiling backend to a few shapes; the host path needs none.
    rows = c if gallery.host_product else padded_rows(c, chunk, queries.shape[0])
    v, i = gallery.top_k(pad_rows(queries[start:stop], rows), k, exclusion(start, stop, exclude_self, exclude_index,
                                         rows))
    return (ops.convert_to_numpy(v)[:c],
            ops.convert_to_numpy(i)[:c].astype(np.int64))


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
        stop = min(start + chunk, nq)
        values[start:stop], indices[start:stop] = chunk_top_k(
            gallery, queries, start, stop, chunk, k, exclude_self, exclude_index)
    return indices, values


def top_k_neighbours(query_emb, gallery_emb=None, k=5, exclude_self=None,
                     metric="cosine", chunk_size=None, return_scores=False,
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
        metric: "cosine" (L2-normalised dot product) or "euclidean"
            (``2 <q, g> - |g|^2``: the order of increasing distance).
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
    q, g, default_self = query_gallery(query_emb, gallery_emb, allow_no_queries=True)
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
    available = g.shape[0] - int(excluded)
    if int(k) != k or k < 1 or k > available:
        raise ValueError(f"k must be an integer in [1, {available}] (the items a "
                         f"query can retrieve); got {k!r}.")
    k = int(k)
    indices, values = search_gallery(Gallery(g, metric), q, k, chunk_size,
                                     exclude_self, exclude_index)
    return (indices, values) if return_scores else indices
