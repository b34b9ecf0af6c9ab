"""CosFace: additive cosine margin softmax (Wang et al., CVPR 2018; PML CosFaceLoss)."""

from typing import Any, Optional

import keras

from keras_dml import ops
from keras_dml._types import Tensor, TensorLike
from keras_dml.losses.arcface import check_margin_scale, margin_softmax_loss
from keras_dml.losses.base import MetricLoss, proxy_inputs


def cosface_loss(labels: TensorLike, cosines: TensorLike, margin: float = 0.35,
                 scale: float = 64.0) -> Tensor:
    """CosFace (large margin cosine) loss from cosines to the proxies [B, C].

        z_{i,c} = s cos_{i,c}            c != y_i
        z_{i,y} = s (cos_{i,y} - m)
        loss = 1/B sum_i -log softmax(z_i)[y_i]

    PML ``CosFaceLoss(num_classes, embedding_size, margin, scale)`` with its W
    the proxies.

    Args:
      labels: int class ids, [B].
      cosines: cosine similarities to the proxies, [B, C].
    Returns:
      A scalar in the dtype of ``cosines``; 0 for an empty batch.
    """
    def target(c):
        return c - ops.constant(margin, c.dtype)
    return margin_softmax_loss(labels, cosines, target, scale)


@keras.saving.register_keras_serializable(package="keras_dml")
class CosFaceLoss(MetricLoss):
    """CosFace loss on ``y_pred`` = cosines to proxies [B, C].

    Use with ``keras_dml.layers.Proxies(num_classes)`` (the proxies are the
    weight matrix). Defaults are PML's (margin 0.35, scale 64). See
    ``cosface_loss``.
    """

    short_name = "cosface"
    takes_proxies = True

    def __init__(self, margin: float = 0.35, scale: float = 64.0, num_classes: Optional[int] = None,
                 name: str = "cosface_loss", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        check_margin_scale(margin, scale, degrees=False)
        self.margin = margin
        self.scale = scale
        self.num_classes = num_classes

    def call(self, y_true: TensorLike, y_pred: TensorLike) -> Tensor:
        labels, cosines, _ = proxy_inputs(y_true, y_pred, 1, self.num_classes)
        return cosface_loss(labels, cosines, self.margin, self.scale)
