"""Triplet margin loss with in-batch triplet mining (PML TripletMarginMiner + TripletMarginLoss)."""

from typing import Any, Optional

import keras
from keras import ops as kops

from keras_dml import ops
from keras_dml._types import Tensor, TensorLike
from keras_dml.losses import pairs  # noqa: E402  (the shared pair masks)
from keras_dml.losses.base import MetricLoss, class_pair_inputs
from keras_dml.losses.triplet_hinge import chunked_triplet_hinge

MININGS = ("all", "semihard", "hard")


def _check_mining(mining):
    if mining not in MININGS:
        raise ValueError(
            f"mining must be one of {MININGS}; got {mining!r}.")


def _check_block_size(block_size):
    if block_size is not None and int(block_size) < 1:
        raise ValueError(f"block_size must be None or >= 1; got {block_size}.")


def triplet_loss(labels: TensorLike, embeddings: TensorLike, margin: float = 0.1,
                 mining: str = "semihard", block_size: Optional[int] = None,
                 references: Optional["pairs.References"] = None) -> Tensor:
    """Triplet margin loss over the mined in-batch triplets.

    With d the Euclidean (not squared) distance between L2-normalised
    embeddings, every triplet (a, p, n) of the batch with a != p of the same
    class and n of another class has the margin m = d(a,n) - d(a,p) and the
    loss

        l(a,p,n) = max(0, d(a,p) - d(a,n) + margin).

    Mining (pytorch-metric-learning ``TripletMarginMiner(margin,
    type_of_triplets=mining)``) keeps the triplets with ``m <= margin`` and,
    for ``"hard"``, also ``m <= 0``; for ``"semihard"``, also ``m > 0``;
    ``"all"`` adds nothing. The result is the mean of l over the kept
    triplets with l > 0 (PML's ``AvgNonZeroReducer``), 0 (with a zero
    gradient) if there is none.

    Memory: d is computed once ([B, B]); the triplets are processed in
    blocks of ``block_size`` anchors (``chunked_triplet_hinge``: the sum of l
    and the count of l > 0 are accumulated over the blocks, then divided; the
    gradient, (d sum) / count, is accumulated blockwise too), so at most
    ``block_size * B * B`` triplets live at once, forward and backward. The
    default block keeps that under ~1M elements (B = 180: 6 blocks of 32
    anchors). Works under XLA (``jit_compile=True``).

    With ``references`` (``keras_dml.losses.References``, PML's
    ``ref_emb``/``ref_labels``) p and n run over the M references: d is
    [B, M], a block holds ``block_size * M * M`` triplets, and each anchor's
    own enqueued copy is never its positive (``pairs.pair_masks``).

    Args:
      labels: int class ids, [B].
      embeddings: [B, D] (normalised here).
      margin: the triplet margin (also the miner's margin).
      mining: "all", "semihard" or "hard".
      block_size: anchors per block; None: automatic (~1M triplets/block).
      references: optional ``References`` [M, D] to compare the batch with.
    Returns:
      A scalar in the dtype of ``embeddings``.
    """
    _check_mining(mining)
    _check_block_size(block_size)
    embeddings = kops.convert_to_tensor(embeddings)
    dtype = embeddings.dtype
    references = pairs.check_references(references, embeddings)
    d = pairs.pair_distances(embeddings, references)
    positive, negative = pairs.pair_masks(labels, references)
    # One [B, B] row tensor for the blocks: +1 positive, -1 negative, 0 self
    # (and 0 on the padded anchors of the last block: no triplet).
    relation = kops.cast(positive, dtype) - kops.cast(negative, dtype)
    margin_t = ops.constant(margin, dtype)

    def valid_fn(anchors, rows):
        del anchors
        d_rows, rel = rows
        kept = kops.logical_and(kops.expand_dims(rel > 0, 2),
                                kops.expand_dims(rel < 0, 1))
        # m(a, p, n) = d(a, n) - d(a, p)
        triplet_margin = kops.expand_dims(d_rows, 1) - kops.expand_dims(d_rows, 2)
        kept = kops.logical_and(kept, triplet_margin <= margin_t)
        if mining == "hard":
            kept = kops.logical_and(kept, triplet_margin <= 0)
        elif mining == "semihard":
            kept = kops.logical_and(kept, triplet_margin > 0)
        return kept

    # The hinge d(a,p) - d(a,n) + margin equals margin - m exactly (IEEE
    # subtraction is sign-symmetric), so "active" is l > 0 of the formula.
    return chunked_triplet_hinge(d, [d, relation], valid_fn, margin,
                                 block_size, nonzero=True)


@keras.saving.register_keras_serializable(package="keras_dml")
class TripletLoss(MetricLoss):
    """Triplet loss on embeddings ``y_pred`` [B, D] with class ids ``y_true``.

    Equals pytorch-metric-learning's ``TripletMarginMiner(margin,
    type_of_triplets=mining)`` followed by ``TripletMarginLoss(margin)``, as
    the Proxy Anchor authors configure it (margin 0.1, semi-hard). See
    ``triplet_loss`` for the formula; triplets are processed in blocks of
    ``block_size`` anchors (None: automatic), so memory is
    O(block_size * B^2), not O(B^3).
    """

    short_name = "triplet"
    supports_references = True

    def __init__(self, margin: float = 0.1, mining: str = "semihard",
                 block_size: Optional[int] = None, name: str = "triplet_loss",
                 **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        _check_mining(mining)
        _check_block_size(block_size)
        self.margin = margin
        self.mining = mining
        self.block_size = None if block_size is None else int(block_size)

    def call(self, y_true: TensorLike, y_pred: TensorLike,
             references: Optional["pairs.References"] = None) -> Tensor:
        labels, embeddings = class_pair_inputs(y_true, y_pred)
        return triplet_loss(labels, embeddings, self.margin, self.mining,
                            self.block_size, references)
