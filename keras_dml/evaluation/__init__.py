"""Evaluation: retrieval metrics, continuous-label metrics, embedding, callbacks.

    kd.evaluation.retrieval_metrics(query_emb, query_labels, gallery_emb=None, ...)
    kd.evaluation.continuous_metrics(query_emb, query_labels, ...)
    kd.evaluation.embed(model, dataset) -> (embeddings, labels)
    kd.evaluation.RetrievalCallback(val_ds, ks=(1, 2, 4, 8))
    kd.evaluation.ContinuousRetrievalCallback(val_ds, ks=(1, 5, 10, 20))
    kd.evaluation.top_k_neighbours(query_emb, gallery_emb, k)
    kd.evaluation.verification_metrics(emb_a, emb_b, same) -> {"roc_auc", "eer", "tar@far=1e-3", ...}
"""

from keras_dml.evaluation.callbacks import ContinuousRetrievalCallback, RetrievalCallback
from keras_dml.evaluation.continuous import continuous_metrics
from keras_dml.evaluation.embed import embed
from keras_dml.evaluation.retrieval import retrieval_metrics
from keras_dml.evaluation.verification import verification_metrics
from keras_dml.search import top_k_neighbours

__all__ = ["ContinuousRetrievalCallback", "RetrievalCallback",
           "continuous_metrics", "embed", "retrieval_metrics",
           "top_k_neighbours", "verification_metrics"]
