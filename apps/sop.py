"""Stanford Online Products: ``python -m apps.sop --output_dir=DIR --data_dir=TFDS_DIR``.

The same as ``keras-dml sop`` (keras_dml/cli); ``--help`` lists the flags.
"""
from keras_dml.cli import run_module

if __name__ == "__main__":
    run_module(__file__)
