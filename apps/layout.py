"""``python -m apps.layout``: LSUN room layout, as ``keras-dml layout`` (``--help``: flags)."""
from keras_dml.cli import run_module

if __name__ == "__main__":
    run_module(__file__)
