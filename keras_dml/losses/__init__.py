"""Losses: one module per loss, each a functional core and a Keras Loss."""

from typing import Any, List, Optional, Union

from keras_dml.losses.arcface import ArcFaceLoss, arcface_loss
from keras_dml.losses.base import ContinuousLoss, MetricLoss
from keras_dml.losses.binary_triplet import BinaryTripletLoss, binary_triplet_loss
from keras_dml.losses.circle import CircleLoss, circle_loss
from keras_dml.losses.contrastive import ContrastiveLoss, contrastive_loss
from keras_dml.losses.cosface import CosFaceLoss, cosface_loss
from keras_dml.losses.dense_triplet import DenseTripletLoss, dense_triplet_loss
from keras_dml.losses.lifted_structure import LiftedStructureLoss, lifted_structure_loss
from keras_dml.losses.log_ratio import LogRatioLoss, log_ratio_loss
from keras_dml.losses.multi_similarity import (
    MultiSimilarityLoss,
    multi_similarity_loss,
    multi_similarity_pairs,
)
from keras_dml.losses.npair import NPairLoss, npair_loss
from keras_dml.losses.pairs import References
from keras_dml.losses.proxy_anchor import ProxyAnchorLoss, proxy_anchor_loss
from keras_dml.losses.proxy_nca import ProxyNCALoss, proxy_nca_loss
from keras_dml.losses.rank_n_contrast import (
    RankNContrastLoss,
    rank_n_contrast_from_distances,
    rank_n_contrast_loss,
)
from keras_dml.losses.soft_triple import SoftTripleLoss, soft_triple_loss
from keras_dml.losses.subcenter_arcface import (
    SubCenterArcFaceLoss,
    subcenter_arcface_loss,
    subcenter_outliers,
)
from keras_dml.losses.triplet import TripletLoss, triplet_loss
from keras_dml.registry import Registry

_CLASSES = (ProxyAnchorLoss, ProxyNCALoss, SoftTripleLoss, TripletLoss,
            ContrastiveLoss, MultiSimilarityLoss, NPairLoss,
            LiftedStructureLoss, LogRatioLoss, DenseTripletLoss,
            BinaryTripletLoss, RankNContrastLoss, ArcFaceLoss, CosFaceLoss,
            SubCenterArcFaceLoss, CircleLoss)
LOSSES = Registry("loss", {cls.short_name: cls for cls in _CLASSES})


def available(continuous_labels: Optional[bool] = None) -> List[str]:
    """Sorted short names of the losses (those for class or continuous labels
    only when ``continuous_labels`` is True / False)."""
    return [name for name in LOSSES.available()
            if continuous_labels is None
            or LOSSES.get(name).continuous_labels == continuous_labels]


def get(name: Union[str, MetricLoss], **kwargs: Any) -> MetricLoss:
    """The loss named ``name`` (e.g. "proxy_anchor", as in the flagfiles),
    built with ``kwargs``; a loss instance is returned as it is."""
    if isinstance(name, MetricLoss):
        if kwargs:
            raise ValueError("get() got a loss instance and keyword arguments.")
        return name
    return LOSSES.get(name)(**kwargs)


__all__ = [
    "ContinuousLoss", "LOSSES", "MetricLoss", "References", "available", "get",
    "ProxyAnchorLoss", "proxy_anchor_loss",
    "ProxyNCALoss", "proxy_nca_loss",
    "SoftTripleLoss", "soft_triple_loss",
    "TripletLoss", "triplet_loss",
    "ContrastiveLoss", "contrastive_loss",
    "MultiSimilarityLoss", "multi_similarity_loss", "multi_similarity_pairs",
    "NPairLoss", "npair_loss",
    "LiftedStructureLoss", "lifted_structure_loss",
    "LogRatioLoss", "log_ratio_loss",
    "DenseTripletLoss", "dense_triplet_loss",
    "BinaryTripletLoss", "binary_triplet_loss",
    "RankNContrastLoss", "rank_n_contrast_loss", "rank_n_contrast_from_distances",
    "ArcFaceLoss", "arcface_loss",
    "CosFaceLoss", "cosface_loss",
    "SubCenterArcFaceLoss", "subcenter_arcface_loss", "subcenter_outliers",
    "CircleLoss", "circle_loss",
]
