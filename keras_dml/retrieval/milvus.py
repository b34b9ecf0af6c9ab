"""The Milvus store of ``kd.retrieval.Index`` (``backend="milvus"``): the
vectors, labels and metadata live in a Milvus collection; the ``Index``
object holds only the connection and a few parameters (nothing that grows
with the gallery).

    uri="runs/gallery.db"          embedded Milvus Lite (a directory ending in
                                   .db; its engine runs inside this process)
    uri="http://host:19530"        a Milvus server or cluster, or
                                   ``milvus-lite server`` (the same client code)

One collection per index, created on first use:

    id        INT64, primary key (the index's ids; ``add`` with existing ids
              is a Milvus upsert)
    vector    FLOAT_VECTOR(dim), with a vector index: HNSW (M,
              efConstruction), IVF_FLAT (nlist) or FLAT, metric COSINE for
              ``metric="cosine"`` and L2 for ``metric="euclidean"``
    label     INT64 (-1: none), the filter field of ``search(labels=...)``
    metadata  JSON, nullable

and the collection property ``keras_dml.next_id`` (the next default id,
reserved before an ``add`` inserts, so ids are never reused). Collections
are created with consistency level Strong and every read asks for Strong:
a search sees every write acknowledged before it (Milvus's default,
Bounded, may not).

Scores follow the other backends: Milvus's COSINE distance is the cosine
similarity (reported as is); its L2 distance is the squared distance
(reported negated, ``-|q - g|^2``). Ties: the hits Milvus returns are
ordered by (score descending, id ascending); with ``rerank=True`` more
candidates are fetched (``rerank_candidates(k)``) with their vectors,
re-scored exactly in numpy and cut to k, so the order among equal scores is
the lower id, as far as the candidates reach.

Every call passes ``timeout`` seconds; a server that is down or refuses the
connection gives a ``MilvusConnectionError`` naming the URI.
"""

import os

import numpy as np

from keras_dml.retrieval import storage
from keras_dml.retrieval.backends import l2_normalized
from keras_dml.retrieval.memory import first_values

INDEX_TYPES = ("HNSW", "IVF_FLAT", "FLAT")
# Milvus's build parameters per index type, and our defaults.
BUILD_PARAMS = {"HNSW": {"M": 16, "efConstruction": 128},
                "IVF_FLAT": {"nlist": 128},
                "FLAT": {}}
MILVUS_METRIC = {"cosine": "COSINE", "euclidean": "L2"}
MAX_LIMIT = 16384              # Milvus's largest topk
NEXT_ID = "keras_dml.next_id"
DESCRIPTION = "keras_dml.retrieval.Index"
FIELDS = {"id": "INT64", "vector": "FLOAT_VECTOR", "label": "INT64",
          "metadata": "JSON"}
DEFAULT_TIMEOUT = 10.0
ID_CHUNK = 4096                # ids per get/delete request
QUERY_CHUNK = 1024             # queries per search request

# Test hook: a file that ``add`` rewrites with the number of batches
# written after each one (a test kills the process in the middle of an add).
_PROGRESS_ENV = "KERAS_DML_MILVUS_ADD_PROGRESS"


class MilvusConnectionError(ConnectionError):
    """Milvus at a URI cannot be reached (down, refusing, timed out, or an
    embedded database another process holds)."""


def import_pymilvus():
    try:
        import pymilvus
    except ImportError as e:
        raise ImportError(
            "backend='milvus' needs pymilvus (and milvus-lite for a local .db "
            f"file): pip install 'keras_dml[milvus]'. ({e})") from None
    return pymilvus


def is_embedded(uri):
    """A local Milvus Lite path (not http://, https://, tcp:// or unix:)."""
    return not str(uri).lower().startswith(("http://", "https://", "tcp://",
                                            "unix:"))


def rerank_candidates(k):
    """Candidates fetched per query when re-ranking: 2k, at least k + 16."""
    return min(MAX_LIMIT, max(2 * k, k + 16))


def check_index_params(index_type, index_params):
    """(index type, full build parameters) or a ValueError."""
    index_type = "HNSW" if index_type is None else str(index_type).upper()
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index_type must be one of {INDEX_TYPES}; got "
                         f"{index_type!r}.")
    params = dict(BUILD_PARAMS[index_type])
    for name, value in dict(index_params or {}).items():
        if name not in params:
            raise ValueError(f"index_params for {index_type} take "
                             f"{sorted(params) or 'nothing'}; got {name!r}.")
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"index_params[{name!r}] must be a positive "
                             f"integer; got {value!r}.")
        params[name] = int(value)
    return index_type, params


