"""ArcFace: additive angular margin softmax (Deng et al., CVPR 2019; PML ArcFaceLoss)."""

import math
from typing import Any, Callable, Optional

import keras
from keras import ops as kops

from keras_dml import ops
from keras_dml._types import Tensor, TensorLike
from keras_dml.losses.base import MetricLoss, proxy_inputs
from keras_dml.losses.proxy_nca import sparse_cross_entropy


def margin_softmax_loss(labels: TensorLike, cosines: TensorLike,
                        target_logit: Callable[[Tensor], Tensor], scale: float) -> Tensor:
    """Mean cross-entropy of ``scale * logits``, where ``logits`` are the
    cosines with the target column replaced by ``target_logit(cos_target)``.

    The shared core of ArcFace, CosFace and Sub-center ArcFace (PML's
    ``LargeMarginSoftmaxLoss.compute_loss`` with the ``MeanReducer``).
    16-bit cosines are computed in float32 (``scale`` = 64 times a cosine
    rounded to float16 is off by ~0.03 in the logits) and the loss is
    returned in the cosines' dtype.
    """
    cosines = kops.convert_to_tensor(cosines)
    dtype = ops.dtype_of(cosines)
    acc = ops.accumulation_dtype(dtype)
    cos = kops.cast(cosines, acc)
    target_mask = ops.one_hot_mask(labels, cos.shape[1])
    zeros = kops.zeros_like(cos)
    target_cos = kops.sum(kops.where(target_mask, cos, zeros), axis=1)   # [B]
    modified = target_logit(target_cos)
    logits = kops.where(target_mask, kops.expand_dims(modified, 1), cos)
    loss = sparse_cross_entropy(labels, ops.constant(scale, acc) * logits)
    return kops.cast(loss, dtype)


def arcface_target(cos_target: Tensor, margin_radians: float) -> Tensor:
    """ArcFace's target logit: ``cos(theta + m)`` where ``theta + m <= pi``,
    ``cos(theta) - m sin(m)`` beyond (PML keeps the logit decreasing in
    theta so). ``theta = arccos(clip(cos, -1, 1))``.

    ``cos(theta + m) = c cos m - sqrt(1 - c^2) sin m`` with c the clipped
    cosine; the square root's gradient is taken as 0 at c = +-1 (where
    arccos' is infinite) instead of propagating Inf/NaN.
    """
    dtype = cos_target.dtype
    m = float(margin_radians)
    one = ops.constant(1.0, dtype)
    c = kops.clip(cos_target, -one, one)
    sin_theta = ops.safe_sqrt(one - kops.square(c))
    with_margin = (c * ops.constant(math.cos(m), dtype)
                   - sin_theta * ops.constant(math.sin(m), dtype))
    # theta <= pi - m  <=>  c >= cos(pi - m) (arccos is decreasing).
    in_range = c >= ops.constant(math.cos(math.pi - m), dtype)
    fallback = c - ops.constant(m * math.sin(m), dtype)
    return kops.where(in_range, with_margin, fallback)


def arcface_loss(labels: TensorLike, cosines: TensorLike, margin: float = 28.6,
                 scale: float = 64.0) -> Tensor:
    """ArcFace loss from cosines to the class proxies [B, C].

    With theta_i the angle between embedding i and its class proxy and m the
    margin in radians (``margin`` is in degrees, as in PML):

        z_{i,c} = s cos(theta_{i,c})                  c != y_i
        z_{i,y} = s cos(theta_i + m)                  theta_i <= pi - m
                  s (cos(theta_i) - m sin m)          otherwise
        loss = 1/B sum_i -log softmax(z_i)[y_i]

    PML ``ArcFaceLoss(num_classes, embedding_size, margin, scale)`` with its W
    the proxies (transposed).

    Args:
      labels: int class ids, [B].
      cosines: cosine similarities to the proxies, [B, C].
    Returns:
      A scalar in the dtype of ``cosines``; 0 for an empty batch.
    """
    m = math.radians(float(margin))
    return margin_softmax_loss(labels, cosines,
                               lambda c: arcface_target(c, m), scale)


def check_margin_scale(margin: float, scale: float, degrees: bool) -> None:
    if degrees and not 0.0 <= float(margin) < 180.0:
        raise ValueError(f"margin is an angle in degrees in [0, 180); got {margin}.")
    if float(scale) <= 0:
        raise ValueError(f"scale must be > 0; got {scale}.")


@keras.saving.register_keras_serializable(package="keras_dml")
class ArcFaceLoss(MetricLoss):
    """ArcFace loss on ``y_pred`` = cosines to proxies [B, C].

    Use with ``keras_dml.layers.Proxies(num_classes)``: the proxies are
    ArcFace's weight matrix, so ``MetricModel``'s proxy learning-rate
    multiplier, warm-up and export apply unchanged. ``margin`` is in degrees
    (28.6 = 0.5 rad) and ``scale`` is s, PML's defaults. See ``arcface_loss``.
    """

    short_name = "arcface"
    takes_proxies = True

    def __init__(self, margin: float = 28.6, scale: float = 64.0, num_classes: Optional[int] = None,
                 name: str = "arcface_loss", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        check_margin_scale(margin, scale, degrees=True)
        self.margin = margin
        self.scale = scale
        self.num_classes = num_classes

    def call(self, y_true: TensorLike, y_pred: TensorLike) -> Tensor:
        labels, cosines, _ = proxy_inputs(y_true, y_pred, 1, self.num_classes)
        return arcface_loss(labels, cosines, self.margin, self.scale)
