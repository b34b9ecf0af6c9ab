"""``kd.retrieval.Index``: labelled, id'd embeddings with exact, faiss or
Milvus search.

    index = kd.retrieval.Index(128)                       # exact, cosine
    index.add(gallery_emb, labels=gallery_labels, metadata=[{"path": p} for p in paths])
    result = index.search(query_emb, k=10)    # .ids, .scores, .labels  [N, k]
    result = index.search(query_emb, k=10, labels=[3, 7])   # only items labelled 3 or 7
    index.save("out/index"); index = kd.retrieval.Index.load("out/index")
    decision = index.match(query_emb, threshold)  # .labels [N] (-1 unknown), .scores, .ids
    with kd.retrieval.Index(128, backend="milvus", uri="out/gallery.db") as index: ...

The ``Index`` is a front (argument checks, default ids, search results,
match, save/load dispatch) over a store: ``memory.MemoryStore`` (backends
"exact" and "faiss": arrays in this process) or ``milvus.MilvusStore``
(backend "milvus": a Milvus collection; nothing that grows with N stays
here).

Semantics (every backend):

* ids are int64 user ids, unique in the index; by default an ``add`` of N
  vectors takes ``next_id .. next_id + N - 1``, where ``next_id`` starts at 0
  and is always one more than the largest id ever added (so ids continue
  across adds and are not reused after a removal). An ``add`` with ids
  already in the index replaces those items (upsert).
* labels are int64 class ids; -1 means "no label" (the default).
* metadata is one JSON-serialisable value per item (e.g. ``{"path": ...}``).
* scores are higher-is-closer: cosine similarity for ``metric="cosine"``,
  the negated squared distance ``-|q - g|^2`` for ``metric="euclidean"``.
* ranking: decreasing score; equal scores by increasing insertion position
  (the item added first wins; with the default ids, the lower id). This is
  ``kd.search``'s rule, whose engine the exact backend is. Milvus has no
  insertion order: equal scores go to the lower id (``rerank=True`` makes
  the scores exact first).
* ``search(..., labels=[...])`` returns only items with those labels
  (exact: only those rows are scored; faiss: an ID selector; milvus: a
  filter expression), padded with id -1, score -inf where fewer match.
* every argument is validated before anything changes, so a failed ``add``
  or ``remove`` leaves the index as it was (a milvus ``add`` killed midway
  leaves each row fully written or absent; add again to finish: upsert).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, Iterable, List, Literal, Optional, Sequence, Union

import numpy as np

from keras_dml._types import TensorLike
from keras_dml.retrieval import storage
from keras_dml.retrieval.backends import BACKENDS, METRICS
from keras_dml.retrieval.memory import MemoryStore, first_values
from keras_dml.retrieval.milvus import DEFAULT_TIMEOUT, MAX_LIMIT, MilvusStore
from keras_dml.search import as_embeddings


@dataclasses.dataclass
class SearchResult:
    """Top-k neighbours, best first: ``ids`` int64 [N, k], ``scores``
    float32 [N, k] (higher = closer), ``labels`` int64 [N, k]. An ANN
    backend that finds fewer than k items pads with id -1, score -inf,
    label -1."""
    ids: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


@dataclasses.dataclass
class MatchResult:
    """One decision per query: ``labels`` int64 [N] (the nearest item's label
    if its score reaches the threshold, else -1 = unknown), ``scores``
    float32 [N] (the nearest score), ``ids`` int64 [N] (the nearest item,
    accepted or not), ``accepted`` bool [N]."""
    labels: np.ndarray
    scores: np.ndarray
    ids: np.ndarray
    accepted: np.ndarray


def _as_int64(values, name, n):
    a = np.asarray(values)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}] (one per vector); got "
                         f"shape {a.shape}.")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise ValueError(f"{name} must be integers; got non-integral floats.")
    elif a.dtype.kind not in "iub" and n:
        raise ValueError(f"{name} must be integers; got dtype {a.dtype}.")
    return a.astype(np.int64)


def _check_metadata(metadata, n):
    if metadata is None:
        return [None] * n
    metadata = list(metadata)
    if len(metadata) != n:
        raise ValueError(f"metadata must have one entry per vector ({n}); got "
                         f"{len(metadata)}.")
    for i, m in enumerate(metadata):
        try:
            json.dumps(m)
        except (TypeError, ValueError) as e:
            raise ValueError(f"metadata[{i}] is not JSON-serialisable: {e}") from None
    return metadata


_first = first_values


class Index:
    """Embeddings with ids, labels and metadata, searchable by nearest
    neighbour: a front (checks, ids, search, match, results) over a store.

    Stores: "exact" and "faiss" keep everything in this process
    (``kd.retrieval.memory``); "milvus" keeps it in a Milvus collection
    (``kd.retrieval.milvus``), so the ``Index`` object holds nothing that
    grows with the gallery.

    Args:
        dim: embedding dimension D.
        metric: "cosine" (vectors are compared after L2 normalisation) or
            "euclidean".
        backend: "exact" (``kd.search``, ``keras.ops`` on the Keras backend
            in use), "faiss" (approximate or exact, ``faiss_factory``; needs
            faiss-cpu) or "milvus" (``uri``, ``collection``; needs pymilvus,
            and milvus-lite for a local .db).
        faiss_factory: a ``faiss.index_factory`` string, e.g. "Flat",
            "IVF1024,Flat", "HNSW32", "IVF4096,PQ32".
        nprobe: IVF lists visited per query (faiss default 1; Milvus's
            default for IVF_FLAT).
        ef_search: HNSW search breadth (faiss efSearch, default 16; Milvus
            ef, default 64, raised to the number of hits asked for).
        train_size: vectors sampled to train IVF/PQ (see ``FaissBackend``).
        chunk_size: exact backend: queries per chunk (None: from a memory
            budget).
        uri: milvus: a Milvus Lite path ending in ".db" (embedded, in this
            process) or "http://host:19530" (a server or cluster).
        collection: milvus: the collection name (created if missing; an
            existing one must have this dim and metric).
        index_type: milvus: "HNSW" (default), "IVF_FLAT" or "FLAT".
        index_params: milvus: build parameters, Milvus's names: {"M",
            "efConstruction"} for HNSW (16, 128), {"nlist"} for IVF_FLAT (128).
        rerank: milvus: re-score 2k candidates exactly and rank them with
            the tie rule (the default for ``search(rerank=None)``).
        timeout: milvus: seconds for connecting and for every request.
        token: milvus: credentials ("user:password" or an API key); not saved.
        model_fingerprint: free-form JSON value naming the model whose
            embeddings these are; kept through ``save``/``load``.
    """

    def __init__(self, dim: int, metric: str = "cosine", backend: str = "exact",
                 faiss_factory: str = "Flat", nprobe: Optional[int] = None,
                 ef_search: Optional[int] = None, train_size: Optional[int] = None,
                 chunk_size: Optional[int] = None, *, uri: Optional[str] = None,
                 collection: str = "gallery", index_type: Optional[str] = None,
                 index_params: Optional[Dict[str, Any]] = None, rerank: bool = False,
                 timeout: Optional[float] = None, token: Optional[str] = None,
                 model_fingerprint: Any = None) -> None:
        if isinstance(dim, bool) or int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer; got {dim!r}.")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}; got {metric!r}.")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}.")
        for name, v in (("nprobe", nprobe), ("ef_search", ef_search),
                        ("train_size", train_size)):
            if v is not None and (isinstance(v, bool) or int(v) != v or v < 1):
                raise ValueError(f"{name} must be a positive integer; got {v!r}.")
        _check_fingerprint(model_fingerprint)
        self.dim = int(dim)
        self.metric = metric
        self.backend = backend
        self.model_fingerprint = model_fingerprint
        milvus_args = {"uri": uri, "index_type": index_type,
                       "index_params": index_params, "timeout": timeout,
                       "token": token}
        self._store: Union[MemoryStore, MilvusStore]
        if backend == "milvus":
            if uri is None:
                raise ValueError("backend='milvus' needs uri= (a path ending in "
                                 "'.db' for embedded Milvus Lite, or "
                                 "'http://host:19530').")
            self._store = MilvusStore(
                self.dim, metric, uri, collection, index_type, index_params,
                nprobe, ef_search, rerank,
                DEFAULT_TIMEOUT if timeout is None else timeout, token)
        else:
            given = [n for n, v in milvus_args.items() if v is not None]
            if rerank:
                given.append("rerank")
            if given:
                raise ValueError(f"{given} apply to backend='milvus' only.")
            self._store = MemoryStore(self.dim, metric, backend, faiss_factory,
                                      nprobe, ef_search, train_size, chunk_size)

    # ----------------------------------------------------------------- state
    def __len__(self) -> int:
        return self._store.count()

    def __repr__(self) -> str:
        size = "closed" if getattr(self._store, "closed", False) else len(self)
        return (f"Index(dim={self.dim}, metric={self.metric!r}, "
                f"backend={self.backend!r}{self._store.describe()}, size={size})")

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: Any) -> Literal[False]:
        self.close()
        return False

    def close(self) -> None:
        """Release the store: a milvus index disconnects (and stops an
        embedded Milvus Lite it started), after which
        ``pymilvus.MilvusClient(uri)`` elsewhere opens the same data. The
        in-process backends have nothing to release."""
        self._store.close()

    @property
    def ids(self) -> np.ndarray:
        """int64 [N] ids, in insertion order (milvus: in id order); a copy.
        milvus reads them from the collection."""
        return self._store.read(["ids"])["ids"]

    @property
    def labels(self) -> np.ndarray:
        """int64 [N] labels, in the order of ``ids`` (-1: none; a copy)."""
        return self._store.read(["labels"])["labels"]

    @property
    def embeddings(self) -> np.ndarray:
        """float32 [N, D] vectors as added, in the order of ``ids``
        (read-only view; milvus: read from the collection, N * D * 4 bytes)."""
        return self._store.read(["embeddings"])["embeddings"]

    @property
    def metadata(self) -> List[Any]:
        """The metadata list in the order of ``ids`` (a shallow copy)."""
        return self._store.read(["metadata"])["metadata"]

    def read(self, fields: Iterable[str] = ("ids", "labels", "embeddings", "metadata")
             ) -> Dict[str, Any]:
        """Several of ``ids``, ``labels``, ``embeddings``, ``metadata`` in one
        pass, in the same order: a dict."""
        fields = list(fields)
        bad = set(fields) - {"ids", "labels", "embeddings", "metadata"}
        if bad:
            raise ValueError(f"unknown fields {sorted(bad)}.")
        return self._store.read(fields)

    @property
    def params(self) -> Dict[str, Any]:
        """The backend's construction parameters (saved in the manifest)."""
        return self._store.params()

    def positions(self, ids: TensorLike) -> np.ndarray:
        """Storage positions of ``ids`` (KeyError naming any missing id); the
        in-process backends only (a Milvus collection has no positions)."""
        if not isinstance(self._store, MemoryStore):
            raise ValueError("a milvus index has no storage positions.")
        ids = np.asarray(ids)
        flat = _as_int64(ids.reshape(-1), "ids", ids.size)
        return self._store.positions(flat).reshape(ids.shape)

    def get_metadata(self, ids: TensorLike) -> Any:
        """Metadata of ``ids`` (any shape; -1 -> None), as nested lists."""
        ids = np.asarray(ids)
        flat = _as_int64(ids.reshape(-1), "ids", ids.size)
        valid = flat >= 0
        out = np.empty(flat.shape, object)
        out[:] = None
        if np.any(valid):
            wanted = np.unique(flat[valid])
            values = dict(zip(wanted.tolist(), self._store.get_metadata(wanted)))
            for i in np.flatnonzero(valid).tolist():
                out[i] = values[int(flat[i])]
        return out.reshape(ids.shape).tolist()

    def has_labels(self, values: TensorLike) -> np.ndarray:
        """bool [N]: whether some item of the index has each label."""
        values = np.asarray(values)
        flat = _as_int64(values.reshape(-1), "values", values.size)
        return self._store.has_labels(flat).reshape(values.shape)

    def set_search_params(self, nprobe: Optional[int] = None,
                          ef_search: Optional[int] = None) -> None:
        """Change the search parameters (IVF ``nprobe``, HNSW ``ef_search``)
        of a faiss or milvus index without rebuilding; None keeps a value.
        They are saved with the index."""
        if self.backend == "exact":
            raise ValueError("search parameters apply to backend='faiss' or "
                             "'milvus' only.")
        for name, v in (("nprobe", nprobe), ("ef_search", ef_search)):
            if v is not None and (isinstance(v, bool) or int(v) != v or v < 1):
                raise ValueError(f"{name} must be a positive integer; got {v!r}.")
        self._store.set_search_params(nprobe, ef_search)

    # --------------------------------------------------------------- changes
    def add(self, embeddings: TensorLike, labels: Optional[TensorLike] = None,
            ids: Optional[TensorLike] = None,
            metadata: Optional[Sequence[Any]] = None) -> np.ndarray:
        """Add vectors [N, D] with optional labels [N], ids [N] and metadata
        (a list of N JSON-serialisable values). Ids already in the index are
        replaced (upsert: the old item is removed, the new one added).
        Returns the ids (int64 [N])."""
        x = as_embeddings(embeddings, "embeddings")
        n = x.shape[0]
        if x.shape[1] != self.dim:
            raise ValueError(f"embeddings have dimension {x.shape[1]}, the index "
                             f"has {self.dim}.")
        if n == 0:
            raise ValueError("embeddings is empty: nothing to add.")
        labels = (np.full(n, -1, np.int64) if labels is None
                  else _as_int64(labels, "labels", n))
        explicit = ids is not None
        item_ids: np.ndarray
        if explicit:
            item_ids = _as_int64(ids, "ids", n)
            uniq, counts = np.unique(item_ids, return_counts=True)
            if np.any(counts > 1):
                raise ValueError(f"duplicate ids in this add: "
                                 f"{_first(uniq[counts > 1])}")
        metadata = _check_metadata(metadata, n)
        if not explicit:
            start = self._store.next_id
            item_ids = np.arange(start, start + n, dtype=np.int64)
        # The store's class, not the backend name, so that the checker sees
        # which add/search signature applies (backend "milvus" <=> MilvusStore).
        if isinstance(self._store, MilvusStore):
            self._store.add(x, labels, item_ids, metadata, upsert=explicit)
        else:
            self._store.add(x, labels, item_ids, metadata)
        return item_ids

    def remove(self, ids: TensorLike) -> None:
        """Remove the items with these ids (KeyError if any is missing;
        then nothing is removed)."""
        ids = np.unique(_as_int64(np.asarray(ids).reshape(-1), "ids",
                                  np.asarray(ids).size))
        if ids.size:
            self._store.remove(ids)

    # ---------------------------------------------------------------- search
    def _check_queries(self, queries):
        q = as_embeddings(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q.shape[1]}, the index "
                             f"has {self.dim}.")
        return q

    def _check_k(self, k, size):
        if isinstance(k, bool) or int(k) != k or k < 1 or k > size:
            raise ValueError(f"k must be an integer in [1, {size}] (the "
                             f"index size); got {k!r}.")

    def search(self, queries: TensorLike, k: int = 10, labels: Optional[TensorLike] = None,
               rerank: Optional[bool] = None) -> SearchResult:
        """The k nearest items of each query [N, D]: a ``SearchResult``.

        ``labels``: restrict the results to items with one of these labels
        (padded with id -1 where fewer match). ``rerank`` (milvus): re-score
        the candidates exactly (None: the index's setting)."""
        q = self._check_queries(queries)
        if labels is not None:
            labels = np.unique(_as_int64(np.asarray(labels).reshape(-1),
                                         "labels", np.asarray(labels).size))
            if labels.size == 0:
                raise ValueError("labels is empty: no item could match.")
        if rerank is not None and self.backend != "milvus":
            raise ValueError("rerank applies to backend='milvus' only (the "
                             "other backends rank exactly or by faiss).")
        if isinstance(self._store, MilvusStore):
            # Milvus is asked directly; its count only when hits run short.
            if isinstance(k, bool) or int(k) != k or k < 1 or k > MAX_LIMIT:
                self._check_k(k, min(len(self), MAX_LIMIT))
            k = int(k)
            if q.shape[0] == 0:
                return _empty(k)
            ids, scores, labs = self._store.search(q, k, labels, rerank)
            if labels is None and np.any(ids < 0):
                size = len(self)
                if size == 0:
                    raise ValueError("the index is empty: add vectors before "
                                     "searching.")
                self._check_k(k, size)
        else:
            size = len(self)
            if size == 0:
                raise ValueError("the index is empty: add vectors before searching.")
            self._check_k(k, size)
            k = int(k)
            if q.shape[0] == 0:
                return _empty(k)
            ids, scores, labs = self._store.search(q, k, labels)
        return SearchResult(ids, scores, labs)

    def match(self, queries: TensorLike, threshold: float,
              labels: Optional[TensorLike] = None) -> MatchResult:
        """Nearest-neighbour decisions: the nearest item's label where its
        score >= ``threshold`` (a float or ``kd.retrieval.calibrate``'s
        result), else -1 (unknown). A ``MatchResult``. ``labels``: only
        items with these labels can match."""
        threshold = float(threshold)
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be finite; got {threshold}.")
        r = self.search(queries, 1, labels=labels)
        scores, ids, labels = r.scores[:, 0], r.ids[:, 0], r.labels[:, 0]
        accepted = (scores >= threshold) & (ids >= 0)
        return MatchResult(np.where(accepted, labels, -1).astype(np.int64),
                           scores, ids, accepted)

    # ----------------------------------------------------------- persistence
    def save(self, directory: Union[str, os.PathLike]) -> str:
        """Save to ``directory``. In-process backends write their files
        atomically (see ``kd.retrieval.storage``: a crash mid-save leaves any
        index already there intact); milvus flushes the collection and
        writes only the manifest (URI, collection, index parameters), next
        to an embedded .db created inside the directory, which then moves
        with it. Returns the absolute path."""
        from keras_dml import __version__
        header = {"format": storage.FORMAT,
                  "format_version": storage.FORMAT_VERSION,
                  "keras_dml_version": __version__,
                  "dim": self.dim, "metric": self.metric,
                  "backend": self.backend,
                  "model_fingerprint": self.model_fingerprint}
        return self._store.save(directory, header)

    @classmethod
    def load(cls, directory: Union[str, os.PathLike], verify: bool = True, *,
             uri: Optional[str] = None, token: Optional[str] = None,
             timeout: Optional[float] = None) -> Index:
        """An index saved by ``save``, with its backend (a faiss index is
        deserialised, not rebuilt; a milvus index reconnects to its
        collection, which must still exist). ``verify=False`` skips the
        SHA-256 check (sizes are always checked). ``uri``/``token``/
        ``timeout``: milvus: connect elsewhere than the saved URI (e.g. the
        same collection through a cluster), with credentials. Raises
        ``IndexFormatError`` (a ValueError) for a missing, foreign,
        newer-format, truncated or corrupt directory, or a Milvus collection
        that is gone."""
        directory = os.fspath(directory)
        m = storage.read_manifest(directory)
        metric, backend = m.get("metric"), m.get("backend")
        if metric not in METRICS or backend not in BACKENDS:
            raise storage.IndexFormatError(
                f"{directory!r}: unknown metric {metric!r} or backend {backend!r}.")
        fingerprint = m.get("model_fingerprint")
        if backend == "milvus":
            store = MilvusStore.load(directory, m, uri=uri, token=token,
                                     timeout=timeout)
        else:
            if uri is not None or token is not None or timeout is not None:
                raise ValueError("uri, token and timeout apply to milvus indexes.")
            store = MemoryStore.load(directory, m, verify)
        index = cls.__new__(cls)
        index.dim, index.metric, index.backend = store.dim, metric, backend
        index.model_fingerprint = fingerprint
        index._store = store
        return index


