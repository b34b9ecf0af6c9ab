"""In-process search engines of ``kd.retrieval.Index``'s memory store:
exact (``kd.search``, ``keras.ops``, any Keras backend) and faiss.

An engine holds a searchable form of the store's vectors and answers
``search(queries, k, subset) -> (positions [N, k] int64, scores [N, k]
float32)``, where a position is the row in the store's insertion-ordered
arrays and scores are "higher is closer":

    cosine:    <q/|q|, g/|g|>
    euclidean: -|q - g|^2

Ties (equal scores) go to the lower position, i.e. the item added first.
``subset`` (filtered search) restricts the result to some positions: the
exact engine scores only those rows (the mask is applied before top-k), the
faiss engine passes an ``IDSelectorBatch`` of their faiss ids. Fewer hits
than k are padded with position -1 and score -inf. The store keeps the raw
vectors itself; engines are rebuilt from them when that is simpler than
updating (exact after any change, faiss HNSW after a removal).
"""

import numpy as np
from keras import ops

from keras_dml import ops as dml_ops
from keras_dml import search as _search

METRICS = _search.METRICS
BACKENDS = ("exact", "faiss", "milvus")


def import_faiss():
    """The faiss module, or an ImportError saying how to install it."""
    try:
        import faiss
    except ImportError as e:
        raise ImportError(
            "backend='faiss' needs the faiss-cpu package: pip install "
            f"'keras_dml[index]' (or pip install faiss-cpu). ({e})") from None
    return faiss


def l2_normalized(x, chunk=65536):
    """float32 numpy ``x / sqrt(max(|x|^2, 1e-12))`` row-wise: the shared
    ``kd.ops.l2_normalize`` (eager, so x / sqrt stays a division), in
    chunks of rows so that a million vectors need no second full copy on
    the Keras backend."""
    x = np.asarray(x, np.float32)
    out = np.empty_like(x)
    for i in range(0, len(x), chunk):
        out[i:i + chunk] = ops.convert_to_numpy(
            dml_ops.l2_normalize(ops.convert_to_tensor(x[i:i + chunk])))
    return out


def pad_hits(positions, scores, k):
    """Widen [N, m] hits (m <= k) to [N, k] with -1 / -inf."""
    n, m = positions.shape
    if m == k:
        return positions, scores
    p = np.full((n, k), -1, np.int64)
    s = np.full((n, k), -np.inf, np.float32)
    p[:, :m], s[:, :m] = positions, scores
    return p, s


EXACT_MEMORY_BUDGET = 1 << 30


class ExactBackend:
    """Exact search with ``kd.search`` (chunked matmul + blocked top-k): the
    same engine, scores and tie rule as the retrieval metrics. Working
    memory per chunk of queries is about ``chunk * Ng * 8`` bytes (the
    scores and their padded copy); the chunk is sized to ``memory_budget``
    (1 GiB: 128 queries at 1M items, where larger chunks stop paying off)
    and at most 1024 queries. A filtered search builds a gallery of the
    allowed rows only (cached for repeated searches with the same filter)."""

    name = "exact"

    def __init__(self, dim, metric, chunk_size=None,
                 memory_budget=EXACT_MEMORY_BUDGET):
        self.dim = dim
        self.metric = metric
        self.chunk_size = chunk_size
        self.memory_budget = memory_budget
        self._vectors = np.zeros((0, dim), np.float32)
        self._gallery = None
        self._filtered = None          # (key, positions, Gallery)

    def params(self):
        return {}

    def reset(self, vectors, seq):
        """Called after every change with the store's full arrays; the
        prepared gallery is rebuilt lazily at the next search."""
        del seq
        self._vectors = vectors
        self._gallery = None
        self._filtered = None

    def add(self, vectors, seq, all_vectors, all_seq):
        self.reset(all_vectors, all_seq)

    def remove(self, seq, all_vectors, all_seq):
        self.reset(all_vectors, all_seq)

    def _search(self, gallery, queries, k):
        chunk = self.chunk_size
        if chunk is None:
            chunk = min(1024, _search.auto_chunk_size(
                len(queries), gallery.size, k, bytes_per_entry=8,
                memory_budget=self.memory_budget))
        positions, scores = _search.search_gallery(gallery, queries, k,
                                                   chunk_size=chunk)
        if self.metric == "euclidean":
            # kd.search scores 2<q,g> - |g|^2 = |q|^2 - |q-g|^2 (the same
            # order); subtracting |q|^2 reports -|q-g|^2.
            scores = scores - np.einsum("ij,ij->i", queries, queries)[:, None]
        return positions, scores

    def search(self, queries, k, subset=None, subset_key=None):
        """``subset``: allowed positions (sorted int64), or None for all;
        ``subset_key``: a hashable naming it, for the cache."""
        if subset is None:
            if self._gallery is None:
                self._gallery = _search.Gallery(self._vectors, self.metric)
            return self._search(self._gallery, queries, k)
        if len(subset) == 0:
            return pad_hits(np.zeros((len(queries), 0), np.int64),
                            np.zeros((len(queries), 0), np.float32), k)
        if self._filtered is None or self._filtered[0] != subset_key:
            self._filtered = (subset_key, subset,
                              _search.Gallery(self._vectors[subset], self.metric))
        _, subset, gallery = self._filtered
        positions, scores = self._search(gallery, queries, min(k, len(subset)))
        return pad_hits(subset[positions], scores, k)

    def serialize(self):
        return None


