"""Rank-N-Contrast loss (Zha, Cao, Son, Yang, Katabi, NeurIPS 2023).

"Rank-N-Contrast: Learning Continuous Representations for Regression": for
an anchor i and another sample j, every sample k at least as far from i in
label space as j is a negative of the pair (i, j), so the embedding learns
the ranking of the label distances.
"""

from typing import Any, Optional

import keras
from keras import ops as kops

from keras_dml import _backend, ops
from keras_dml._types import Tensor, TensorLike
from keras_dml.losses.base import (
    ContinuousLoss,
    LabelDistance,
    check_label_distance,
    continuous_inputs,
)


def _check_temperature(temperature):
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature!r}.")


def rank_n_contrast_from_distances(embeddings: TensorLike, label_dist: TensorLike,
                                   temperature: float = 2.0) -> Tensor:
    """Rank-N-Contrast loss from embeddings [B, D] and label distances [B, B].

    With s(i, j) = -||f_i - f_j||_2 / temperature and d(i, j) the label
    distances,

        L = 1 / (B (B - 1)) * sum_i sum_{j != i}
              -log( exp(s(i, j)) / sum_{k in S(i, j)} exp(s(i, k)) ),
        S(i, j) = {k != i : d(i, k) >= d(i, j)}      (j itself included)

    Ties in label distance are exact: every k with d(i, k) == d(i, j) is in
    S(i, j), for every j of the tie group. The diagonal of ``label_dist`` is
    never read.

    O(B^2) memory (O(B^2 log B) time), no [B, B, B] tensor: each anchor's
    row is sorted by label distance once (the anchor itself placed first,
    below every distance), the denominators of all its pairs are suffix
    logsumexps of the sorted row (``_backend.cumulative_logsumexp`` from
    the far end, so nothing overflows or underflows to log 0), and a tie
    group reads the suffix at its first, nearest position. The sum over
    pairs does not depend on their order, so nothing is sorted back.

    Computed in ``ops.accumulation_dtype`` (float32 for float16/bfloat16
    embeddings) and returned in the embeddings' dtype. The Euclidean
    distance is ``ops.safe_sqrt`` of the squared distances of the centred
    embeddings: coincident embeddings give a zero (not NaN) gradient there.

    Returns:
      A scalar; 0 with a zero gradient when B < 2 (no pair). For B = 2 the
      loss is exactly 0 (each pair is alone in its set).
    """
    _check_temperature(temperature)
    embeddings = kops.convert_to_tensor(embeddings)
    dtype = ops.dtype_of(embeddings)
    acc = ops.accumulation_dtype(dtype)
    f = kops.cast(embeddings, acc)
    dy = kops.cast(kops.convert_to_tensor(label_dist), acc)
    batch = f.shape[0]
    if batch is not None and batch < 2:
        # No pair (and no empty sort / scan below).
        return kops.cast(kops.sum(f) * ops.constant(0.0, acc), dtype)
    if batch is None:
        batch = kops.shape(f)[0]
    # Distances are translation invariant; centring reduces the cancellation
    # of the |x|^2 + |y|^2 - 2xy form.
    centred = f - kops.mean(f, axis=0, keepdims=True)
    logits = -ops.pairwise_distances(centred) / ops.constant(temperature, acc)
    # The anchor sorts first (label distances are >= 0) and, alone in its
    # group, falls in no other pair's set; its own column is dropped below.
    dy = kops.where(ops.eye_mask(batch), -kops.ones_like(dy), dy)
    # Not a stable sort: the order inside a tie group does not matter (the
    # whole group shares one set, and the sum over pairs is order-free).
    order = kops.argsort(dy, axis=1)
    dy_sorted = kops.take_along_axis(dy, order, axis=1)
    s_sorted = kops.take_along_axis(logits, order, axis=1)
    # suffix[i, p] = log sum_{q >= p} exp(s_sorted[i, q]), by pairwise
    # logaddexp: no exp of a large gap underflows to log 0, as a single max
    # shift would. Keeps the static shape, which Keras' scan loses.
    suffix = kops.reshape(
        _backend.cumulative_logsumexp(s_sorted, axis=1, reverse=True),
        kops.shape(s_sorted))
    # The first position of each entry's tie group: S(i, j) starts there.
    # Group starts are the positions whose value differs from the previous
    # one; sorting those positions (others pushed past the end) lists the
    # k-th group's start at k, and the group index is a running count.
    column = kops.arange(batch, dtype="int32")
    new_group = kops.concatenate(
        [kops.ones_like(dy_sorted[:, :1], dtype="bool"),
         kops.not_equal(dy_sorted[:, 1:], dy_sorted[:, :-1])], axis=1)
    columns = kops.broadcast_to(kops.expand_dims(column, 0), kops.shape(dy_sorted))
    starts = kops.sort(kops.where(new_group, columns, kops.full_like(columns, batch)),
                       axis=1)
    group = kops.cumsum(kops.cast(new_group, "int32"), axis=1) - 1
    group_start = kops.take_along_axis(starts, group, axis=1)
    log_denominator = kops.take_along_axis(suffix, group_start, axis=1)
    terms = log_denominator - s_sorted                  # -log p(j | i), [B, B]
    is_pair = kops.expand_dims(column, 0) > 0            # column 0: the anchor
    total = kops.sum(kops.where(is_pair, terms, kops.zeros_like(terms)))
    pairs = kops.cast(batch * (batch - 1), acc)
    loss = ops.divide_no_nan(total, pairs)
    return kops.cast(loss, dtype)


