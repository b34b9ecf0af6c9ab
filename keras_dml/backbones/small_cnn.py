"""A small ConvNet backbone: for tests, smoke runs and quick experiments."""

import keras

from keras_dml.backbones.common import WeightsUnavailableError


def small_cnn(input_shape=(64, 64, 3), weights=None, width=32, name="small_cnn"):
    """Three conv-BN-ReLU stages (stride 2 each) -> feature map [B, H/8, W/8, 4w].

    No pretrained weights exist: ``weights`` is None or a path to a Keras
    ``.weights.h5`` file of this architecture.
    """
    if weights == "imagenet":
        raise WeightsUnavailableError(
            "small_cnn has no ImageNet weights; use weights=None (or a "
            ".weights.h5 path), or a pretrained backbone such as efficientnet_lite0.")
    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate((width, 2 * width, 4 * width)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False,
                                name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model
