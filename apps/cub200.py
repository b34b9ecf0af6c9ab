"""``python -m apps.cub200``: CUB-200-2011, as ``keras-dml cub200`` (``--help``: flags)."""
from keras_dml.cli import run_module

if __name__ == "__main__":
    run_module(__file__)
