"""Triplet loss on binarised label distances: the "Binary Tri." baseline.

Kim et al., CVPR 2019 compare the log-ratio loss with a triplet loss that
throws the degree of similarity away: label distances are thresholded into
same / not-same and a plain triplet loss is trained on (anchor, positive,
negative).
"""

from typing import Any, Optional, Tuple

import keras
from keras import ops as kops

from keras_dml import ops
from keras_dml._types import Tensor, TensorLike
from keras_dml.losses.base import ContinuousLoss, LabelDistance, check_anchors
from keras_dml.losses.triplet_hinge import (
    check_block_size,
    chunked_triplet_hinge,
    not_anchor,
    static_dim,
    triplet_distances,
)


def binary_label_masks(label_dist: TensorLike, positives: int = 5, threshold: Optional[float] = None,
                       anchors: Optional[TensorLike] = None) -> Tuple[Tensor, Tensor]:
    """(positive, negative) bool masks [A, B] from label distances [A, B].

    Row r is anchor ``anchors[r]`` (default r); the anchor is neither.

    * ``threshold=None``: the ``positives`` nearest samples of the anchor in
      label space (ties broken by batch position, the earlier first) are
      positives, every other sample is a negative.
    * ``threshold`` given: positives are the samples with
      ``D_y(a, i) <= threshold`` (``positives`` is not used).
    """
    label_dist = kops.convert_to_tensor(label_dist)
    if anchors is None:
        anchors = kops.arange(static_dim(label_dist, 0), dtype="int32")
    not_self = not_anchor(anchors, static_dim(label_dist, 1))
    if threshold is None:
        # Rank of each sample in its row, ordered by (distance, position),
        # the anchor last: counted by comparison (exact, the same on every
        # backend, and no stable sort needed). [A, B, B] booleans, the size
        # of the triplet block the loss builds from the same rows anyway.
        big = kops.full_like(label_dist, float("inf"))
        scores = kops.where(not_self, label_dist, big)
        width = static_dim(label_dist, 1)
        column = kops.arange(width, dtype="int32")
        score_i = kops.expand_dims(scores, 2)          # [A, i, 1]
        score_k = kops.expand_dims(scores, 1)          # [A, 1, k]
        earlier = kops.expand_dims(column, 1) > kops.expand_dims(column, 0)   # k < i
        before = kops.logical_or(
            score_k < score_i,
            kops.logical_and(kops.equal(score_k, score_i), earlier[None]))
        rank = kops.sum(kops.cast(before, "int32"), axis=2)
        pos = rank < positives
    else:
        pos = label_dist <= ops.constant(threshold, ops.dtype_of(label_dist))
    pos = kops.logical_and(pos, not_self)
    neg = kops.logical_and(kops.logical_not(pos), not_self)
    return pos, neg


def binary_triplet_loss(embeddings: TensorLike, label_dist: TensorLike, positives: int = 5,
                        margin: float = 0.2, threshold: Optional[float] = None,
                        squared: bool = True, normalize: bool = True, anchors: str = "all",
                        block_size: Optional[int] = None) -> Tensor:
    """Triplet loss over (anchor, positive, negative) of binarised labels.

        L = 1/|T| sum_{(a,p,n) in T} max(0, D(f_a, f_p) - D(f_a, f_n) + margin)
        T = {(a, p, n): p positive of a, n negative of a}  (``binary_label_masks``)

    The rule is the authors' naive sampling, moved into the batch: their
    "Binary Tri." batch is an anchor, 5 random samples among its 30 nearest
    neighbours in label space (positives) and random samples from outside
    those 30 (negatives); triplets are (anchor 0, each positive, each
    negative); loss ``clamp(D(a,p) - D(a,n) + 0.2, min=1e-12)`` with
    ``Squared_L2dist`` on unit-normalised embeddings, averaged over *all*
    those triplets (``Li.sum() / N``). With such a batch and
    ``anchors="first", positives=5`` the 5 in-batch nearest are exactly their
    positives, so this is their loss (up to the 1e-12 clamp floor per inactive
    triplet). ``anchors="all"`` lets every sample be an anchor with its own
    in-batch nearest neighbours as positives.

    Memory: chunked over anchors like ``dense_triplet_loss``.
    Returns:
      A scalar; 0 with a zero gradient when there is no triplet.
    """
    check_anchors(anchors)
    embeddings = kops.convert_to_tensor(embeddings)
    first = anchors == "first"
    dist = triplet_distances(embeddings, squared, normalize, first)
    dy = kops.cast(label_dist, dist.dtype)
    if first:
        dy = dy[:1]

    def valid_fn(anchor_ids, rows):
        pos, neg = binary_label_masks(rows[0], positives, threshold, anchor_ids)
        return kops.logical_and(pos[:, :, None], neg[:, None, :])

    return chunked_triplet_hinge(dist, [dy], valid_fn, margin, block_size)


@keras.saving.register_keras_serializable(package="keras_dml")
class BinaryTripletLoss(ContinuousLoss):
    """The paper's "Binary Tri." baseline on embeddings ``y_pred`` [B, D].

    Label distances (``label_distance`` on ``y_true``, or a precomputed
    [B, B] matrix) are binarised per anchor: its ``positives`` nearest
    samples in label space are positives and the rest negatives (or, with
    ``threshold``, D_y <= threshold is positive); then the mean triplet loss
    over every (anchor, positive, negative). Defaults are the authors'
    (5 positives, margin 0.2, squared distance, normalised embeddings). See
    ``binary_triplet_loss``.
    """

    short_name = "binary_triplet"

    def __init__(self, positives: int = 5, margin: float = 0.2, threshold: Optional[float] = None,
                 squared: bool = True, normalize: bool = True, anchors: str = "all",
                 label_distance: LabelDistance = "squared_l2",
                 label_distance_kwargs: Optional[dict] = None, block_size: Optional[int] = None,
                 name: str = "binary_triplet_loss", **kwargs: Any) -> None:
        super().__init__(label_distance, label_distance_kwargs, name=name, **kwargs)
        check_anchors(anchors)
        if threshold is None and (positives is None or int(positives) < 1):
            raise ValueError(f"positives must be >= 1; got {positives}.")
        check_block_size(block_size)
        self.positives = positives
        self.margin = margin
        self.threshold = threshold
        self.squared = squared
        self.normalize = normalize
        self.anchors = anchors
        self.block_size = block_size

    def loss_from_distances(self, embeddings: Tensor, label_dist: Tensor) -> Tensor:
        return binary_triplet_loss(
            embeddings, label_dist, self.positives, self.margin, self.threshold,
            self.squared, self.normalize, self.anchors, self.block_size)
