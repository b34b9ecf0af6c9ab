"""``python -m apps.captions``: COCO captions, as ``keras-dml captions`` (``--help``: flags)."""
from keras_dml.cli import run_module

if __name__ == "__main__":
    run_module(__file__)