def rank_n_contrast_loss(labels: TensorLike, embeddings: TensorLike, temperature: float = 2.0,
                         label_distance: LabelDistance = "l1",
                         label_distance_kwargs: Optional[dict] = None) -> Tensor:
    """Rank-N-Contrast loss of embeddings [B, D] with continuous labels.

        L = 1 / (B (B - 1)) * sum_i sum_{j != i}
              -log( exp(s(i, j)) / sum_{k != i, d(i,k) >= d(i,j)} exp(s(i, k)) )

    s(i, j) = -||f_i - f_j||_2 / temperature, d = ``label_distance`` of the
    labels (the authors' defaults: L1 label distance, Euclidean feature
    distance, temperature 2). See ``rank_n_contrast_from_distances`` for the
    O(B^2) evaluation and the handling of ties.

    The paper's loss over two augmented views of N samples (normalised by
    1 / (2N (2N - 1))) is this loss on the 2N concatenated embeddings with
    the labels repeated.

    Args:
      labels: [B, L] (or [B]) label vectors read by ``label_distance``, or
        with ``label_distance="precomputed"`` a [B, B] label-distance matrix.
      embeddings: [B, D].
      temperature: > 0.
      label_distance: "l1" (default), "squared_l2", "one_minus_miou",
        "caption_set", "precomputed", or a callable ``fn(y1, y2=None)``.
      label_distance_kwargs: keyword arguments of the named distance.
    Returns:
      A scalar; 0 (zero gradient) when B < 2.
    """
    _check_temperature(temperature)
    check_label_distance(label_distance)
    embeddings, dy = continuous_inputs(
        labels, embeddings, label_distance, label_distance_kwargs,
        first_row_only=False, name="rank_n_contrast_loss")
    return rank_n_contrast_from_distances(embeddings, dy, temperature)


@keras.saving.register_keras_serializable(package="keras_dml")
class RankNContrastLoss(ContinuousLoss):
    """Rank-N-Contrast loss (Zha et al., NeurIPS 2023) on embeddings [B, D].

    ``y_true``: continuous labels [B, L] read by ``label_distance`` (as in
    ``LogRatioLoss``), or a [B, B] matrix with
    ``label_distance="precomputed"``. For each anchor i and other sample j,
    the samples at least as far from i in label space as j are the
    negatives:

        L = 1 / (B (B - 1)) * sum_i sum_{j != i}
              -log( exp(s(i, j)) / sum_{k != i, d(i,k) >= d(i,j)} exp(s(i, k)) )

    with s(i, j) = -||f_i - f_j||_2 / temperature. Defaults are the authors'
    (``RnCLoss(temperature=2, label_diff='l1', feature_sim='l2')``). Their
    loss takes two augmented views of each sample; here ``y_pred`` is one
    embedding per row: concatenate the views (labels repeated) to get
    theirs. See ``rank_n_contrast_from_distances``: O(B^2) memory, exact
    ties, float32 accumulation for 16-bit input.

    Args:
      temperature: > 0.
      label_distance: "l1" (default), "squared_l2", "one_minus_miou",
        "caption_set", "precomputed", or a callable ``fn(y1, y2=None)``.
      label_distance_kwargs: keyword arguments of the named label distance.
    """

    short_name = "rank_n_contrast"

    def __init__(self, temperature: float = 2.0, label_distance: LabelDistance = "l1",
                 label_distance_kwargs: Optional[dict] = None,
                 name: str = "rank_n_contrast_loss",
                 **kwargs: Any) -> None:
        super().__init__(label_distance, label_distance_kwargs, name=name, **kwargs)
        _check_temperature(temperature)
        self.temperature = temperature

    def loss_from_distances(self, embeddings: Tensor, label_dist: Tensor) -> Tensor:
        return rank_n_contrast_from_distances(embeddings, label_dist, self.temperature)
