"""Layers: proxies, L2 normalisation, the embedding head, cross-batch memory."""

from keras_dml.layers.embedding_head import EmbeddingHead
from keras_dml.layers.memory import CrossBatchMemory
from keras_dml.layers.normalize import L2Normalize
from keras_dml.layers.proxies import Proxies

__all__ = ["CrossBatchMemory", "EmbeddingHead", "L2Normalize", "Proxies"]
