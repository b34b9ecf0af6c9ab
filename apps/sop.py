"""``python -m apps.sop``: Stanford Online Products, as ``keras-dml sop`` (``--help``: flags)."""
from keras_dml.cli import run_module

if __name__ == "__main__":
    run_module(__file__)