def _empty(k):
    empty = np.zeros((0, k), np.int64)
    return SearchResult(empty, empty.astype(np.float32), empty.copy())


def _check_fingerprint(value):
    try:
        json.dumps(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"model_fingerprint must be JSON-serialisable: {e}") from None


def build_index(model: Any, dataset: Any, metric: str = "cosine", backend: str = "exact",
                ids: Optional[TensorLike] = None, metadata: Optional[Sequence[Any]] = None,
                verbose: int = 1, batch_size: int = 256, **index_kwargs: Any) -> Index:
    """An ``Index`` of a model's embeddings of a data set.

    The data set is embedded with ``kd.evaluation.embed`` (progress bar with
    ``verbose=1``); its labels, when it has them (``(x, y)`` elements, y
    class ids [B] or [B, 1]), become the items' labels. ``ids``/``metadata``
    as in ``Index.add``, in the data set's order; ``index_kwargs`` go to
    ``Index`` (e.g. ``faiss_factory="HNSW32"``).
    """
    from keras_dml.evaluation.embed import embed
    embeddings, labels = embed(model, dataset, verbose=verbose,
                               batch_size=batch_size)
    index = Index(embeddings.shape[1], metric=metric, backend=backend,
                  **index_kwargs)
    index.add(embeddings, labels=labels, ids=ids, metadata=metadata)
    index.model_fingerprint = model_fingerprint(model)
    return index


