"""L2 normalisation as a layer."""

import keras

from keras_dml import ops


@keras.saving.register_keras_serializable(package="keras_dml")
class L2Normalize(keras.layers.Layer):
    """``x / ||x||_2`` along ``axis`` (``epsilon`` guards a zero vector)."""

    def __init__(self, axis=-1, epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis
        self.epsilon = epsilon

    def call(self, inputs):
        return ops.l2_normalize(inputs, axis=self.axis, epsilon=self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis, epsilon=self.epsilon)
        return config
