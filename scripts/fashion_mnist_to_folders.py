"""Write Fashion-MNIST out as a folder of PNG files, one folder per class.

The images of the README's "Your own data" walkthrough: a stand-in for your
own photos, in the layout ``kd.data.load_image_folder`` and ``keras-dml
train`` / ``index`` read::

    OUT/Ankle boot/train_00017.png
    OUT/Bag/train_00035.png
    ...
    OUT/T-shirt_top/...          ("/" in a class name becomes "_")

Reads the Debian package's idx files (``apt-get install
dataset-fashion-mnist``: /usr/share/datasets/fashion-mnist), no network.

    python scripts/fashion_mnist_to_folders.py --out data/fashion --per_class 200
    python scripts/fashion_mnist_to_folders.py --out data/gallery --part test --per_class 50

Args: ``--part`` train (60,000 images) or test (the 10,000 t10k images:
other images than train's), ``--per_class`` the first N images of each
class in file order (0: all), ``--source_dir`` the idx files' folder.
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from keras_dml.data.fashion_mnist import CLASS_NAMES, DEBIAN_DIR, FILES, read_idx  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="Output folder (created).")
    p.add_argument("--part", default="train", choices=("train", "test"))
    p.add_argument("--per_class", type=int, default=200, help="Images per class (0: all).")
    p.add_argument("--source_dir", default=DEBIAN_DIR)
    args = p.parse_args(argv)
    images_file, labels_file = FILES[args.part]
    images = read_idx(os.path.join(args.source_dir, images_file))
    labels = read_idx(os.path.join(args.source_dir, labels_file))
    written = 0
    for c, name in enumerate(CLASS_NAMES):
        folder = os.path.join(args.out, name.replace("/", "_"))
        os.makedirs(folder, exist_ok=True)
        idx = np.flatnonzero(labels == c)
        if args.per_class:
            idx = idx[:args.per_class]
        for i in idx:
            Image.fromarray(images[i]).save(os.path.join(folder, f"{args.part}_{i:05d}.png"))
        written += len(idx)
    print(f"wrote {written} PNG files in {len(CLASS_NAMES)} class folders under {args.out}")


if __name__ == "__main__":
    main()
