"""Caption-aware image retrieval on MS-COCO 2014 (continuous labels).

    python -m apps.captions --output_dir=runs/captions --data_dir=COCO_ROOT \\
        --flagfile=flags/captions_log_ratio.cfg

COCO_ROOT holds annotations/captions_{train,val}2014.json and the image
folders. Labels are the 5 caption embeddings of each image (all-MiniLM-L6-v2,
run offline); label distance: the paper's symmetric sum of minimum caption
distances (cosine distance between sentence embeddings).
"""

from absl import app, flags

from apps import common

common.define_flags(continuous=True)
flags.DEFINE_integer("max_train_images", None, "Subset of train2014 images.")
flags.DEFINE_integer("max_test_images", 2000, "Subset of val2014 images (test).")


def main(argv):
    del argv
    import keras_dml as kd
    FLAGS = flags.FLAGS
    if not FLAGS.data_dir:
        raise app.UsageError("--data_dir (the COCO 2014 folder) is required.")
    data = kd.data.load_coco_captions(FLAGS.data_dir, max_train_images=FLAGS.max_train_images,
                                      max_test_images=FLAGS.max_test_images,
                                      seed=FLAGS.seed)
    common.run_continuous_retrieval(
        data, "caption_set", test_label_distances=data.test.info.get("label_distances"),
        embedding_distance="euclidean")


if __name__ == "__main__":
    app.run(main)
