"""``python -m apps.inshop``: In-Shop Clothes, as ``keras-dml inshop`` (``--help``: flags)."""
from keras_dml.cli import run_module

if __name__ == "__main__":
    run_module(__file__)
