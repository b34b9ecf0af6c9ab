"""Offline demo: Proxy Anchor on Fashion-MNIST with a pretrained backbone.

    python -m apps.fashion_mnist --output_dir=runs/demo

Trains on classes 0-4 of the train split (Debian package
``dataset-fashion-mnist``; TFDS ``fashion_mnist`` where online) with the
ImageNet EfficientNet-Lite0 weights read offline, holds out one training class
for checkpoint selection, and evaluates Recall@K on the unseen classes 5-9 of
the test split. Writes metrics.json, recall_curve.png, retrievals.png,
TensorBoard logs and saved_model/ (uint8 [N, 28, 28, 1] -> embeddings).
"""

from absl import app, flags

from apps import common

common.define_flags(
    backbone="efficientnet_lite0", weights="imagenet", image_size=64,
    embedding_dim=128, batch_size=64, epochs=3, lr=1e-4, warmup_epochs=1, freeze_bn=True,
    lr_decay_epochs=[], val_fraction=0.1, val_split="examples", ks=[1, 2, 4, 8], max_train_examples=10000)
flags.DEFINE_string("fashion_mnist_dir", "/usr/share/datasets/fashion-mnist",
                    "Folder of the idx .gz files (Debian dataset-fashion-mnist).")
flags.DEFINE_enum("source", "auto", ["auto", "files", "tfds"],
                  "Read the idx files, TFDS, or whichever is available.")


def main(argv):
    del argv
    import keras_dml as kd
    FLAGS = flags.FLAGS
    data = kd.data.load_fashion_mnist(root=FLAGS.fashion_mnist_dir, source=FLAGS.source,
                                      data_dir=FLAGS.data_dir)
    common.run_class_retrieval(data, native_shape=(28, 28, 1))


if __name__ == "__main__":
    app.run(main)
