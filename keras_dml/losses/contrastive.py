"""Contrastive loss over all in-batch pairs (PML ContrastiveLoss)."""

from typing import Any, Optional

import keras
from keras import ops as kops

from keras_dml import ops
from keras_dml._types import Tensor, TensorLike
from keras_dml.losses.base import MetricLoss, class_pair_inputs
from keras_dml.losses.pairs import References, check_references, pair_distances, pair_masks


def contrastive_loss(labels: TensorLike, embeddings: TensorLike, pos_margin: float = 0.0,
                     neg_margin: float = 0.5, references: Optional[References] = None) -> Tensor:
    """Contrastive loss with the non-zero averaging of pytorch-metric-learning.

    With d the Euclidean distance between L2-normalised embeddings, over the
    ordered pairs (i, j), i != j, of the batch:

        positive pairs (same class):      l+ = max(0, d(i,j) - pos_margin)
        negative pairs (other class):     l- = max(0, neg_margin - d(i,j))
        loss = mean_{l+ > 0} l+  +  mean_{l- > 0} l-

    Each mean is over the pairs whose term is strictly positive and is 0 when
    there is none (PML's ``AvgNonZeroReducer`` applied to each sub-loss).
    Both orders of every pair are counted, as in PML; this does not change
    the means.

    With ``references`` (``keras_dml.losses.References``, PML's
    ``ref_emb``/``ref_labels``) the pairs are (i, j) with i in the batch and
    j in the references (``pairs.pair_masks``).

    Args:
      labels: int class ids, [B].
      embeddings: [B, D] (normalised here).
      references: optional ``References`` [M, D] to compare the batch with.
    Returns:
      A scalar in the dtype of ``embeddings``.
    """
    embeddings = kops.convert_to_tensor(embeddings)
    dtype = embeddings.dtype
    pos_margin = ops.constant(pos_margin, dtype)
    neg_margin = ops.constant(neg_margin, dtype)
    references = check_references(references, embeddings)
    d = pair_distances(embeddings, references)
    positive, negative = pair_masks(labels, references)
    zeros = kops.zeros_like(d)
    pos_losses = kops.where(positive, kops.relu(d - pos_margin), zeros)
    neg_losses = kops.where(negative, kops.relu(neg_margin - d), zeros)
    return ops.positive_mean(pos_losses) + ops.positive_mean(neg_losses)


@keras.saving.register_keras_serializable(package="keras_dml")
class ContrastiveLoss(MetricLoss):
    """Contrastive loss on embeddings ``y_pred`` [B, D], class ids ``y_true``.

    Equals pytorch-metric-learning's ``ContrastiveLoss(pos_margin,
    neg_margin)``; the defaults are the Proxy Anchor authors' (neg_margin
    0.5). See ``contrastive_loss`` for the formula.
    """

    short_name = "contrastive"
    supports_references = True

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 0.5,
                 name: str = "contrastive_loss", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.pos_margin = pos_margin
        self.neg_margin = neg_margin

    def call(self, y_true: TensorLike, y_pred: TensorLike,
             references: Optional[References] = None) -> Tensor:
        labels, embeddings = class_pair_inputs(y_true, y_pred)
        return contrastive_loss(labels, embeddings, self.pos_margin,
                                self.neg_margin, references)
