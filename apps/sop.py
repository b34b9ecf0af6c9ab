"""Stanford Online Products (TFDS stanford_online_products): 11,318 train / 11,316 test classes.

    python -m apps.sop --output_dir=runs/sop --data_dir=TFDS_DIR \\
        --flagfile=flags/sop_proxy_anchor.cfg

The data is read from a prepared TFDS directory (`tfds build` once where
online, or `--download`). Defaults are the Proxy Anchor authors' recipe;
see flags/ for each loss.
"""

from absl import app, flags

from apps import common

common.define_flags(lr=6e-4, lr_decay_epochs=[20], lr_decay_gamma=0.25, ks=[1, 10, 100, 1000])
flags.DEFINE_boolean("download", False, "Let TFDS download and prepare the data.")


def main(argv):
    del argv
    import keras_dml as kd
    FLAGS = flags.FLAGS
    data = kd.data.load_sop(data_dir=FLAGS.data_dir, download=FLAGS.download)
    common.run_class_retrieval(data)


if __name__ == "__main__":
    app.run(main)
