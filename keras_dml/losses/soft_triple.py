"""SoftTriple loss (Qian et al., ICCV 2019), as configured in PML."""

from typing import Any, Optional

import keras
from keras import ops as kops

from keras_dml import ops
from keras_dml._types import Tensor, TensorLike
from keras_dml.losses.base import MetricLoss, proxy_inputs
from keras_dml.losses.proxy_nca import sparse_cross_entropy


def soft_triple_loss(labels: TensorLike, cosines: TensorLike, centers_per_class: int = 10,
                     la: float = 20.0, gamma: float = 0.1, margin: float = 0.01) -> Tensor:
    """SoftTriple from cosines to K centres per class, [B, C*K] class-major.

        S'_{i,c} = sum_k softmax_k(s_{i,c,k} / gamma) s_{i,c,k}
        l = mean_i -log softmax_c( la * (S'_{i,c} - margin [c = y_i]) )[y_i]

    Column ``c*K + k`` is centre k of class c. The centre regulariser of the
    paper is not part of the loss (as in pytorch-metric-learning's
    ``SoftTripleLoss`` without a weight regulariser).
    """
    cosines = kops.convert_to_tensor(cosines)
    dtype = cosines.dtype
    k = int(centers_per_class)
    num_classes = cosines.shape[1] // k
    per_center = kops.reshape(cosines, (-1, num_classes, k))           # [B, C, K]
    weights = kops.softmax(per_center / ops.constant(gamma, dtype), axis=2)
    per_class = kops.sum(weights * per_center, axis=2)                 # [B, C]
    margins = kops.where(ops.one_hot_mask(labels, num_classes),
                         ops.constant(margin, dtype), kops.zeros_like(per_class))
    logits = ops.constant(la, dtype) * (per_class - margins)
    return sparse_cross_entropy(labels, logits)

@keras.saving.register_keras_serializable(package="keras_dml")
class SoftTripleLoss(MetricLoss):
    """SoftTriple loss on ``y_pred`` = cosines to centres [B, C*K] (class-major).

    Use with ``keras_dml.layers.Proxies(num_classes, proxies_per_class=K)``.
    Defaults are the Proxy Anchor authors' PML configuration (K=10, la=20,
    gamma=0.1, margin=0.01). See ``soft_triple_loss`` for the formula.
    """

    short_name = "soft_triple"
    takes_proxies = True

    @property
    def proxies_per_class(self) -> int:
        return self.centers_per_class

    def __init__(self, centers_per_class: int = 10, la: float = 20.0, gamma: float = 0.1,
                 margin: float = 0.01, num_classes: Optional[int] = None,
                 name: str = "soft_triple_loss", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if int(centers_per_class) < 1:
            raise ValueError("centers_per_class must be >= 1.")
        self.centers_per_class = int(centers_per_class)
        self.la = la
        self.gamma = gamma
        self.margin = margin
        self.num_classes = num_classes

    def call(self, y_true: TensorLike, y_pred: TensorLike) -> Tensor:
        labels, cosines, _ = proxy_inputs(
            y_true, y_pred, self.centers_per_class, self.num_classes)
        return soft_triple_loss(labels, cosines, self.centers_per_class,
                                self.la, self.gamma, self.margin)
