"""The in-process store of ``kd.retrieval.Index`` (backends "exact" and
"faiss"): numpy arrays of the vectors as added, ids, labels, insertion
sequence numbers and a metadata list, with a search engine over them
(``backends.ExactBackend`` or ``backends.FaissBackend``). Saved as the
plain files of ``kd.retrieval.storage``.

Positions are rows of these insertion-ordered arrays; ties in search go to
the lower position (the item added first). An ``add`` of ids already in the
store replaces those items (upsert): the old rows are removed and the new
ones appended, so an upserted item counts as added last.
"""

import os

import numpy as np

from keras_dml.retrieval import storage
from keras_dml.retrieval.backends import ExactBackend, FaissBackend


def first_values(values, n=10):
    """``[a, b, ...]``: the first n values, for error messages."""
    values = np.asarray(values).tolist()
    return str(values[:n])[:-1] + (", ...]" if len(values) > n else "]")


class MemoryStore:
    """Vectors, ids, labels and metadata in this process, searched by an
    exact or faiss engine."""

    def __init__(self, dim, metric, backend="exact", faiss_factory="Flat",
                 nprobe=None, ef_search=None, train_size=None, chunk_size=None,
                 engine=None):
        self.dim, self.metric, self.name = dim, metric, backend
        if engine is not None:
            self.engine = engine
        elif backend == "exact":
            self.engine = ExactBackend(dim, metric, chunk_size)
        else:
            self.engine = FaissBackend(dim, metric, faiss_factory, nprobe,
                                       ef_search, train_size)
        self.vectors = np.zeros((0, dim), np.float32)
        self.ids = np.zeros(0, np.int64)
        self.labels = np.zeros(0, np.int64)
        self.seq = np.zeros(0, np.int64)
        self.metadata = []
        self.next_id = 0
        self.next_seq = 0
        self._by_id = None        # (sorted ids, their positions), lazily
        self._version = 0         # bumped by every change (filter cache key)

    # ---------------------------------------------------------------- reads
    def count(self):
        return int(self.ids.shape[0])

    def params(self):
        return self.engine.params()

    def describe(self):
        if self.name == "faiss":
            return f", faiss_factory={self.engine.factory!r}"
        return ""

    def _lookup(self):
        if self._by_id is None:
            order = np.argsort(self.ids, kind="stable")
            self._by_id = (self.ids[order], order)
        return self._by_id

    def contains(self, ids):
        """bool [n]: which int64 ``ids`` are in the store."""
        if not len(self.ids):
            return np.zeros(len(ids), bool)
        sorted_ids, _ = self._lookup()
        at = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
        return sorted_ids[at] == ids

    def positions(self, ids):
        """Positions of int64 ``ids`` [n] (KeyError naming missing ids)."""
        found = self.contains(ids)
        if not np.all(found):
            raise KeyError(f"ids not in the index: {first_values(ids[~found])}")
        sorted_ids, order = self._lookup()
        return order[np.searchsorted(sorted_ids, ids)]

    def get_metadata(self, ids):
        return [self.metadata[p] for p in self.positions(ids).tolist()]

    def has_labels(self, values):
        return np.isin(values, self.labels)

    def any_label(self):
        return bool(np.any(self.labels >= 0))

    def read(self, fields):
        """The whole store in insertion order: {field: array or list}."""
        out = {"ids": self.ids.copy(), "labels": self.labels.copy(),
               "metadata": list(self.metadata)}
        if "embeddings" in fields:
            v = self.vectors.view()
            v.flags.writeable = False
            out["embeddings"] = v
        return {f: out[f] for f in fields}

    def search(self, queries, k, labels=None):
        """(ids, scores, labels) [N, k], padded with -1 / -inf / -1."""
        subset = key = None
        if labels is not None:
            subset = np.flatnonzero(np.isin(self.labels, labels)).astype(np.int64)
            key = (self._version, tuple(labels.tolist()))
        positions, scores = self.engine.search(queries, k, subset, key)
        missing = positions < 0
        safe = np.where(missing, 0, positions)
        return (np.where(missing, -1, self.ids[safe]),
                scores.astype(np.float32),
                np.where(missing, -1, self.labels[safe]))

    # -------------------------------------------------------------- changes
    def set_search_params(self, nprobe=None, ef_search=None):
        if self.name != "faiss":
            raise ValueError("search parameters apply to backend='faiss' or "
                             "'milvus' only.")
        if nprobe is not None:
            self.engine.nprobe = int(nprobe)
        if ef_search is not None:
            self.engine.ef_search = int(ef_search)

    def add(self, x, labels, ids, metadata):
        """Append checked arrays; ids already present are replaced."""
        taken = self.contains(ids)
        if np.any(taken):                       # upsert: drop the old rows
            self._drop(self.positions(ids[taken]))
        seq = np.arange(self.next_seq, self.next_seq + len(x), dtype=np.int64)
        all_vectors = np.concatenate([self.vectors, x])
        all_seq = np.concatenate([self.seq, seq])
        self.engine.add(x, seq, all_vectors, all_seq)  # may fail: nothing changed yet
        self.vectors, self.seq = all_vectors, all_seq
        self.ids = np.concatenate([self.ids, ids])
        self.labels = np.concatenate([self.labels, labels])
        self.metadata.extend(metadata)
        self.next_id = max(self.next_id, int(ids.max()) + 1)
        self.next_seq += len(x)
        self._by_id = None
        self._version += 1

    def _drop(self, pos):
        keep = np.ones(self.count(), bool)
        keep[pos] = False
        removed_seq = self.seq[pos]
        self.vectors = self.vectors[keep]
        self.seq = self.seq[keep]
        self.ids = self.ids[keep]
        self.labels = self.labels[keep]
        self.metadata = [m for m, k in zip(self.metadata, keep.tolist()) if k]
        self._by_id = None
        self._version += 1
        self.engine.remove(removed_seq, self.vectors, self.seq)

    def remove(self, ids):
        self._drop(self.positions(ids))

    def close(self):
        pass

    # ---------------------------------------------------------- persistence
    def save(self, directory, header):
        def write(w):
            w.array("embeddings.npy", self.vectors)
            w.array("ids.npy", self.ids)
            w.array("labels.npy", self.labels)
            w.array("seq.npy", self.seq)
            w.jsonl("metadata.jsonl", self.metadata)
            blob = self.engine.serialize()
            if blob is not None:
                w.raw("faiss.index", blob)
            return dict(header, params=self.params(), size=self.count(),
                        next_id=self.next_id, next_seq=self.next_seq)
        return storage.write_atomically(directory, write)

    @classmethod
    def load(cls, directory, m, verify=True):
        try:
            dim, size = int(m["dim"]), int(m["size"])
            metric, backend, params = m["metric"], m["backend"], dict(m["params"])
            next_id, next_seq = int(m["next_id"]), int(m["next_seq"])
        except (KeyError, TypeError, ValueError) as e:
            raise storage.IndexFormatError(
                f"{directory!r}: manifest entry missing or bad: {e}") from None
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
        if backend == "exact":
            engine = ExactBackend(dim, metric)
            engine.reset(vectors, seq)
        else:
            with open(os.path.join(directory, "faiss.index"), "rb") as f:
                blob = f.read()
            engine = FaissBackend(
                dim, metric, params.get("faiss_factory", "Flat"),
                params.get("nprobe"), params.get("ef_search"),
                params.get("train_size"), blob=blob)
            if engine.index.ntotal != size:
                raise storage.IndexFormatError(
                    f"{directory!r}: the faiss index holds "
                    f"{engine.index.ntotal} vectors, the manifest {size}.")
            engine.attach(seq)
        store = cls(dim, metric, backend, engine=engine)
        store.vectors, store.ids, store.labels, store.seq = vectors, ids, labels, seq
        store.metadata = metadata
        store.next_id, store.next_seq = next_id, next_seq
        return store
