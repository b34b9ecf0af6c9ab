"""Cars-196: ``python -m apps.cars196 --output_dir=DIR --data_dir=TFDS_DIR``.

The same as ``keras-dml cars196`` (keras_dml/cli); ``--help`` lists the flags.
"""
from keras_dml.cli import run_module

if __name__ == "__main__":
    run_module(__file__)
