"""In-Shop Clothes: ``python -m apps.inshop --output_dir=DIR --data_dir=INSHOP_ROOT``.

The same as ``keras-dml inshop`` (keras_dml/cli); ``--help`` lists the flags.
"""
from keras_dml.cli import run_module

if __name__ == "__main__":
    run_module(__file__)
