"""Room layout retrieval on LSUN with the log-ratio loss (continuous labels).

    python -m apps.layout --output_dir=runs/layout --data_dir=LSUN_ROOT \\
        --flagfile=flags/layout_log_ratio.cfg

LSUN_ROOT holds training.mat / validation.mat, images/ and layout_seg/.
Label distance: 1 - mIoU of the layout segmentation maps.
"""

from absl import app, flags

from apps import common

common.define_flags(continuous=True)


def main(argv):
    del argv
    import keras_dml as kd
    from keras_dml.data import augment
    FLAGS = flags.FLAGS
    if not FLAGS.data_dir:
        raise app.UsageError("--data_dir (the LSUN room layout folder) is required.")
    data = kd.data.load_lsun_layout(FLAGS.data_dir)
    # The layout is tied to the whole frame: resize, no crop or flip.
    whole = augment.resize_transform(FLAGS.image_size)
    common.run_continuous_retrieval(
        data, "one_minus_miou", label_distance_kwargs={"num_classes": 5},
        transforms=(whole, whole))


if __name__ == "__main__":
    app.run(main)
