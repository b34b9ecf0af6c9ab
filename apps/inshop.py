"""In-Shop Clothes Retrieval: 3,997 training items; query vs gallery.

    python -m apps.inshop --output_dir=runs/inshop --data_dir=INSHOP_ROOT \\
        --flagfile=flags/inshop_proxy_anchor.cfg

INSHOP_ROOT is the released folder (``Eval/list_eval_partition.txt`` and
``img/``). Recall@K of each query against the gallery.
"""

from absl import app, flags

from apps import common

common.define_flags(lr=6e-4, lr_decay_epochs=[20], lr_decay_gamma=0.25, ks=[1, 10, 20, 40])


def main(argv):
    del argv
    import keras_dml as kd
    FLAGS = flags.FLAGS
    if not FLAGS.data_dir:
        raise app.UsageError("--data_dir (the In-Shop folder) is required.")
    common.run_class_retrieval(kd.data.load_inshop(FLAGS.data_dir))


if __name__ == "__main__":
    app.run(main)
