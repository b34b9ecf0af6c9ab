"""Retrieval: an index of embeddings with exact, faiss or Milvus search,
calibrated match decisions, and index persistence.

    index = kd.retrieval.Index(dim, metric="cosine", backend="exact")   # or backend="faiss", faiss_factory="HNSW32"
    index = kd.retrieval.Index(dim, backend="milvus", uri="runs/gallery.db",   # or uri="http://host:19530"
                               collection="gallery")
    index.add(embeddings, labels=None, ids=None, metadata=None)        # ids default to 0..N-1
    result = index.search(queries, k=10)      # result.ids [N, k], result.scores [N, k], result.labels [N, k]
    result = index.search(queries, k=10, labels=[3, 7])   # filtered: only items with these labels
    index.remove(ids); len(index)
    index.save(directory); index = kd.retrieval.Index.load(directory)
    threshold = kd.retrieval.calibrate(index, embeddings, labels, target_precision=0.9)
    decision = index.match(queries, threshold)   # .labels [N] (-1 = unknown), .scores [N], .ids [N]
    index = kd.retrieval.build_index(model, dataset)   # through kd.evaluation.embed
    index.model_fingerprint                   # kd.retrieval.model_fingerprint(model), saved
    kd.retrieval.check_model_matches(model_or_savedmodel_dir, index_or_dir)  # raises ModelMismatchError

Serving: ``kd.export.export_retrieval_model(model, index, path, k=10, ...)``.
"""

from keras_dml.retrieval.calibration import Calibration, calibrate
from keras_dml.retrieval.index import (
                                       Index,
                                       MatchResult,
                                       ModelMismatchError,
                                       SearchResult,
                                       build_index,
                                       check_model_matches,
                                       model_fingerprint,
)
from keras_dml.retrieval.milvus import MilvusConnectionError
from keras_dml.retrieval.storage import FORMAT_VERSION, IndexFormatError

__all__ = ["Calibration", "FORMAT_VERSION", "Index", "IndexFormatError",
           "MatchResult", "MilvusConnectionError", "ModelMismatchError", "SearchResult",
           "build_index", "calibrate", "check_model_matches", "model_fingerprint"]
