"""Proxy-NCA loss (Movshovitz-Attias et al., ICCV 2017), as configured in PML."""

import keras
import tensorflow as tf

from keras_dml.losses.base import MetricLoss, proxy_inputs


def proxy_nca_loss(labels, cosines, scale=32.0):
    """Proxy-NCA from cosine similarities to the class proxies [B, C].

        l = mean_i -log softmax_c( -scale * ||f_i/|f_i| - p_c/|p_c| ||^2 )[y_i]

    For unit vectors ``||u - v||^2 = 2 - 2 cos(u, v)``, so the logits are
    ``2 * scale * cos`` up to a constant that softmax ignores. This is
    pytorch-metric-learning's ``ProxyNCALoss(softmax_scale=scale)`` (squared L2
    between normalised vectors), computed with a stable log-softmax.
    """
    cosines = tf.convert_to_tensor(cosines)
    logits = 2.0 * tf.constant(scale, cosines.dtype) * cosines
    per_sample = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=logits)
    return tf.math.divide_no_nan(tf.reduce_sum(per_sample),
                                 tf.cast(tf.size(per_sample), cosines.dtype))


@keras.saving.register_keras_serializable(package="keras_dml")
class ProxyNCALoss(MetricLoss):
    """Proxy-NCA loss on ``y_pred`` = cosines to proxies [B, C] (see ``proxy_nca_loss``).

    ``scale=32`` as the Proxy Anchor authors configure PML's ``softmax_scale``.
    """

    short_name = "proxy_nca"
    takes_proxies = True

    def __init__(self, scale=32.0, num_classes=None, name="proxy_nca_loss",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.scale = scale
        self.num_classes = num_classes

    def call(self, y_true, y_pred):
        labels, cosines, _ = proxy_inputs(y_true, y_pred, 1, self.num_classes)
        return proxy_nca_loss(labels, cosines, self.scale)
