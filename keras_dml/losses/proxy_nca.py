"""Proxy-NCA loss (Movshovitz-Attias et al., ICCV 2017), as configured in PML."""

from typing import Any, Optional

import keras
from keras import ops as kops

from keras_dml import ops
from keras_dml._types import Tensor, TensorLike
from keras_dml.losses.base import MetricLoss, proxy_inputs


def sparse_cross_entropy(labels: TensorLike, logits: Tensor) -> Tensor:
    """Mean over the batch of ``-log softmax(logits_i)[labels_i]``, [B, C] logits.

    ``LSE_c(logits_i) - logits_i[labels_i]`` (a stable log-softmax); the
    target logit is picked with a one-hot mask, no gather. 0 (with a
    gradient of shape [0, C]) for an empty batch.
    """
    target = kops.sum(kops.where(ops.one_hot_mask(labels, logits.shape[1]),
                                 logits, kops.zeros_like(logits)), axis=1)
    per_sample = kops.logsumexp(logits, axis=1) - target
    return ops.divide_no_nan(kops.sum(per_sample),
                             kops.cast(kops.shape(per_sample)[0], logits.dtype))


def proxy_nca_loss(labels: TensorLike, cosines: TensorLike, scale: float = 32.0) -> Tensor:
    """Proxy-NCA from cosine similarities to the class proxies [B, C].

        l = mean_i -log softmax_c( -scale * ||f_i/|f_i| - p_c/|p_c| ||^2 )[y_i]

    For unit vectors ``||u - v||^2 = 2 - 2 cos(u, v)``, so the logits are
    ``2 * scale * cos`` up to a constant that softmax ignores. This is
    pytorch-metric-learning's ``ProxyNCALoss(softmax_scale=scale)`` (squared L2
    between normalised vectors), computed with a stable log-softmax.
    """
    cosines = kops.convert_to_tensor(cosines)
    logits = ops.constant(2.0 * scale, cosines.dtype) * cosines
    return sparse_cross_entropy(labels, logits)


@keras.saving.register_keras_serializable(package="keras_dml")
class ProxyNCALoss(MetricLoss):
    """Proxy-NCA loss on ``y_pred`` = cosines to proxies [B, C] (see ``proxy_nca_loss``).

    ``scale=32`` as the Proxy Anchor authors configure PML's ``softmax_scale``.
    """

    short_name = "proxy_nca"
    takes_proxies = True

    def __init__(self, scale: float = 32.0, num_classes: Optional[int] = None,
                 name: str = "proxy_nca_loss", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.scale = scale
        self.num_classes = num_classes

    def call(self, y_true: TensorLike, y_pred: TensorLike) -> Tensor:
        labels, cosines, _ = proxy_inputs(y_true, y_pred, 1, self.num_classes)
        return proxy_nca_loss(labels, cosines, self.scale)
