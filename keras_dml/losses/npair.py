"""N-pair loss (Sohn, NIPS 2016; PML NPairsLoss)."""

from typing import Any

import keras
from keras import ops as kops

from keras_dml import ops
from keras_dml._types import Tensor, TensorLike
from keras_dml.losses.base import MetricLoss, class_pair_inputs


def npair_loss(labels: TensorLike, embeddings: TensorLike) -> Tensor:
    """N-pair loss over one anchor-positive pair per class.

    Each class with at least two samples in the batch gives one pair: the
    anchor is its first sample in batch order, the positive its second. With
    A the anchors and P the positives (raw embeddings, not normalised) of the
    N pairs,

        loss = 1/N sum_i [ -A_i.P_i + log sum_j exp(A_i.P_j) ]

    the mean cross-entropy of the logits A P^T with each anchor's own pair as
    target; 0 (with a zero gradient) if no class has two samples. Computed
    with [B, B] masks, no gathers: a sample is an anchor if it is its class's
    first and the class has >= 2 samples, a positive if it is its class's
    second.

    Args:
      labels: int class ids, [B].
      embeddings: [B, D], used as they are.
    Returns:
      A scalar in the dtype of ``embeddings``.
    """
    embeddings = kops.convert_to_tensor(embeddings)
    same = kops.equal(kops.expand_dims(labels, 1), kops.expand_dims(labels, 0))
    index = kops.arange(kops.shape(labels)[0])
    earlier = kops.expand_dims(index, 1) > kops.expand_dims(index, 0)   # j < i
    # rank[i]: how many samples of i's class come before i.
    rank = kops.sum(kops.cast(kops.logical_and(same, earlier), "int32"), axis=1)
    count = kops.sum(kops.cast(same, "int32"), axis=1)
    is_anchor = kops.logical_and(kops.equal(rank, 0), count >= 2)
    is_positive = kops.equal(rank, 1)
    logits = ops.matmul_t(embeddings, embeddings)
    columns = kops.broadcast_to(kops.expand_dims(is_positive, 0),
                                kops.shape(same))
    target = kops.logical_and(same, columns)   # row i: the positive of i's class
    log_norm = ops.masked_logsumexp(logits, columns, axis=1)
    target_logit = kops.sum(
        kops.where(target, logits, kops.zeros_like(logits)), axis=1)
    return ops.masked_mean(log_norm - target_logit, is_anchor)


@keras.saving.register_keras_serializable(package="keras_dml")
class NPairLoss(MetricLoss):
    """N-pair loss on embeddings ``y_pred`` [B, D] with class ids ``y_true``.

    Equals pytorch-metric-learning's ``NPairsLoss`` with an unnormalised dot
    product, as the Proxy Anchor authors configure it
    (``normalize_embeddings=False``). See ``npair_loss`` for the formula.
    """

    short_name = "npair"

    def __init__(self, name: str = "npair_loss", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def call(self, y_true: TensorLike, y_pred: TensorLike) -> Tensor:
        labels, embeddings = class_pair_inputs(y_true, y_pred)
        return npair_loss(labels, embeddings)
