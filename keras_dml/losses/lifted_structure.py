"""Lifted structured loss (Oh Song et al., CVPR 2016; PML LiftedStructureLoss)."""

from typing import Any

import keras
from keras import ops as kops

from keras_dml import ops
from keras_dml._types import Tensor, TensorLike
from keras_dml.losses.base import MetricLoss, class_pair_inputs


def lifted_structure_loss(labels: TensorLike, embeddings: TensorLike, neg_margin: float = 1.0,
                          pos_margin: float = 0.0) -> Tensor:
    """Lifted structured loss as pytorch-metric-learning computes it.

    With d the Euclidean distance between L2-normalised embeddings and
    N(i) the samples of another class than i, every ordered positive pair
    (a, p), a != p, has

        J(a,p) = LSE( {neg_margin - d(a,n)}_{n in N(a)} U {neg_margin - d(p,n)}_{n in N(p)} )
                 + d(a,p) - pos_margin
        l(a,p) = max(0, J(a,p))^2 / 2

    (a plain logsumexp, no "+1"), and the loss is the mean of l over all
    positive pairs (PML's ``MeanReducer``); 0 with a zero gradient if the
    batch has no positive or no negative pair. The LSE over the union is
    ``logaddexp(L_a, L_p)`` with ``L_i = LSE_{n in N(i)} (neg_margin - d(i,n))``,
    so the cost is O(B^2).

    Args:
      labels: int class ids, [B].
      embeddings: [B, D] (normalised here).
    Returns:
      A scalar in the dtype of ``embeddings``.
    """
    embeddings = kops.convert_to_tensor(embeddings)
    dtype = embeddings.dtype
    neg_margin = ops.constant(neg_margin, dtype)
    pos_margin = ops.constant(pos_margin, dtype)
    d = ops.pairwise_distances(ops.l2_normalize(embeddings))
    positive, negative = ops.label_masks(labels)
    per_anchor = ops.masked_logsumexp(neg_margin - d, negative, axis=1)  # [B]
    pair_lse = _logaddexp(kops.expand_dims(per_anchor, 1),
                          kops.expand_dims(per_anchor, 0))            # [B, B]
    per_pair = kops.square(kops.relu(pair_lse + d - pos_margin)) / 2
    # Either every sample has a negative or none has (a single class).
    any_negative = kops.any(negative)
    kept = kops.logical_and(positive, any_negative)
    return ops.masked_mean(per_pair, kept)


def _logaddexp(a, b):
    """``log(exp(a) + exp(b))`` with the max shifted out; its gradient is the
    exact softmax weights, 1/2 each at a tie (forms built on ``maximum`` give
    all of it to one argument there; ``where``: see ``ops.matmul_t``)."""
    m = kops.stop_gradient(kops.where(a >= b, a, b))
    return m + kops.log(kops.exp(a - m) + kops.exp(b - m))


@keras.saving.register_keras_serializable(package="keras_dml")
class LiftedStructureLoss(MetricLoss):
    """Lifted structured loss on embeddings ``y_pred`` [B, D], ids ``y_true``.

    Equals pytorch-metric-learning's ``LiftedStructureLoss(neg_margin,
    pos_margin)`` (its defaults, 1 and 0). See ``lifted_structure_loss``.
    """

    short_name = "lifted_structure"

    def __init__(self, neg_margin: float = 1.0, pos_margin: float = 0.0,
                 name: str = "lifted_structure_loss", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.neg_margin = neg_margin
        self.pos_margin = pos_margin

    def call(self, y_true: TensorLike, y_pred: TensorLike) -> Tensor:
        labels, embeddings = class_pair_inputs(y_true, y_pred)
        return lifted_structure_loss(labels, embeddings, self.neg_margin,
                                     self.pos_margin)
