"""Models and training: embedders and MetricModel.

    embedder = kd.models.build_embedder(backbone, embedding_dim=512)
    model = kd.models.MetricModel(embedder, proxies=kd.layers.Proxies(C))
    model.compile(optimizer=keras.optimizers.AdamW(1e-4, weight_decay=1e-4),
                  loss=kd.losses.ProxyAnchorLoss(), proxy_lr_multiplier=100.,
                  warmup_epochs=1, clip_value=10.)

The parameter-group optimiser and the schedules live in
``keras_dml.optimizers``.
"""

from keras_dml.models.embedder import Embedder, build_embedder
from keras_dml.models.metric_model import MetricModel, WarmupSwitch

__all__ = ["Embedder", "build_embedder", "MetricModel", "WarmupSwitch"]
