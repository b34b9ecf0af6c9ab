"""Sub-center ArcFace (Deng et al., ECCV 2020; PML SubCenterArcFaceLoss) and its outlier detection."""

import math
from typing import Any, Optional, Tuple

import keras
import numpy as np
from keras import ops as kops

from keras_dml._types import Tensor, TensorLike
from keras_dml.losses.arcface import arcface_loss, check_margin_scale
from keras_dml.losses.base import MetricLoss, proxy_inputs


def subcenter_arcface_loss(labels: TensorLike, cosines: TensorLike, sub_centers: int = 3,
                           margin: float = 28.6, scale: float = 64.0) -> Tensor:
    """Sub-center ArcFace from cosines to K sub-centres per class, [B, C*K].

    Column ``c*K + k`` is sub-centre k of class c (class-major, as
    ``keras_dml.layers.Proxies(C, proxies_per_class=K)`` lays them out).
    Each class keeps its closest sub-centre,

        cos_{i,c} = max_k cos_{i,c,k},

    and ``arcface_loss`` is applied to these [B, C] cosines (PML
    ``SubCenterArcFaceLoss``).
    """
    cosines = kops.convert_to_tensor(cosines)
    k = int(sub_centers)
    num_classes = cosines.shape[1] // k
    per_class = kops.max(kops.reshape(cosines, (-1, num_classes, k)), axis=2)
    return arcface_loss(labels, per_class, margin, scale)


def subcenter_outliers(embeddings: TensorLike, labels: TensorLike, proxies: TensorLike,
                       sub_centers: int, threshold: float = 75.0) -> Tuple[np.ndarray, np.ndarray]:
    """Outliers of a data set under Sub-center ArcFace (PML ``get_outliers``).

    For each class c present in ``labels``: every example of c votes for its
    nearest sub-centre of c (largest cosine); the sub-centre with most votes
    (the lowest index on a tie) is the class's dominant centre. Examples of
    c whose angle to the dominant centre exceeds ``threshold`` degrees
    (cosine < cos(threshold)) are outliers, candidates for label noise.

    Runs in numpy on the whole set, one class at a time (offline analysis,
    not a train step); a data set too large for memory can be embedded in
    chunks first (``keras_dml.retrieval`` / ``model.predict``).

    Args:
      embeddings: [N, D] embeddings of the data set (need not be normalised).
      labels: [N] int class ids in [0, C).
      proxies: [C*K, D] sub-centres, class-major (the ``Proxies`` layer's
        ``proxies`` weight).
      sub_centers: K.
      threshold: the angle in degrees (PML's default 75).
    Returns:
      ``(outliers, dominant_centers)``: int64 indices into the data set,
      ordered by class then index (as PML returns them), and the [C, D]
      dominant centre of each class, as given in ``proxies`` (not
      normalised; NaN rows for classes absent from ``labels``; PML's [D, C]
      matrix transposed).
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    centers = np.asarray(proxies, dtype=np.float64)
    k = int(sub_centers)
    if emb.ndim != 2 or centers.ndim != 2 or emb.shape[1] != centers.shape[1]:
        raise ValueError(f"embeddings [N, D] and proxies [C*K, D] must share D; "
                         f"got {emb.shape} and {centers.shape}.")
    if len(labels) != len(emb):
        raise ValueError(f"{len(labels)} labels for {len(emb)} embeddings.")
    if k < 1 or centers.shape[0] % k:
        raise ValueError(f"proxies has {centers.shape[0]} rows, not a multiple "
                         f"of sub_centers={k}.")
    num_classes = centers.shape[0] // k
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}).")
    if not (np.all(np.isfinite(emb)) and np.all(np.isfinite(centers))):
        raise ValueError("embeddings or proxies contain NaN or Inf values.")

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    raw = centers.reshape(num_classes, k, -1)
    emb, centers = unit(emb), unit(centers).reshape(num_classes, k, -1)
    cos_threshold = math.cos(math.radians(float(threshold)))
    dominant = np.full((num_classes, emb.shape[1]), np.nan)
    outliers = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        cos = emb[members] @ centers[c].T                        # [n_c, K]
        votes = np.bincount(np.argmax(cos, axis=1), minlength=k)
        best = int(np.argmax(votes))
        dominant[c] = raw[c, best]
        outliers.append(members[cos[:, best] < cos_threshold])
    found = np.concatenate(outliers) if outliers else np.zeros(0, np.int64)
    return found.astype(np.int64), dominant


@keras.saving.register_keras_serializable(package="keras_dml")
class SubCenterArcFaceLoss(MetricLoss):
    """Sub-center ArcFace on ``y_pred`` = cosines to sub-centres [B, C*K].

    Use with ``keras_dml.layers.Proxies(num_classes, proxies_per_class=K)``
    (K = ``sub_centers``). Defaults are PML's (margin 28.6 degrees, scale 64,
    3 sub-centres). See ``subcenter_arcface_loss``; ``get_outliers`` finds
    the examples far from their class's dominant sub-centre.
    """

    short_name = "subcenter_arcface"
    takes_proxies = True

    @property
    def proxies_per_class(self) -> int:
        return self.sub_centers

    def __init__(self, margin: float = 28.6, scale: float = 64.0, sub_centers: int = 3,
                 num_classes: Optional[int] = None, name: str = "subcenter_arcface_loss",
                 **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        check_margin_scale(margin, scale, degrees=True)
        if int(sub_centers) < 1:
            raise ValueError(f"sub_centers must be >= 1; got {sub_centers}.")
        self.margin = margin
        self.scale = scale
        self.sub_centers = int(sub_centers)
        self.num_classes = num_classes

    def call(self, y_true: TensorLike, y_pred: TensorLike) -> Tensor:
        labels, cosines, _ = proxy_inputs(y_true, y_pred, self.sub_centers,
                                          self.num_classes)
        return subcenter_arcface_loss(labels, cosines, self.sub_centers,
                                      self.margin, self.scale)

    def get_outliers(self, embeddings: TensorLike, labels: TensorLike, proxies: TensorLike,
                     threshold: float = 75.0) -> Tuple[np.ndarray, np.ndarray]:
        """``subcenter_outliers`` with this loss's ``sub_centers``;
        ``proxies`` is the ``Proxies`` layer (or its weight)."""
        proxies = getattr(proxies, "proxies", proxies)
        return subcenter_outliers(kops.convert_to_numpy(embeddings), labels,
                                  kops.convert_to_numpy(proxies),
                                  self.sub_centers, threshold)
