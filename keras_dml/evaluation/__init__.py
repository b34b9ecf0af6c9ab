"""Evaluation: retrieval metrics, continuous-label metrics, embedding, callbacks."""

from keras_dml.evaluation.continuous import continuous_metrics
from keras_dml.evaluation.retrieval import retrieval_metrics
from keras_dml.evaluation.search import top_k_neighbours

__all__ = ["continuous_metrics", "retrieval_metrics", "top_k_neighbours"]
