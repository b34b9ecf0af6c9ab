"""Learnable class proxies producing cosine similarities."""

import math

import keras

from keras_dml import ops


@keras.saving.register_keras_serializable(package="keras_dml")
class Proxies(keras.layers.Layer):
    """Learnable proxies; outputs cosine similarity of inputs to each proxy.

    Weight ``proxies`` has shape [num_classes * proxies_per_class, D]; row
    ``c * K + k`` is centre k of class c (class-major, as SoftTriple expects).
    Output: ``l2n(x) @ l2n(proxies)^T``, shape [B, num_classes * K].

    Initialisation follows the Proxy Anchor authors' code,
    ``kaiming_normal_(proxies, mode="fan_out")`` on a [rows, D] tensor, i.e.
    a normal with std ``sqrt(2 / rows)`` (PyTorch's fan-out of a 2-D tensor is
    its number of rows; Keras' ``VarianceScaling`` would use D instead).
    """

    def __init__(self, num_classes, proxies_per_class=1, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 1 or int(proxies_per_class) < 1:
            raise ValueError(
                "num_classes and proxies_per_class must be >= 1; got "
                f"{num_classes} and {proxies_per_class}.")
        self.num_classes = int(num_classes)
        self.proxies_per_class = int(proxies_per_class)

    @property
    def num_proxies(self):
        return self.num_classes * self.proxies_per_class

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError("Proxies needs a known embedding dimension.")
        self.proxies = self.add_weight(
            name="proxies",
            shape=(self.num_proxies, int(dim)),
            initializer=keras.initializers.RandomNormal(
                stddev=math.sqrt(2.0 / self.num_proxies)),
            trainable=True,
        )

    def call(self, inputs):
        proxies = keras.ops.cast(self.proxies, inputs.dtype)
        return ops.cosine_similarity(inputs, proxies)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_proxies,)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes,
                      proxies_per_class=self.proxies_per_class)
        return config
