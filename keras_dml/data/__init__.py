"""tf.data pipelines for the benchmarks and tasks, and index-batch samplers.

``keras_dml.data.samplers``: label-space batches for continuous labels (an
anchor, its nearest neighbours in label space and random others), the
chunked nearest-neighbour builder, and an M-per-class sampler.
"""

from keras_dml.data import samplers  # noqa: F401
