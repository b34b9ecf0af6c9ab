"""``python -m apps.pose``: MPII pose, as ``keras-dml pose`` (``--help``: flags)."""
from keras_dml.cli import run_module

if __name__ == "__main__":
    run_module(__file__)