def _message(e):
    return getattr(e, "message", None) or str(e)


class MilvusStore:
    """A keras_dml index kept in a Milvus collection (see module docstring).

    Args:
        dim, metric: as ``Index``.
        uri: a Milvus Lite path ending in ".db" or a server URI.
        collection: the collection name.
        index_type, index_params: the vector index of a new collection
            ("HNSW", "IVF_FLAT" or "FLAT"; Milvus's parameter names). An
            existing collection keeps its own; naming another type is an
            error.
        nprobe, ef_search: search parameters (IVF nprobe, HNSW ef).
        rerank: re-score candidates exactly (see module docstring).
        timeout: seconds for connecting and for every request.
        token: Milvus credentials ("user:password" or an API key); never
            saved.
        create: create the collection when it is missing (False: error).
    """

    name = "milvus"

    def __init__(self, dim, metric, uri, collection="gallery", index_type=None,
                 index_params=None, nprobe=None, ef_search=None, rerank=False,
                 timeout=DEFAULT_TIMEOUT, token=None, create=True,
                 missing_error=None):
        pymilvus = import_pymilvus()
        self._pymilvus = pymilvus
        self.dim, self.metric = dim, metric
        if not isinstance(collection, str) or not collection:
            raise ValueError(f"collection must be a non-empty string; got "
                             f"{collection!r}.")
        self.collection = collection
        self.nprobe, self.ef_search = nprobe, ef_search
        self.rerank = bool(rerank)
        self.timeout = float(timeout)
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive; got {timeout!r}.")
        self.uri = os.fspath(uri)
        self.embedded = is_embedded(self.uri)
        self._release_path = None
        self._client = None
        self._next_id = None
        if self.embedded:
            if not self.uri.endswith(".db"):
                raise ValueError(
                    f"an embedded Milvus Lite uri is a path ending in '.db'; "
                    f"got {self.uri!r} (or give http://host:19530).")
            self.uri = os.path.abspath(self.uri)
            if not create and not os.path.exists(self.uri):
                raise (missing_error or ValueError)(
                    f"no Milvus Lite database at {self.uri!r} (collection "
                    f"{collection!r} is gone).")
            os.makedirs(os.path.dirname(self.uri), exist_ok=True)
        self._connect(token)
        try:
            if self._call("has_collection", collection):
                self._attach(index_type, index_params)
            elif not create:
                raise (missing_error or ValueError)(
                    f"Milvus at {self.uri!r} has no collection {collection!r} "
                    "(deleted or renamed?).")
            else:
                self._create(index_type, index_params)
            self._call("load_collection", collection)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------- connection
    def _connect(self, token):
        if self.embedded:
            try:
                from milvus_lite.server_manager import server_manager_instance
                # Release the embedded engine at close() only if this
                # connection started it (another client may share it).
                if self.uri not in getattr(server_manager_instance, "_servers", {}):
                    self._release_path = self.uri
            except ImportError as e:
                raise ImportError(
                    "an embedded Milvus uri (a .db path) needs milvus-lite: pip "
                    f"install 'keras_dml[milvus]'. ({e})") from None
        try:
            self._client = self._pymilvus.MilvusClient(
                uri=self.uri, token=token or "", timeout=self.timeout)
        except Exception as e:   # MilvusException, ConnectionConfigException
            hint = (" Milvus Lite lets one process open a .db at a time: is "
                    "another process using it? (Run `milvus-lite server` to "
                    "share it.)" if self.embedded else "")
            raise MilvusConnectionError(
                f"cannot connect to Milvus at {self.uri!r} (timeout "
                f"{self.timeout:g} s): {_message(e)}.{hint}") from None

    def _call(self, method, *args, **kwargs):
        """``client.method(*args, timeout=..., **kwargs)``, with errors that
        name the URI and collection."""
        if self._client is None:
            raise ValueError("the index is closed.")
        try:
            return getattr(self._client, method)(*args, timeout=self.timeout,
                                                 **kwargs)
        except self._pymilvus.exceptions.MilvusException as e:
            text = _message(e)
            cls = (MilvusConnectionError if getattr(e, "code", None) in (2, 1100)
                   or "unavailable" in text.lower() or "deadline" in text.lower()
                   else RuntimeError)
            raise cls(f"Milvus at {self.uri!r}, collection "
                      f"{self.collection!r}: {method} failed: {text}") from None

    def close(self):
        """Disconnect; an embedded engine this store started is stopped, so
        that another process can open the .db."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:      # closing must not mask the real error
                pass
        if self._release_path is not None:
            from milvus_lite.server_manager import server_manager_instance
            server_manager_instance.release_server(self._release_path)
            self._release_path = None

    @property
    def closed(self):
        return self._client is None

    # ----------------------------------------------------------- collection
    def _where(self):
        return f"Milvus collection {self.collection!r} at {self.uri!r}"

    def _create(self, index_type, index_params):
        self.index_type, self.index_params = check_index_params(index_type,
                                                                index_params)
        DataType = self._pymilvus.DataType
        schema = self._pymilvus.MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False, description=DESCRIPTION)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("label", DataType.INT64)
        schema.add_field("metadata", DataType.JSON, nullable=True)
        index = self._client.prepare_index_params()
        index.add_index(field_name="vector", index_type=self.index_type,
                        metric_type=MILVUS_METRIC[self.metric],
                        params=dict(self.index_params))
        self._call("create_collection", self.collection, schema=schema,
                   index_params=index, consistency_level="Strong",
                   properties={NEXT_ID: "0"})
        self._next_id = 0

    def _attach(self, index_type, index_params):
        """Check an existing collection against this index."""
        info = self._call("describe_collection", self.collection)
        fields = {f["name"]: f for f in info.get("fields", [])}
        kinds = {name: getattr(f.get("type"), "name", str(f.get("type")))
                 for name, f in fields.items()}
        if any(kinds.get(n) != t for n, t in FIELDS.items()) or not fields["id"].get("is_primary"):
            raise ValueError(
                f"{self._where()} is not a keras_dml index: it has fields "
                f"{kinds}, a keras_dml index has {FIELDS} (id the primary key).")
        dim = int(fields["vector"].get("params", {}).get("dim", -1))
        if dim != self.dim:
            raise ValueError(f"{self._where()} holds {dim}-d vectors; this index "
                             f"has dim={self.dim}.")
        described = self._call("describe_index", self.collection, "vector") or {}
        metric = str(described.get("metric_type", "")).upper()
        if metric != MILVUS_METRIC[self.metric]:
            raise ValueError(
                f"{self._where()} is indexed with metric {metric or 'none'}; "
                f"this index has metric={self.metric!r} "
                f"({MILVUS_METRIC[self.metric]}).")
        existing = str(described.get("index_type", "")).upper()
        if index_type is not None and str(index_type).upper() != existing:
            raise ValueError(f"{self._where()} has a {existing} index; "
                             f"index_type={index_type!r} was asked for.")
        self.index_type = existing
        params = {}
        for name in BUILD_PARAMS.get(existing, {}):
            value = described.get(name, (described.get("params") or {}).get(name))
            if value is not None:
                params[name] = int(value)
        if index_params:
            wanted = check_index_params(existing, index_params)[1]
            differ = {n: v for n, v in dict(index_params).items()
                      if params.get(n, wanted[n]) != wanted[n]}
            if differ:
                raise ValueError(f"{self._where()} was built with {params}; "
                                 f"index_params={dict(index_params)} differ.")
        self.index_params = params
        properties = info.get("properties") or {}
        if NEXT_ID in properties:
            self._next_id = int(properties[NEXT_ID])

    def params(self):
        return {"uri": self.uri, "collection": self.collection,
                "index_type": self.index_type,
                "index_params": dict(self.index_params),
                "nprobe": self.nprobe, "ef_search": self.ef_search,
                "rerank": self.rerank, "timeout": self.timeout}

    def describe(self):
        return (f", uri={self.uri!r}, collection={self.collection!r}, "
                f"index_type={self.index_type!r}")

    # ---------------------------------------------------------------- reads
    def count(self):
        """Milvus's own count(*) (consistency Strong)."""
        rows = self._call("query", self.collection, filter="",
                          output_fields=["count(*)"], consistency_level="Strong")
        return int(rows[0]["count(*)"])

    def _get(self, ids, fields):
        """{id: row} for those of ``ids`` that exist."""
        out = {}
        ids = [int(i) for i in np.asarray(ids).tolist()]
        for i in range(0, len(ids), ID_CHUNK):
            rows = self._call("get", self.collection, ids=ids[i:i + ID_CHUNK],
                              output_fields=["id", *fields],
                              consistency_level="Strong")
            out.update((int(r["id"]), r) for r in rows)
        return out

    def contains(self, ids):
        found = self._get(ids, [])
        return np.array([int(i) in found for i in ids], bool)

    def get_metadata(self, ids):
        rows = self._get(ids, ["metadata"])
        missing = [i for i in ids.tolist() if i not in rows]
        if missing:
            raise KeyError(f"ids not in the index: {first_values(missing)}")
        return [rows[i].get("metadata") for i in ids.tolist()]

    def any_label(self):
        rows = self._call("query", self.collection, filter="label >= 0",
                          output_fields=["id"], limit=1,
                          consistency_level="Strong")
        return len(rows) > 0

    def has_labels(self, values):
        """bool per value: does some item have this label? Few requests: each
        asks for up to MAX_LIMIT items with any still-unseen label."""
        values = np.asarray(values, np.int64)
        todo = set(np.unique(values).tolist())
        found = set()
        while todo:
            rows = self._call("query", self.collection,
                              filter=_label_filter(sorted(todo)),
                              output_fields=["label"], limit=MAX_LIMIT,
                              consistency_level="Strong")
            seen = {int(r["label"]) for r in rows} & todo
            if not seen:
                break
            found |= seen
            todo -= seen
        return np.isin(values, list(found))

    def read(self, fields):
        """The whole collection, ordered by id: {field: array or list}."""
        names = {"ids": "id", "labels": "label", "embeddings": "vector",
                 "metadata": "metadata"}
        wanted = ["id"] + [names[f] for f in fields if f != "ids"]
        iterator = self._call("query_iterator", self.collection,
                              batch_size=4096, output_fields=wanted,
                              consistency_level="Strong")
        rows = []
        try:
            while True:
                batch = iterator.next()
                if not batch:
                    break
                rows.extend(batch)
        finally:
            iterator.close()
        rows.sort(key=lambda r: int(r["id"]))
        out = {"ids": np.array([r["id"] for r in rows], np.int64)}
        if "labels" in fields:
            out["labels"] = np.array([r["label"] for r in rows], np.int64)
        if "embeddings" in fields:
            out["embeddings"] = np.array([r["vector"] for r in rows],
                                         np.float32).reshape(len(rows), self.dim)
        if "metadata" in fields:
            out["metadata"] = [r.get("metadata") for r in rows]
        return {f: out[f] for f in fields}

    # --------------------------------------------------------------- search
    def _search_params(self, limit):
        params = {}
        if self.index_type == "HNSW":
            # Milvus needs ef >= limit.
            params["ef"] = max(int(self.ef_search or 64), limit)
        elif self.index_type == "IVF_FLAT" and self.nprobe is not None:
            params["nprobe"] = int(self.nprobe)
        return {"metric_type": MILVUS_METRIC[self.metric], "params": params}

    def search(self, queries, k, labels=None, rerank=None):
        """(ids, scores, labels) [N, k], best first, padded with -1 / -inf /
        -1 where Milvus returns fewer hits."""
        rerank = self.rerank if rerank is None else bool(rerank)
        limit = rerank_candidates(k) if rerank else k
        fields = ["label", "vector"] if rerank else ["label"]
        flt = "" if labels is None else _label_filter(labels.tolist())
        n = len(queries)
        ids = np.full((n, limit), -1, np.int64)
        scores = np.full((n, limit), -np.inf, np.float32)
        labs = np.full((n, limit), -1, np.int64)
        vectors = np.zeros((n, limit, self.dim), np.float32) if rerank else None
        sign = 1.0 if self.metric == "cosine" else -1.0
        for start in range(0, n, QUERY_CHUNK):
            chunk = queries[start:start + QUERY_CHUNK]
            hits = self._call("search", self.collection, data=list(chunk),
                              filter=flt, limit=limit, output_fields=fields,
                              search_params=self._search_params(limit),
                              consistency_level="Strong")
            for row, query_hits in enumerate(hits, start):
                for j, hit in enumerate(query_hits):
                    ids[row, j] = hit["id"]
                    scores[row, j] = sign * hit["distance"]
                    entity = hit["entity"]
                    labs[row, j] = entity["label"]
                    if rerank:
                        vectors[row, j] = entity["vector"]
        if rerank:
            scores = self._exact_scores(queries, vectors, ids >= 0)
        # Order: score descending, then the lower id; missing hits last.
        order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids),
                            -scores), axis=1)[:, :k]
        ids, scores, labs = (np.take_along_axis(a, order, 1)
                             for a in (ids, scores, labs))
        return ids, scores.astype(np.float32), labs

    def _exact_scores(self, queries, vectors, valid):
        """Exact scores [N, L] of candidate vectors [N, L, D] (-inf where
        not valid), with the other backends' formulas."""
        n, limit, dim = vectors.shape
        if self.metric == "cosine":
            q = l2_normalized(queries)
            g = l2_normalized(vectors.reshape(-1, dim)).reshape(n, limit, dim)
            s = np.einsum("nd,nld->nl", q, g)
        else:
            diff = vectors - queries[:, None, :]
            s = -np.einsum("nld,nld->nl", diff, diff)
        return np.where(valid, s, -np.inf).astype(np.float32)

    def set_search_params(self, nprobe=None, ef_search=None):
        if nprobe is not None:
            self.nprobe = int(nprobe)
        if ef_search is not None:
            self.ef_search = int(ef_search)

    # -------------------------------------------------------------- changes
    @property
    def next_id(self):
        """The next default id: the collection property, or (for a
        collection without it) one more than the largest id, read once."""
        if self._next_id is None:
            ids = self.read(["ids"])["ids"]
            self._next_id = int(ids.max()) + 1 if len(ids) else 0
        return self._next_id

    def _reserve(self, next_id):
        if next_id > self.next_id:
            self._call("alter_collection_properties", self.collection,
                       properties={NEXT_ID: str(next_id)})
            self._next_id = next_id

    def batch_rows(self):
        """Rows per insert request: about 16 MB of vectors, at most 8192."""
        return int(max(1, min(8192, (16 << 20) // (4 * self.dim))))

    def add(self, x, labels, ids, metadata, upsert=True):
        """Write rows in batches; ``upsert`` (explicit ids) replaces ids that
        exist, otherwise (fresh default ids) a plain insert. The ids are
        reserved first, so a crash leaves a gap, never a reused id."""
        self._reserve(int(ids.max()) + 1)
        method = "upsert" if upsert else "insert"
        step = self.batch_rows()
        progress = os.environ.get(_PROGRESS_ENV)
        id_list, label_list = ids.tolist(), labels.tolist()
        for b, i in enumerate(range(0, len(x), step), 1):
            rows = [{"id": id_list[j], "vector": x[j], "label": label_list[j],
                     "metadata": metadata[j]}
                    for j in range(i, min(i + step, len(x)))]
            self._call(method, self.collection, rows)
            if progress:
                with open(progress, "w") as f:
                    f.write(str(b))

    def remove(self, ids):
        found = self.contains(ids)
        if not np.all(found):
            raise KeyError(f"ids not in the index: {first_values(ids[~found])}")
        id_list = ids.tolist()
        for i in range(0, len(id_list), ID_CHUNK):
            self._call("delete", self.collection, ids=id_list[i:i + ID_CHUNK])

    def flush(self):
        """Seal what was written (Milvus persists the growing segments)."""
        self._call("flush", self.collection)

    # ---------------------------------------------------------- persistence
    def save(self, directory, header):
        """Flush, then write DIR/manifest.json (no data files: the data is
        in Milvus). An embedded .db inside DIR is recorded relative to DIR,
        so the directory can be moved."""
        directory = os.path.abspath(os.fspath(directory))
        self.flush()
        params = self.params()
        params.pop("timeout")
        uri = self.uri
        if self.embedded and _inside(uri, directory):
            uri = os.path.relpath(uri, directory)
        params["uri"] = uri
        manifest = dict(header, params=params, size=self.count(),
                        next_id=self.next_id, files={})
        embedded_inside = uri if self.embedded and not os.path.isabs(uri) else None
        storage.write_manifest(directory, manifest, keep=embedded_inside)
        return directory

    @classmethod
    def load(cls, directory, m, uri=None, token=None, timeout=None):
        try:
            dim, metric, params = int(m["dim"]), m["metric"], dict(m["params"])
            saved_uri, collection = params["uri"], params["collection"]
        except (KeyError, TypeError, ValueError) as e:
            raise storage.IndexFormatError(
                f"{directory!r}: manifest entry missing or bad: {e}") from None
        if uri is None:
            uri = saved_uri
            if is_embedded(uri) and not os.path.isabs(uri):
                uri = os.path.join(os.path.abspath(directory), uri)

        def gone(text):
            return storage.IndexFormatError(f"index {directory!r}: {text}")
        return cls(dim, metric, uri, collection,
                   index_type=params.get("index_type"),
                   nprobe=params.get("nprobe"), ef_search=params.get("ef_search"),
                   rerank=params.get("rerank", False),
                   timeout=timeout or params.get("timeout", DEFAULT_TIMEOUT),
                   token=token, create=False, missing_error=gone)


def _label_filter(values):
    return "label in [" + ", ".join(str(int(v)) for v in values) + "]"


def _inside(path, directory):
    path, directory = os.path.abspath(path), os.path.abspath(directory)
    return os.path.commonpath([path, directory]) == directory and path != directory

