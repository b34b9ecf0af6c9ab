"""Offline demo (Proxy Anchor on Fashion-MNIST): ``python -m apps.fashion_mnist --output_dir=runs/demo``.

The same as ``keras-dml fashion_mnist`` (keras_dml/cli); ``--help`` lists the flags.
"""
from keras_dml.cli import run_module

if __name__ == "__main__":
    run_module(__file__)
