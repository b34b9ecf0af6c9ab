"""MS-COCO captions (log-ratio): ``python -m apps.captions --output_dir=DIR --data_dir=COCO_ROOT``.

The same as ``keras-dml captions`` (keras_dml/cli); ``--help`` lists the flags.
"""
from keras_dml.cli import run_module

if __name__ == "__main__":
    run_module(__file__)
