"""Circle loss for class labels (Sun et al., CVPR 2020; PML CircleLoss)."""

from typing import Any, Optional

import keras
from keras import ops as kops

from keras_dml import ops
from keras_dml._types import Tensor, TensorLike
from keras_dml.losses.base import MetricLoss, class_pair_inputs
from keras_dml.losses.pairs import (
    References,
    check_references,
    pair_masks,
    pair_similarities,
    too_few_pairs,
)


def circle_loss(labels: TensorLike, embeddings: TensorLike, m: float = 0.4, gamma: float = 80.0,
                references: Optional[References] = None) -> Tensor:
    """Circle loss over the in-batch pairs (or the pairs with ``references``).

    With s the cosine similarities, P_i / N_i the positives / negatives of
    anchor i, O_p = 1 + m, O_n = -m, Delta_p = 1 - m, Delta_n = m and
    [.]_+ = max(., 0) taken without gradient (the weights are constants, as
    in the paper and PML):

        a_p = [O_p - s_p]_+      a_n = [s_n - O_n]_+
        l_i = softplus( log sum_{p in P_i} exp(-gamma a_p (s_p - Delta_p))
                      + log sum_{n in N_i} exp( gamma a_n (s_n - Delta_n)) )

    l_i = 0 for an anchor without positive or without negative, and the loss
    is the mean of l_i over the anchors with l_i > 0 (PML's
    ``AvgNonZeroReducer``), 0 if none. Both log-sum-exps are masked and
    max-shifted (``keras_dml.ops.masked_logsumexp``), so gamma = 80 does not
    overflow float16. As PML's ``GenericPairLoss``, 0 when the batch has at
    most one positive and at most one negative pair.

    Args:
      labels: int class ids, [B].
      embeddings: [B, D] (normalised here).
      m: the relaxation margin; gamma: the scale.
      references: optional ``References`` [M, D] to compare the batch with.
    Returns:
      A scalar in the dtype of ``embeddings``.
    """
    embeddings = kops.convert_to_tensor(embeddings)
    dtype = embeddings.dtype
    references = check_references(references, embeddings)
    s = pair_similarities(embeddings, references)
    positive, negative = pair_masks(labels, references)
    gamma_t = ops.constant(gamma, dtype)
    s_const = kops.stop_gradient(s)
    alpha_p = kops.relu(ops.constant(1.0 + m, dtype) - s_const)
    alpha_n = kops.relu(s_const - ops.constant(-m, dtype))
    logit_p = -gamma_t * alpha_p * (s - ops.constant(1.0 - m, dtype))
    logit_n = gamma_t * alpha_n * (s - ops.constant(m, dtype))
    lse_p = ops.masked_logsumexp(logit_p, positive, axis=1)
    lse_n = ops.masked_logsumexp(logit_n, negative, axis=1)
    per_anchor = kops.softplus(lse_p + lse_n)
    has_both = kops.logical_and(kops.any(positive, axis=1), kops.any(negative, axis=1))
    per_anchor = kops.where(has_both, per_anchor, kops.zeros_like(per_anchor))
    loss = ops.positive_mean(per_anchor)
    return kops.where(too_few_pairs(positive, negative), kops.zeros_like(loss), loss)


@keras.saving.register_keras_serializable(package="keras_dml")
class CircleLoss(MetricLoss):
    """Circle loss on embeddings ``y_pred`` [B, D] with class ids ``y_true``.

    Equals pytorch-metric-learning's ``CircleLoss(m, gamma)``; the defaults
    (m = 0.4, gamma = 80) are the paper's for fine-grained image retrieval.
    See ``circle_loss``.
    """

    short_name = "circle"
    supports_references = True

    def __init__(self, m: float = 0.4, gamma: float = 80.0, name: str = "circle_loss",
                 **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if float(gamma) <= 0:
            raise ValueError(f"gamma must be > 0; got {gamma}.")
        self.m = m
        self.gamma = gamma

    def call(self, y_true: TensorLike, y_pred: TensorLike,
             references: Optional[References] = None) -> Tensor:
        labels, embeddings = class_pair_inputs(y_true, y_pred)
        return circle_loss(labels, embeddings, self.m, self.gamma, references)
