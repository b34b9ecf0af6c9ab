"""``python -m apps.cars196``: Cars-196, as ``keras-dml cars196`` (``--help``: flags)."""
from keras_dml.cli import run_module

if __name__ == "__main__":
    run_module(__file__)
