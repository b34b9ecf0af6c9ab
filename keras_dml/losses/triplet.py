"""Triplet margin loss with in-batch triplet mining (PML TripletMarginMiner + TripletMarginLoss)."""

import keras
import tensorflow as tf

from keras_dml import ops
from keras_dml.losses.base import MetricLoss, class_pair_inputs

MININGS = ("all", "semihard", "hard")


def _check_mining(mining):
    if mining not in MININGS:
        raise ValueError(
            f"mining must be one of {MININGS}; got {mining!r}.")


def triplet_loss(labels, embeddings, margin=0.1, mining="semihard"):
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

    Memory: the triplets are a dense [B, B, B] tensor (a few of them live at
    once): about 16 * B^3 bytes in float32, ~93 MB at B = 180, ~270 MB at
    B = 256, ~2.1 GB at B = 512. Meant for batches up to a few hundred.

    Args:
      labels: int class ids, [B].
      embeddings: [B, D] (normalised here).
      margin: the triplet margin (also the miner's margin).
      mining: "all", "semihard" or "hard".
    Returns:
      A scalar in the dtype of ``embeddings``.
    """
    _check_mining(mining)
    embeddings = tf.convert_to_tensor(embeddings)
    dtype = embeddings.dtype
    margin = tf.constant(margin, dtype)
    d = ops.pairwise_distances(ops.l2_normalize(embeddings))
    positive, negative = ops.label_masks(labels)
    d_ap = d[:, :, None]                               # [a, p, 1]
    d_an = d[:, None, :]                               # [a, 1, n]
    triplet_margin = d_an - d_ap                       # [a, p, n]
    kept = tf.logical_and(positive[:, :, None], negative[:, None, :])
    kept = tf.logical_and(kept, triplet_margin <= margin)
    if mining == "hard":
        kept = tf.logical_and(kept, triplet_margin <= 0)
    elif mining == "semihard":
        kept = tf.logical_and(kept, triplet_margin > 0)
    losses = tf.where(kept, tf.nn.relu(margin - triplet_margin),
                      tf.zeros_like(triplet_margin))
    return ops.positive_mean(losses)


@keras.saving.register_keras_serializable(package="keras_dml")
class TripletLoss(MetricLoss):
    """Triplet loss on embeddings ``y_pred`` [B, D] with class ids ``y_true``.

    Equals pytorch-metric-learning's ``TripletMarginMiner(margin,
    type_of_triplets=mining)`` followed by ``TripletMarginLoss(margin)``, as
    the Proxy Anchor authors configure it (margin 0.1, semi-hard). See
    ``triplet_loss`` for the formula and the O(B^3) memory bound.
    """

    def __init__(self, margin=0.1, mining="semihard", name="triplet_loss",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        _check_mining(mining)
        self.margin = margin
        self.mining = mining

    def call(self, y_true, y_pred):
        labels, embeddings = class_pair_inputs(y_true, y_pred)
        return triplet_loss(labels, embeddings, self.margin, self.mining)