def model_fingerprint(model: Any) -> Optional[str]:
    """A stable fingerprint of the model that makes the embeddings, or None.

        fp = "sha256:" + sha256(for each weight of the serving path, in
                                order: shape, dtype, raw values)[:16 bytes]

    ``model``: a Keras model (a ``MetricModel``'s embedder only: its proxies
    are not part of what it serves), or the directory of a SavedModel written
    by ``kd.export`` (its recorded fingerprint; None if it has none). The same
    weights give the same fingerprint in any process and on any backend;
    retraining, another architecture or another embedding width (the head's
    kernel shape) give another.
    ``Index.model_fingerprint`` records it (``build_index`` and the runner set
    it, ``Index.save`` writes it into the manifest) and ``kd.export`` writes it
    into ``assets.extra/keras_dml.json``, so that ``keras-dml search`` refuses
    a model and an index from different runs.
    """
    if isinstance(model, (str, os.PathLike)):
        info = os.path.join(os.fspath(model), "assets.extra", "keras_dml.json")
        try:
            with open(info) as f:
                value = json.load(f).get("model_fingerprint")
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None
    import keras
    serving = getattr(model, "embedder", None) or model
    if not isinstance(serving, keras.layers.Layer) or not serving.built:
        return None
    if not serving.weights:
        return None
    digest = hashlib.sha256()
    for weight in serving.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight.value))
        digest.update(repr((tuple(value.shape), str(value.dtype))).encode())
        digest.update(value.tobytes())
    return "sha256:" + digest.hexdigest()[:32]


