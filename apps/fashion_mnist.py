"""``python -m apps.fashion_mnist``: the offline demo, as ``keras-dml fashion_mnist`` (``--help``: flags)."""
from keras_dml.cli import run_module

if __name__ == "__main__":
    run_module(__file__)
