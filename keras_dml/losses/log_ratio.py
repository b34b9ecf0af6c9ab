"""Log-ratio loss (Kim, Seo, Laptev, Cho, Kwak, CVPR 2019).

"Deep Metric Learning Beyond Binary Supervision": with continuous labels, the
ratio of embedding distances should match the ratio of label distances for
every triplet (a, i, j) of the minibatch (dense triplet mining).
"""

from typing import Any, Optional, Union

import keras
from keras import ops as kops

from keras_dml import _backend, ops
from keras_dml._types import Tensor, TensorLike
from keras_dml.losses.base import ContinuousLoss, LabelDistance, check_anchors

RATIOS = ("log", "plain")


def _check_ratio(ratio):
    if ratio not in RATIOS:
        raise ValueError(f"ratio must be one of {RATIOS}; got {ratio!r}.")


def _embedding_distances(embeddings, squared, distance_epsilon, first_only):
    """D(a, i) for a = 0 ([1, B]) or every a ([B, B]).

    ``distance_epsilon`` is added to the squared distance (before the square
    root when ``squared=False``), as the authors' ``L2dist`` does.
    """
    if first_only:
        # Direct differences: exact (no |x|^2 + |y|^2 - 2xy cancellation).
        diff = embeddings - embeddings[:1]
        sq = kops.expand_dims(kops.sum(kops.square(diff), axis=1), 0)
    else:
        # Distances are translation invariant; centring reduces the
        # cancellation of the matmul form in float32.
        centred = embeddings - kops.mean(embeddings, axis=0, keepdims=True)
        sq = ops.pairwise_squared_distances(centred)
    sq = sq + ops.constant(distance_epsilon, sq.dtype)
    return sq if squared else ops.safe_sqrt(sq)


def log_ratio_loss(embeddings: TensorLike, label_dist: TensorLike, anchors: str = "all",
                   squared: bool = True, epsilon: float = 1e-6,
                   distance_epsilon: Union[str, float] = "auto", ratio: str = "log") -> Tensor:
    """Log-ratio loss from embeddings and label distances, O(B^2).

    For an anchor a and the n = B - 1 other samples, with

        r_a(i) = log(D(f_a, f_i) + eps) - log(D_y(a, i) + eps)

    the loss of the anchor is the mean over the n (n - 1) / 2 unordered pairs
    {i, j} (i, j != a, i != j) of

        ((log D(a,i) - log D(a,j)) - (log D_y(a,i) - log D_y(a,j)))^2
          = (r_a(i) - r_a(j))^2.

    Exact O(B^2) evaluation (no B^3 triplet tensor): a sum of squared pairwise
    differences is ``sum_{i<j} (r_i - r_j)^2 = n * sum_i (r_i - mean r)^2``,
    so the anchor's loss is ``2 / (n - 1) * sum_i (r_i - mean r)^2`` (twice
    the unbiased variance of r_a), computed per anchor row of [B, B] tensors
    (the centred, two-pass form is stable in float32).

    ``anchors="first"``: only row 0 is the anchor (the authors' code, where
    each batch is built around one anchor). ``anchors="all"``: every sample is
    an anchor in turn and the anchors' losses are averaged.

    D is the squared Euclidean distance (``squared=True``, the paper) or the
    Euclidean distance (``squared=False``, the authors' code), each computed
    as ``||f_a - f_i||^2 + de`` (then square-rooted). ``distance_epsilon`` de:
    "auto" is the authors' ``L2dist`` constant ``1e-4 / dim`` for the
    Euclidean distance and 0 for the squared one; or a float. With de = 0 the
    square root has a zero gradient at coincident embeddings, so gradients
    stay finite.

    Args:
      embeddings: [B, D] (not normalised: the loss needs no unit sphere).
      label_dist: [B, B] label distances (for "first", row 0 is used; a
        [1, B] row is accepted too).
      anchors: "all" or "first".
      squared: squared Euclidean (True) or Euclidean (False) distance.
      epsilon: added inside both logarithms (> 0).
      distance_epsilon: "auto" or a float >= 0, see above.
      ratio: "log" (the loss above) or "plain": the ablation that matches
        the ratios themselves, the mean over the n (n - 1) ordered pairs
        (i, j) of ``(x_i / x_j - y_i / y_j)^2`` with ``x = D(a, .) + eps``,
        ``y = D_y(a, .) + eps`` (see ``_plain_ratio_rows``).
    Returns:
      A scalar; 0 (with a zero gradient) when B < 3.
    """
    check_anchors(anchors)
    _check_ratio(ratio)
    embeddings = kops.convert_to_tensor(embeddings)
    dtype = embeddings.dtype
    label_dist = kops.cast(label_dist, dtype)
    if distance_epsilon == "auto":
        if squared:
            distance_epsilon = 0.0
        else:
            distance_epsilon = (ops.constant(1e-4, dtype)
                                / kops.cast(kops.shape(embeddings)[1], dtype))
    first = anchors == "first"
    d = _embedding_distances(embeddings, squared, distance_epsilon, first)
    if first:
        label_dist = label_dist[:1]
    eps = ops.constant(epsilon, dtype)
    batch = kops.shape(embeddings)[0]
    rows = kops.shape(d)[0]
    # The anchor itself (column a of row a) is not one of the others.
    others = kops.logical_not(_anchor_mask(rows, batch))
    enough = kops.cast(batch, "int32") >= 3
    if ratio == "plain":
        per_anchor = _plain_ratio_rows(d + eps, label_dist + eps, others, batch)
        loss = ops.divide_no_nan(kops.sum(per_anchor), kops.cast(rows, dtype))
        return kops.where(enough, loss, kops.zeros_like(loss))
    r = kops.log(d + eps) - kops.log(label_dist + eps)      # [A, B]
    r = kops.where(others, r, kops.zeros_like(r))
    n = kops.cast(batch - 1, dtype)
    mean = ops.divide_no_nan(kops.sum(r, axis=1, keepdims=True), n)
    centred = kops.where(others, r - mean, kops.zeros_like(r))
    per_anchor = 2.0 * ops.divide_no_nan(
        kops.sum(kops.square(centred), axis=1), n - 1.0)
    loss = ops.divide_no_nan(kops.sum(per_anchor), kops.cast(rows, dtype))
    return kops.where(enough, loss, kops.zeros_like(loss))