class FaissBackend:
    """A faiss index built from a factory string ("Flat", "IVF1024,Flat",
    "HNSW32", "IVF4096,PQ32", ...) whose ids are the items' insertion
    sequence numbers, so removals never renumber (IVF indexes hold ids
    natively, the others are wrapped in an ``IndexIDMap2``).

    Cosine: vectors are L2-normalised and searched by inner product;
    euclidean: ``METRIC_L2`` (squared distances, reported negated).
    Indexes that need training (IVF, PQ) are trained on the first ``add``,
    on a seeded random sample of ``train_size`` vectors (default
    ``min(N, max(50 * nlist, 10000))``; faiss wants >= 39 per centroid).
    ``nprobe`` (IVF) and ``ef_search`` (HNSW efSearch) are set at search
    time. HNSW cannot remove vectors; removing from it rebuilds the graph.
    faiss may return fewer than k hits (IVF with a small nprobe): the missing
    entries have position -1 and score -inf. Filtered search passes an
    ``IDSelectorBatch`` of the allowed ids in the search parameters.
    """

    name = "faiss"

    def __init__(self, dim, metric, factory="Flat", nprobe=None, ef_search=None,
                 train_size=None, blob=None):
        self.faiss = import_faiss()
        self.dim = dim
        self.metric = metric
        self.factory = factory
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.train_size = train_size
        if blob is not None:
            self.index = self.faiss.deserialize_index(np.frombuffer(blob, np.uint8))
            if self.index.d != dim:
                raise ValueError(f"the saved faiss index has dimension "
                                 f"{self.index.d}, the manifest says {dim}.")
        else:
            self.index = self._new_index()
        self._seq = None

    def _new_index(self):
        faiss = self.faiss
        metric = (faiss.METRIC_INNER_PRODUCT if self.metric == "cosine"
                  else faiss.METRIC_L2)
        try:
            inner = faiss.index_factory(self.dim, self.factory, metric)
        except RuntimeError as e:
            raise ValueError(f"faiss cannot build index {self.factory!r}: "
                             f"{str(e).strip().splitlines()[-1]}") from None
        # IVF indexes store ids themselves and remove by id without
        # renumbering; an IDMap over them would renumber its map but not the
        # lists. Others (Flat, HNSW, PQ) get an IDMap2.
        if faiss.try_extract_index_ivf(inner) is not None:
            return inner
        return faiss.IndexIDMap2(inner)

    def params(self):
        return {"faiss_factory": self.factory, "nprobe": self.nprobe,
                "ef_search": self.ef_search, "train_size": self.train_size}

    def _prepare(self, x):
        x = np.ascontiguousarray(x, np.float32)
        return l2_normalized(x) if self.metric == "cosine" else x

    def _train(self, vectors):
        if self.index.is_trained:
            return
        n = len(vectors)
        size = self.train_size
        if size is None:
            ivf = self.faiss.try_extract_index_ivf(self.index)
            nlist = ivf.nlist if ivf is not None else 0
            size = max(50 * nlist, 10000)
        size = min(n, int(size))
        sample = vectors
        if size < n:
            pick = np.sort(np.random.default_rng(0).choice(n, size, replace=False))
            sample = vectors[pick]
        try:
            self.index.train(self._prepare(sample))
        except RuntimeError as e:
            raise ValueError(
                f"faiss could not train {self.factory!r} on {size} vectors "
                f"(add more vectors at once, or use a smaller index): "
                f"{str(e).strip().splitlines()[-1]}") from None

    def reset(self, vectors, seq):
        """Rebuild from scratch (keeping a trained quantizer's training)."""
        if self.index.is_trained and "HNSW" not in self.factory:
            self.index.reset()
        else:
            self.index = self._new_index()
            if len(vectors):
                self._train(vectors)
        if len(vectors):
            self.index.add_with_ids(self._prepare(vectors),
                                    np.ascontiguousarray(seq, np.int64))
        self._seq = seq

    def add(self, vectors, seq, all_vectors, all_seq):
        self._train(vectors)
        x = self._prepare(vectors)
        self.index.add_with_ids(x, np.ascontiguousarray(seq, np.int64))
        self._seq = all_seq

    def remove(self, seq, all_vectors, all_seq):
        try:
            self.index.remove_ids(np.ascontiguousarray(seq, np.int64))
        except RuntimeError:          # HNSW: no removal; rebuild
            self.reset(all_vectors, all_seq)
        self._seq = all_seq

    def attach(self, all_seq):
        """After loading: the store's sequence numbers."""
        self._seq = all_seq

    def _set_search_parameters(self):
        space = self.faiss.ParameterSpace()
        if self.nprobe is not None:
            space.set_index_parameter(self.index, "nprobe", int(self.nprobe))
        if self.ef_search is not None:
            space.set_index_parameter(self.index, "efSearch", int(self.ef_search))

    def _selector_parameters(self, allowed_seq):
        """Search parameters restricting the search to ``allowed_seq``: the
        kind the (inner) index reads, carrying its nprobe / efSearch (faiss
        uses the parameters' values, not the index's, when given some)."""
        faiss = self.faiss
        inner = self.index
        if isinstance(inner, faiss.IndexIDMap2):
            inner = faiss.downcast_index(inner.index)
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed_seq, np.int64))
        ivf = faiss.try_extract_index_ivf(inner)
        if ivf is not None:
            params = faiss.SearchParametersIVF()
            params.nprobe = int(self.nprobe or ivf.nprobe)
        elif hasattr(inner, "hnsw"):
            params = faiss.SearchParametersHNSW()
            params.efSearch = int(self.ef_search or inner.hnsw.efSearch)
        else:
            params = faiss.SearchParameters()
        params.sel = selector
        return params, selector        # the selector must outlive the search

    def search(self, queries, k, subset=None, subset_key=None):
        del subset_key
        self._set_search_parameters()
        x = self._prepare(queries)
        if subset is None:
            scores, seq = self.index.search(x, int(k))
        elif len(subset) == 0:
            return pad_hits(np.zeros((len(queries), 0), np.int64),
                            np.zeros((len(queries), 0), np.float32), k)
        else:
            params, _selector = self._selector_parameters(self._seq[subset])
            # faiss.contrib.torch_utils (imported by pytorch-metric-learning)
            # replaces Index.search with a wrapper that drops `params`; the
            # original stays reachable as search_numpy.
            search = getattr(self.index, "search_numpy", self.index.search)
            try:
                scores, seq = search(x, int(k), params=params)
            except RuntimeError as e:
                raise ValueError(
                    f"faiss index {self.factory!r} cannot search with a filter: "
                    f"{str(e).strip().splitlines()[-1]}") from None
        if self.metric == "euclidean":
            scores = -scores
        scores = np.where(seq < 0, np.float32(-np.inf), scores).astype(np.float32)
        positions = np.searchsorted(self._seq, seq)
        positions = np.where(seq < 0, -1, positions).astype(np.int64)
        # faiss orders ties as its heap leaves them; the index's rule is the
        # lower position. Missing hits (-1, -inf) stay last.
        order = np.lexsort((np.where(positions < 0, np.iinfo(np.int64).max,
                                     positions), -scores), axis=1)
        return (np.take_along_axis(positions, order, 1),
                np.take_along_axis(scores, order, 1))

    def serialize(self):
        return self.faiss.serialize_index(self.index).tobytes()
