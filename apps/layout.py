"""LSUN room layout (log-ratio): ``python -m apps.layout --output_dir=DIR --data_dir=LSUN_ROOT``.

The same as ``keras-dml layout`` (keras_dml/cli); ``--help`` lists the flags.
"""
from keras_dml.cli import run_module

if __name__ == "__main__":
    run_module(__file__)