def _anchor_mask(rows, batch):
    """Boolean [rows, batch]: column a of row a (the anchor itself)."""
    return kops.equal(kops.expand_dims(kops.arange(rows), 1),
                      kops.expand_dims(kops.arange(batch), 0))


def _plain_ratio_rows(x, y, others, batch):
    """Per anchor row, the mean over ordered pairs (i, j) of the others of
    ``(x_i / x_j - y_i / y_j)^2``, in O(B^2): expanding the square,

        sum_{i,j} (x_i/x_j - y_i/y_j)^2 = S(x^2) S(x^-2) - 2 S(xy) S((xy)^-1)
                                          + S(y^2) S(y^-2)

    (S: the sum over the others; the i = j terms are 0). The three products
    nearly cancel when the ratios match, so they are formed in float64
    where the backend has it (not JAX without ``jax_enable_x64``: float32
    there: ``keras_dml._backend.widest_float``).
    """
    out_dtype = x.dtype
    wide = _backend.widest_float()
    x, y = kops.cast(x, wide), kops.cast(y, wide)
    one = kops.ones_like(x)
    x = kops.where(others, x, one)
    y = kops.where(others, y, one)
    mask = kops.cast(others, wide)

    def s(v):
        return kops.sum(v * mask, axis=1)

    total = (s(x * x) * s(1.0 / (x * x)) - 2.0 * s(x * y) * s(1.0 / (x * y))
             + s(y * y) * s(1.0 / (y * y)))
    n = kops.cast(batch - 1, wide)
    per_anchor = ops.divide_no_nan(kops.maximum(total, kops.zeros_like(total)),
                                    n * (n - 1.0))
    return kops.cast(per_anchor, out_dtype)


@keras.saving.register_keras_serializable(package="keras_dml")
class LogRatioLoss(ContinuousLoss):
    """Log-ratio loss with dense triplet mining, on embeddings ``y_pred`` [B, D].

    ``y_true`` are continuous labels [B, L] (or maps / caption embeddings,
    whatever ``label_distance`` reads), or with
    ``label_distance="precomputed"`` a [B, B] label-distance matrix (with
    ``anchors="first"`` also the [B] row D_y(0, i)). See ``log_ratio_loss``
    for the formula.

    ``LogRatioLoss(anchors="first", squared=False)`` is the authors' released
    ``LogRatioLoss`` (tjddus9597/Beyond-Binary-Supervision-CVPR19): anchor =
    row 0, all (B-1)(B-2)/2 pairs of the other rows with uniform weights,
    D = sqrt(||f_0 - f_i||^2 + 1e-4/dim), ``log(x + 1e-6)`` on both D and
    D_y. The default ``anchors="all", squared=True`` is the paper's squared
    distance with every sample as an anchor.

    Args:
      anchors: "all" or "first".
      squared: squared Euclidean (paper) or Euclidean (authors' code).
      epsilon: inside the logs.
      label_distance: "squared_l2" (default), "one_minus_miou",
        "caption_set", "precomputed", or a callable ``fn(y1, y2=None)``.
      distance_epsilon: "auto" or a float, see ``log_ratio_loss``.
      label_distance_kwargs: keyword arguments of the named label distance
        (e.g. ``{"num_classes": 5}`` for "one_minus_miou").
      ratio: "log" (the paper) or "plain" (the "why not the ratio itself?"
        ablation: squared differences of ratios, see ``log_ratio_loss``).
    """

    short_name = "log_ratio"

    def __init__(self, anchors: str = "all", squared: bool = True, epsilon: float = 1e-6,
                 label_distance: LabelDistance = "squared_l2",
                 distance_epsilon: Union[str, float] = "auto",
                 label_distance_kwargs: Optional[dict] = None, ratio: str = "log",
                 name: str = "log_ratio_loss",
                 **kwargs: Any) -> None:
        super().__init__(label_distance, label_distance_kwargs, name=name, **kwargs)
        check_anchors(anchors)
        _check_ratio(ratio)
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0 (it keeps log(0) away); got {epsilon}.")
        # Another string is as wrong as a negative number (not a TypeError of >=).
        if distance_epsilon != "auto" and (isinstance(distance_epsilon, str)
                                           or not distance_epsilon >= 0):
            raise ValueError(
                f"distance_epsilon must be 'auto' or >= 0; got {distance_epsilon!r}.")
        self.anchors = anchors
        self.squared = squared
        self.epsilon = epsilon
        self.distance_epsilon = distance_epsilon
        self.ratio = ratio

    def loss_from_distances(self, embeddings: Tensor, label_dist: Tensor) -> Tensor:
        return log_ratio_loss(embeddings, label_dist, self.anchors, self.squared,
                              self.epsilon, self.distance_epsilon, self.ratio)
