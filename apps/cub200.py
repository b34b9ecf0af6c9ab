"""CUB-200-2011: ``python -m apps.cub200 --output_dir=DIR --data_dir=TFDS_DIR [--recipe=proxy_anchor]``.

The same as ``keras-dml cub200`` (keras_dml/cli); ``--help`` lists the flags.
"""
from keras_dml.cli import run_module

if __name__ == "__main__":
    run_module(__file__)
