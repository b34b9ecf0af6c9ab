"""``kd.retrieval.Index``: labelled, id'd embeddings with exact or faiss search.

    index = kd.retrieval.Index(128)                       # exact, cosine
    index.add(gallery_emb, labels=gallery_labels, metadata=[{"path": p} for p in paths])
    result = index.search(query_emb, k=10)    # .ids, .scores, .labels  [N, k]
    index.save("out/index"); index = kd.retrieval.Index.load("out/index")
    decision = index.match(query_emb, threshold)  # .labels [N] (-1 unknown), .scores, .ids

Semantics:

* ids are int64 user ids, unique in the index; by default an ``add`` of N
  vectors takes ``next_id .. next_id + N - 1``, where ``next_id`` starts at 0
  and is always one more than the largest id ever added (so ids continue
  across adds and are not reused after a removal).
* labels are int64 class ids; -1 means "no label" (the default).
* metadata is one JSON-serialisable value per item (e.g. ``{"path": ...}``).
* scores are higher-is-closer: cosine similarity for ``metric="cosine"``,
  the negated squared distance ``-|q - g|^2`` for ``metric="euclidean"``.
* ranking: decreasing score; equal scores by increasing insertion position
  (the item added first wins; with the default ids, the lower id). This is
  ``kd.search``'s rule, whose engine the exact backend is.
* every argument is validated before anything changes, so a failed ``add``
  or ``remove`` leaves the index as it was.
"""

import dataclasses
import json
import os

import numpy as np

from keras_dml.search import as_embeddings
from keras_dml.retrieval import storage
from keras_dml.retrieval.backends import (BACKENDS, METRICS, ExactBackend,
                                          FaissBackend)


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


def _first(values, n=10):
    values = np.asarray(values).tolist()
    return str(values[:n])[:-1] + (", ...]" if len(values) > n else "]")


