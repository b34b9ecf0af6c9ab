"""Human pose retrieval on MPII with the log-ratio loss (continuous labels).

    python -m apps.pose --output_dir=runs/pose --data_dir=MPII_ROOT \\
        --flagfile=flags/pose_log_ratio.cfg

MPII_ROOT holds the annotation .mat and images/. Label distance: squared L2
between normalised pose vectors; metrics: mean pose distance and nDCG@K.
"""

from absl import app, flags

from apps import common

common.define_flags(continuous=True)


def main(argv):
    del argv
    import keras_dml as kd
    from keras_dml.data import mpii
    FLAGS = flags.FLAGS
    if not FLAGS.data_dir:
        raise app.UsageError("--data_dir (the MPII folder) is required.")
    data = kd.data.load_mpii(FLAGS.data_dir)
    size = FLAGS.image_size
    common.run_continuous_retrieval(
        data, "squared_l2",
        transforms=(mpii.pose_train_transform(size, seed=FLAGS.seed),
                    mpii.pose_eval_transform(size)))


if __name__ == "__main__":
    app.run(main)
