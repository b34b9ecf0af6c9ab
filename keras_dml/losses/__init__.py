"""Losses: one module per loss, each a functional core and a Keras Loss."""

from keras_dml.losses.base import MetricLoss
from keras_dml.losses.proxy_anchor import ProxyAnchorLoss, proxy_anchor_loss
from keras_dml.losses.proxy_nca import ProxyNCALoss, proxy_nca_loss
from keras_dml.losses.soft_triple import SoftTripleLoss, soft_triple_loss

__all__ = [
    "MetricLoss",
    "ProxyAnchorLoss", "proxy_anchor_loss",
    "ProxyNCALoss", "proxy_nca_loss",
    "SoftTripleLoss", "soft_triple_loss",
]
