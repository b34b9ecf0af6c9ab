"""Proxy Anchor loss (Kim, Kim, Cho, Kwak, CVPR 2020)."""

from typing import Any, Optional

import keras
from keras import ops as kops

from keras_dml import ops
from keras_dml._types import Tensor, TensorLike
from keras_dml.losses.base import MetricLoss, proxy_inputs


def proxy_anchor_loss(labels: TensorLike, cosines: TensorLike, alpha: float = 32.0,
                      margin: float = 0.1) -> Tensor:
    """Proxy Anchor loss from cosine similarities to the class proxies.

        l = 1/|P+| sum_{p in P+} log(1 + sum_{i in B_p+} exp(-alpha (s(i,p) - margin)))
          + 1/|P|  sum_{p in P}  log(1 + sum_{j in B_p-} exp( alpha (s(j,p) + margin)))

    P+ are the proxies with at least one positive in the batch, P all C
    proxies. Each ``log(1 + sum exp)`` is a masked logsumexp with the +1
    (``keras_dml.ops.masked_logsumexp``), so nothing overflows in float16.

    Args:
      labels: int class ids, [B].
      cosines: cosine similarities to the proxies, [B, C].
    Returns:
      A scalar in the dtype of ``cosines``; 0 for an empty batch.
    """
    cosines = kops.convert_to_tensor(cosines)
    num_classes = cosines.shape[1]
    positive = ops.one_hot_mask(labels, num_classes)                # [B, C]
    negative = kops.logical_not(positive)
    alpha = ops.constant(alpha, cosines.dtype)
    margin = ops.constant(margin, cosines.dtype)
    # Reduce over the batch axis: one term per proxy.
    pos_terms = ops.masked_logsumexp(-alpha * (cosines - margin), positive,
                                     axis=0, add_one=True)
    neg_terms = ops.masked_logsumexp(alpha * (cosines + margin), negative,
                                     axis=0, add_one=True)
    num_with_positive = kops.sum(
        kops.cast(kops.any(positive, axis=0), cosines.dtype))
    pos_term = ops.divide_no_nan(kops.sum(pos_terms), num_with_positive)
    neg_term = kops.sum(neg_terms) / kops.cast(num_classes, cosines.dtype)
    return pos_term + neg_term


@keras.saving.register_keras_serializable(package="keras_dml")
class ProxyAnchorLoss(MetricLoss):
    """Proxy Anchor loss on ``y_pred`` = cosines to proxies [B, C].

    ``y_true`` are class ids [B] (or [B, 1]) in [0, C). Use with
    ``keras_dml.layers.Proxies(num_classes)`` producing ``y_pred``. See
    ``proxy_anchor_loss`` for the formula. Defaults are the paper's
    (alpha=32, margin=0.1).
    """

    short_name = "proxy_anchor"
    takes_proxies = True

    def __init__(self, alpha: float = 32.0, margin: float = 0.1,
                 num_classes: Optional[int] = None, name: str = "proxy_anchor_loss",
                 **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.alpha = alpha
        self.margin = margin
        self.num_classes = num_classes

    def call(self, y_true: TensorLike, y_pred: TensorLike) -> Tensor:
        labels, cosines, _ = proxy_inputs(y_true, y_pred, 1, self.num_classes)
        return proxy_anchor_loss(labels, cosines, self.alpha, self.margin)
