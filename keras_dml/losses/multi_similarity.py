"""Multi-similarity loss with its pair miner (Wang et al., CVPR 2019; PML version)."""

from typing import Any, Optional, Tuple

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


def multi_similarity_pairs(labels: Tensor, similarities: TensorLike, epsilon: float = 0.1,
                           references: Optional[References] = None) -> Tuple[Tensor, Tensor]:
    """The pairs kept by PML's ``MultiSimilarityMiner(epsilon)``.

    With S the cosine similarities, a positive pair (a, p) is kept iff
    ``S(a,p) - epsilon < max_{n negative of a} S(a,n)`` and a negative pair
    (a, n) iff ``S(a,n) + epsilon > min_{p positive of a} S(a,p)``; an anchor
    without negatives keeps no positive and one without positives keeps no
    negative. If the batch has no positive pair or no negative pair, nothing
    is kept.

    With ``references`` (validated, ``pairs.check_references``) the pairs
    run over them, [B, M]. As in PML's ``CrossBatchMemory``, the miner sees
    each anchor's own enqueued copy as a positive (it can be the easiest
    one); the copy is removed from the kept positives afterwards.

    Returns boolean masks (kept positives, kept negatives), [B, B] or [B, M].
    """
    positive, negative = pair_masks(labels, references, include_self=True)
    s = kops.stop_gradient(kops.convert_to_tensor(similarities))
    eps = ops.constant(epsilon, s.dtype)
    inf = ops.constant(float("inf"), s.dtype)
    # Anchors without negatives (positives): -inf (+inf), so nothing is kept.
    hardest_neg = kops.max(kops.where(negative, s, -inf), axis=1, keepdims=True)
    easiest_pos = kops.min(kops.where(positive, s, inf), axis=1, keepdims=True)
    kept_pos = kops.logical_and(positive, s - eps < hardest_neg)
    kept_neg = kops.logical_and(negative, s + eps > easiest_pos)
    both = kops.logical_and(kops.any(positive), kops.any(negative))
    if references is not None and references.self_index is not None:
        kept_pos = kops.logical_and(kept_pos, pair_masks(labels, references)[0])
    return kops.logical_and(kept_pos, both), kops.logical_and(kept_neg, both)


def multi_similarity_loss(labels: TensorLike, embeddings: TensorLike, alpha: float = 2.0,
                          beta: float = 50.0, base: float = 0.5, epsilon: float = 0.1,
                          references: Optional[References] = None) -> Tensor:
    """Multi-similarity loss (PML ``MultiSimilarityMiner`` + ``MultiSimilarityLoss``).

    With S the cosine similarities and P_a, N_a the positive / negative pairs
    of anchor a kept by the miner (``multi_similarity_pairs``; all pairs when
    ``epsilon`` is None):

        l_a = 1/alpha log(1 + sum_{p in P_a} exp(-alpha (S(a,p) - base)))
            + 1/beta  log(1 + sum_{n in N_a} exp( beta (S(a,n) - base)))
        loss = 1/B sum_a l_a

    The mean is over all B anchors (PML's ``MeanReducer``): anchors with
    nothing kept contribute 0. Both log(1 + sum exp) are masked logsumexps.

    PML quirk, replicated: its ``GenericPairLoss`` returns 0 when every index
    list is of length <= 1, i.e. when the miner kept at most one positive
    pair and at most one negative pair; so does this function.

    With ``references`` (``keras_dml.losses.References``) S is [B, M]
    against them and the anchors are still the B batch rows (PML
    ``ref_emb``/``ref_labels``; see ``multi_similarity_pairs``).

    Args:
      labels: int class ids, [B].
      embeddings: [B, D] (normalised here).
      epsilon: the miner's margin; None for no mining (all pairs).
      references: optional ``References`` [M, D] to compare the batch with.
    Returns:
      A scalar in the dtype of ``embeddings``.
    """
    embeddings = kops.convert_to_tensor(embeddings)
    dtype = embeddings.dtype
    references = check_references(references, embeddings)
    s = pair_similarities(embeddings, references)
    if epsilon is None:
        kept_pos, kept_neg = pair_masks(labels, references)
    else:
        kept_pos, kept_neg = multi_similarity_pairs(labels, s, epsilon, references)
    alpha = ops.constant(alpha, dtype)
    beta = ops.constant(beta, dtype)
    base = ops.constant(base, dtype)
    pos_terms = ops.masked_logsumexp(-alpha * (s - base), kept_pos, axis=1,
                                     add_one=True) / alpha
    neg_terms = ops.masked_logsumexp(beta * (s - base), kept_neg, axis=1,
                                     add_one=True) / beta
    # sum / B, not ops.mean: keras 3.15 computes a float64 mean in float32
    # under JAX and PyTorch.
    loss = kops.sum(pos_terms + neg_terms) / kops.cast(kops.shape(pos_terms)[0], dtype)
    # PML's GenericPairLoss: zero when each index list has length <= 1.
    return kops.where(too_few_pairs(kept_pos, kept_neg), kops.zeros_like(loss), loss)


@keras.saving.register_keras_serializable(package="keras_dml")
class MultiSimilarityLoss(MetricLoss):
    """Multi-similarity loss on embeddings ``y_pred`` [B, D], ids ``y_true``.

    Equals pytorch-metric-learning's ``MultiSimilarityMiner(epsilon)`` then
    ``MultiSimilarityLoss(alpha, beta, base)``; the defaults are the Proxy
    Anchor authors' (2, 50, 0.5, 0.1). ``epsilon=None`` turns mining off.
    See ``multi_similarity_loss`` for the formula.
    """

    short_name = "multi_similarity"
    supports_references = True

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5,
                 epsilon: float = 0.1, name: str = "multi_similarity_loss",
                 **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.alpha = alpha
        self.beta = beta
        self.base = base
        self.epsilon = epsilon

    def call(self, y_true: TensorLike, y_pred: TensorLike,
             references: Optional[References] = None) -> Tensor:
        labels, embeddings = class_pair_inputs(y_true, y_pred)
        return multi_similarity_loss(labels, embeddings, self.alpha, self.beta,
                                     self.base, self.epsilon, references)
