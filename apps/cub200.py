"""CUB-200-2011 (TFDS caltech_birds2011): train on classes 1-100, test on 101-200.

    python -m apps.cub200 --output_dir=runs/cub200 --data_dir=TFDS_DIR \\
        --flagfile=flags/cub200_proxy_anchor.cfg

The data is read from a prepared TFDS directory (`tfds build` once where
online, or `--download`). Defaults are the Proxy Anchor authors' recipe;
see flags/ for each loss.
"""

from absl import app, flags

from apps import common

common.define_flags(freeze_bn=True, lr_decay_epochs=[10])
flags.DEFINE_boolean("download", False, "Let TFDS download and prepare the data.")


def main(argv):
    del argv
    import keras_dml as kd
    FLAGS = flags.FLAGS
    data = kd.data.load_cub200(data_dir=FLAGS.data_dir, download=FLAGS.download)
    common.run_class_retrieval(data)


if __name__ == "__main__":
    app.run(main)
