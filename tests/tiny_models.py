"""The shared tiny backbones and metric models of the tests (6 x 6 x 2 images
or 5-d vectors in, a handful of channels): one definition instead of a copy
per test module. Plain module (also imported by the worker scripts that the
distributed and backend-training tests run as subprocesses)."""

import keras

import keras_dml as kd

IMAGE_SHAPE = (6, 6, 2)


def conv_backbone(filters=(4, 5), final_batchnorm=False, sync_batchnorm=False, name=None):
    """Conv(filters[0], 3, same, no bias) -> BatchNorm -> ReLU [-> Conv(filters[1], 3)]
    [-> BatchNorm] on 6 x 6 x 2 images (``filters[1]`` None: no second conv)."""
    layers = [keras.Input(IMAGE_SHAPE),
              keras.layers.Conv2D(filters[0], 3, padding="same", use_bias=False),
              keras.layers.BatchNormalization(synchronized=sync_batchnorm),
              keras.layers.ReLU()]
    if filters[1] is not None:
        layers.append(keras.layers.Conv2D(filters[1], 3))
    if final_batchnorm:
        layers.append(keras.layers.BatchNormalization())
    return keras.Sequential(layers, name=name)


def mlp_backbone(hidden=6, out=7, reg=None, name=None, inputs=5, activation="tanh"):
    """Dense(hidden, activation) [-> Dense(out)] on ``inputs``-d vectors
    (``out`` None: the hidden layer only)."""
    layers = [keras.Input((inputs,)),
              keras.layers.Dense(hidden, activation=activation, kernel_regularizer=reg)]
    if out is not None:
        layers.append(keras.layers.Dense(out))
    return keras.Sequential(layers, name=name)


def metric_model(backbone=None, num_classes=None, embedding_dim=4, **embedder_kwargs):
    """``MetricModel`` of ``backbone`` (default ``conv_backbone()``) with an
    ``embedding_dim`` head and ``num_classes`` proxies (None: no proxies)."""
    embedder = kd.models.build_embedder(backbone or conv_backbone(),
                                        embedding_dim=embedding_dim, **embedder_kwargs)
    proxies = None if num_classes is None else kd.layers.Proxies(num_classes)
    return kd.models.MetricModel(embedder, proxies=proxies)