class Index:
    """Embeddings with ids, labels and metadata, searchable by nearest
    neighbour.

    Args:
        dim: embedding dimension D.
        metric: "cosine" (vectors are compared after L2 normalisation) or
            "euclidean".
        backend: "exact" (``kd.search``, ``keras.ops`` on the
            Keras backend in use) or "faiss"
            (approximate or exact, ``faiss_factory``; needs faiss-cpu).
        faiss_factory: a ``faiss.index_factory`` string, e.g. "Flat",
            "IVF1024,Flat", "HNSW32", "IVF4096,PQ32".
        nprobe: IVF lists visited per query (faiss default 1).
        ef_search: HNSW search breadth efSearch (faiss default 16).
        train_size: vectors sampled to train IVF/PQ (see ``FaissBackend``).
        chunk_size: exact backend: queries per chunk (None: from a memory
            budget).
    """

    def __init__(self, dim, metric="cosine", backend="exact", faiss_factory="Flat",
                 nprobe=None, ef_search=None, train_size=None, chunk_size=None):
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer; got {dim!r}.")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}; got {metric!r}.")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}.")
        for name, v in (("nprobe", nprobe), ("ef_search", ef_search),
                        ("train_size", train_size)):
            if v is not None and (int(v) != v or v < 1):
                raise ValueError(f"{name} must be a positive integer; got {v!r}.")
        self.dim = int(dim)
        self.metric = metric
        self.backend = backend
        if backend == "exact":
            self._backend = ExactBackend(self.dim, metric, chunk_size)
        else:
            self._backend = FaissBackend(self.dim, metric, faiss_factory, nprobe,
                                         ef_search, train_size)
        self._vectors = np.zeros((0, self.dim), np.float32)
        self._ids = np.zeros(0, np.int64)
        self._labels = np.zeros(0, np.int64)
        self._seq = np.zeros(0, np.int64)
        self._metadata = []
        self._next_id = 0
        self._next_seq = 0
        self._by_id = None        # (sorted ids, their positions), lazily

    # ----------------------------------------------------------------- state
    def __len__(self):
        return int(self._ids.shape[0])

    def __repr__(self):
        extra = ""
        if self.backend == "faiss":
            extra = f", faiss_factory={self._backend.factory!r}"
        return (f"Index(dim={self.dim}, metric={self.metric!r}, "
                f"backend={self.backend!r}{extra}, size={len(self)})")

    @property
    def ids(self):
        """int64 [N] ids in insertion order (a copy)."""
        return self._ids.copy()

    @property
    def labels(self):
        """int64 [N] labels in insertion order (-1: none; a copy)."""
        return self._labels.copy()

    @property
    def embeddings(self):
        """float32 [N, D] vectors as added, in insertion order (read-only view)."""
        v = self._vectors.view()
        v.flags.writeable = False
        return v

    @property
    def metadata(self):
        """The metadata list in insertion order (a shallow copy)."""
        return list(self._metadata)

    @property
    def params(self):
        """The backend's construction parameters (saved in the manifest)."""
        return self._backend.params()

    def _lookup(self):
        if self._by_id is None:
            order = np.argsort(self._ids, kind="stable")
            self._by_id = (self._ids[order], order)
        return self._by_id

    def positions(self, ids):
        """Storage positions of ``ids`` (KeyError naming any missing id)."""
        ids = np.asarray(ids)
        shape = ids.shape
        ids = _as_int64(ids.reshape(-1), "ids", ids.size)
        sorted_ids, order = self._lookup()
        at = np.searchsorted(sorted_ids, ids)
        found = at < len(sorted_ids)
        found[found] = sorted_ids[at[found]] == ids[found]
        if not np.all(found):
            raise KeyError(f"ids not in the index: {_first(ids[~found])}")
        return order[at].reshape(shape)

    def get_metadata(self, ids):
        """Metadata of ``ids`` (any shape; -1 -> None), as nested lists."""
        ids = np.asarray(ids)
        flat = ids.reshape(-1)
        pos = np.full(flat.shape, -1, np.int64)
        valid = flat >= 0
        pos[valid] = self.positions(flat[valid])
        out = np.empty(flat.shape, object)
        for i, p in enumerate(pos.tolist()):
            out[i] = self._metadata[p] if p >= 0 else None
        return out.reshape(ids.shape).tolist()

    def set_search_params(self, nprobe=None, ef_search=None):
        """Change the faiss search parameters (IVF ``nprobe``, HNSW
        ``ef_search``) without rebuilding; None keeps a value. They are saved
        with the index."""
        if self.backend != "faiss":
            raise ValueError("search parameters apply to backend='faiss' only.")
        for name, v in (("nprobe", nprobe), ("ef_search", ef_search)):
            if v is not None and (isinstance(v, bool) or int(v) != v or v < 1):
                raise ValueError(f"{name} must be a positive integer; got {v!r}.")
        if nprobe is not None:
            self._backend.nprobe = int(nprobe)
        if ef_search is not None:
            self._backend.ef_search = int(ef_search)

    # --------------------------------------------------------------- changes
    def add(self, embeddings, labels=None, ids=None, metadata=None):
        """Add vectors [N, D] with optional labels [N], ids [N] and metadata
        (a list of N JSON-serialisable values). Returns the ids (int64 [N])."""
        x = as_embeddings(embeddings, "embeddings")
        n = x.shape[0]
        if x.shape[1] != self.dim:
            raise ValueError(f"embeddings have dimension {x.shape[1]}, the index "
                             f"has {self.dim}.")
        if n == 0:
            raise ValueError("embeddings is empty: nothing to add.")
        labels = (np.full(n, -1, np.int64) if labels is None
                  else _as_int64(labels, "labels", n))
        if ids is None:
            ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        else:
            ids = _as_int64(ids, "ids", n)
            uniq, counts = np.unique(ids, return_counts=True)
            if np.any(counts > 1):
                raise ValueError(f"duplicate ids in this add: "
                                 f"{_first(uniq[counts > 1])}")
            if len(self):
                sorted_ids, _ = self._lookup()
                at = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
                taken = sorted_ids[at] == ids
                if np.any(taken):
                    raise ValueError(f"ids already in the index: "
                                     f"{_first(ids[taken])}")
        metadata = _check_metadata(metadata, n)
        seq = np.arange(self._next_seq, self._next_seq + n, dtype=np.int64)
        all_vectors = np.concatenate([self._vectors, x])
        all_seq = np.concatenate([self._seq, seq])
        self._backend.add(x, seq, all_vectors, all_seq)   # may fail: nothing changed yet
        self._vectors = all_vectors
        self._seq = all_seq
        self._ids = np.concatenate([self._ids, ids])
        self._labels = np.concatenate([self._labels, labels])
        self._metadata.extend(metadata)
        self._next_id = max(self._next_id, int(ids.max()) + 1)
        self._next_seq += n
        self._by_id = None
        return ids

    def remove(self, ids):
        """Remove the items with these ids (KeyError if any is missing)."""
        ids = np.unique(np.asarray(ids).reshape(-1))
        if ids.size == 0:
            return
        pos = self.positions(ids)
        keep = np.ones(len(self), bool)
        keep[pos] = False
        removed_seq = self._seq[pos]
        self._vectors = self._vectors[keep]
        self._seq = self._seq[keep]
        self._ids = self._ids[keep]
        self._labels = self._labels[keep]
        self._metadata = [m for m, k in zip(self._metadata, keep.tolist()) if k]
        self._by_id = None
        self._backend.remove(removed_seq, self._vectors, self._seq)

    # ---------------------------------------------------------------- search
    def _check_queries(self, queries):
        q = as_embeddings(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q.shape[1]}, the index "
                             f"has {self.dim}.")
        if len(self) == 0:
            raise ValueError("the index is empty: add vectors before searching.")
        return q

    def search(self, queries, k=10):
        """The k nearest items of each query [N, D]: a ``SearchResult``."""
        q = self._check_queries(queries)
        if isinstance(k, bool) or int(k) != k or k < 1 or k > len(self):
            raise ValueError(f"k must be an integer in [1, {len(self)}] (the "
                             f"index size); got {k!r}.")
        if q.shape[0] == 0:
            empty = np.zeros((0, int(k)), np.int64)
            return SearchResult(empty, empty.astype(np.float32), empty.copy())
        positions, scores = self._backend.search(q, int(k))
        missing = positions < 0
        safe = np.where(missing, 0, positions)
        ids = np.where(missing, -1, self._ids[safe])
        labels = np.where(missing, -1, self._labels[safe])
        return SearchResult(ids, scores.astype(np.float32), labels)

    def match(self, queries, threshold):
        """Nearest-neighbour decisions: the nearest item's label where its
        score >= ``threshold`` (a float or ``kd.retrieval.calibrate``'s
        result), else -1 (unknown). A ``MatchResult``."""
        threshold = float(threshold)
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be finite; got {threshold}.")
        r = self.search(queries, 1)
        scores, ids, labels = r.scores[:, 0], r.ids[:, 0], r.labels[:, 0]
        accepted = (scores >= threshold) & (ids >= 0)
        return MatchResult(np.where(accepted, labels, -1).astype(np.int64),
                           scores, ids, accepted)

    # ----------------------------------------------------------- persistence
    def save(self, directory):
        """Write the index to ``directory`` atomically (see
        ``kd.retrieval.storage``): a crash mid-save leaves any index already
        there intact. Returns the absolute path."""
        from keras_dml import __version__

        def write(w):
            w.array("embeddings.npy", self._vectors)
            w.array("ids.npy", self._ids)
            w.array("labels.npy", self._labels)
            w.array("seq.npy", self._seq)
            w.jsonl("metadata.jsonl", self._metadata)
            blob = self._backend.serialize()
            if blob is not None:
                w.raw("faiss.index", blob)
            return {"format": storage.FORMAT,
                    "format_version": storage.FORMAT_VERSION,
                    "keras_dml_version": __version__,
                    "dim": self.dim, "metric": self.metric,
                    "backend": self.backend, "params": self.params,
                    "size": len(self), "next_id": self._next_id,
                    "next_seq": self._next_seq}
        return storage.write_atomically(directory, write)

    @classmethod
    def load(cls, directory, verify=True):
        """An index saved by ``save``, with its backend (a faiss index is
        deserialised, not rebuilt). ``verify=False`` skips the SHA-256 check
        (sizes are always checked). Raises ``IndexFormatError`` (a
        ValueError) for a missing, foreign, newer-format, truncated or
        corrupt directory."""
        directory = os.fspath(directory)
        m = storage.read_manifest(directory)
        try:
            dim, size = int(m["dim"]), int(m["size"])
            metric, backend, params = m["metric"], m["backend"], dict(m["params"])
            next_id, next_seq = int(m["next_id"]), int(m["next_seq"])
        except (KeyError, TypeError, ValueError) as e:
            raise storage.IndexFormatError(
                f"{directory!r}: manifest entry missing or bad: {e}") from None
        if metric not in METRICS or backend not in BACKENDS:
            raise storage.IndexFormatError(
                f"{directory!r}: unknown metric {metric!r} or backend {backend!r}.")
        needed = {"embeddings.npy", "ids.npy", "labels.npy", "seq.npy",
                  "metadata.jsonl"} | ({"faiss.index"} if backend == "faiss" else set())
        if not needed <= set(m["files"]):
            raise storage.IndexFormatError(
                f"{directory!r}: the manifest does not list "
                f"{sorted(needed - set(m['files']))}.")
        storage.check_files(directory, m, verify)
        vectors = storage.load_array(directory, "embeddings.npy", np.float32, (size, dim))
        ids = storage.load_array(directory, "ids.npy", np.int64, (size,))
        labels = storage.load_array(directory, "labels.npy", np.int64, (size,))
        seq = storage.load_array(directory, "seq.npy", np.int64, (size,))
        metadata = storage.load_jsonl(directory, "metadata.jsonl", size)
        index = cls.__new__(cls)
        index.dim, index.metric, index.backend = dim, metric, backend
        if backend == "exact":
            index._backend = ExactBackend(dim, metric)
            index._backend.reset(vectors, seq)
        else:
            with open(os.path.join(directory, "faiss.index"), "rb") as f:
                blob = f.read()
            index._backend = FaissBackend(
                dim, metric, params.get("faiss_factory", "Flat"),
                params.get("nprobe"), params.get("ef_search"),
                params.get("train_size"), blob=blob)
            if index._backend.index.ntotal != size:
                raise storage.IndexFormatError(
                    f"{directory!r}: the faiss index holds "
                    f"{index._backend.index.ntotal} vectors, the manifest {size}.")
            index._backend.attach(seq)
        index._vectors, index._ids, index._labels, index._seq = vectors, ids, labels, seq
        index._metadata = metadata
        index._next_id, index._next_seq = next_id, next_seq
        index._by_id = None
        return index


def build_index(model, dataset, metric="cosine", backend="exact", ids=None,
                metadata=None, verbose=1, batch_size=256, **index_kwargs):
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
    return index
