"""MPII pose (log-ratio): ``python -m apps.pose --output_dir=DIR --data_dir=MPII_ROOT``.

The same as ``keras-dml pose`` (keras_dml/cli); ``--help`` lists the flags.
"""
from keras_dml.cli import run_module

if __name__ == "__main__":
    run_module(__file__)