class ModelMismatchError(ValueError):
    """A model and an index that come from different models."""


def check_model_matches(model: Any, index: Union[Index, str, os.PathLike],
                        model_name: Optional[str] = None,
                        index_name: Optional[str] = None) -> Optional[str]:
    """Refuse a model that did not make ``index``; the one check behind
    ``keras-dml search``, ``keras-dml index`` and ``kd.serving.create_app`` /
    ``keras-dml serve``.

        ours = model_fingerprint(model); theirs = index.model_fingerprint
        ours != theirs (both known)  -> raise ModelMismatchError
        ours or theirs is None       -> return a warning (cannot check)
        ours == theirs               -> return None

    ``model``: a Keras model or a SavedModel directory (see
    ``model_fingerprint``); ``index``: an ``Index`` or an index directory
    (``Index.load``). ``model_name`` / ``index_name``: how the messages name
    them (default: the paths given; none for objects). Returns
    None when the fingerprints agree, else the warning text (the caller shows
    it: ``search`` after its results, ``serve`` in its log).
    """
    if model_name is None and isinstance(model, (str, os.PathLike)):
        model_name = repr(os.fspath(model))
    if not isinstance(index, Index):
        if index_name is None:
            index_name = repr(os.fspath(index))
        index = Index.load(index)
    the_model = "the model" + (f" {model_name}" if model_name else "")
    the_index = "the index" + (f" {index_name}" if index_name else "")
    ours, theirs = model_fingerprint(model), index.model_fingerprint
    if ours and theirs and ours != theirs:
        raise ModelMismatchError(
            f"{the_index} was built with another model ({theirs}) than {the_model} "
            f"({ours}): they come from different runs and their embeddings are not "
            "comparable. Use the SavedModel and the index of one run, or rebuild the "
            "index with this model (keras-dml index).")
    if ours and theirs:
        return None
    return (f"cannot check that {the_index} was built with {the_model} "
            f"({'the model' if not ours else 'the index'} records no model fingerprint; "
            "a SavedModel records one when written by kd.export).")
