"""Fashion-MNIST, offline from the Debian package or through TFDS.

Offline source: the Debian package ``dataset-fashion-mnist``
(``apt-get install -y dataset-fashion-mnist``) installs the original idx
files in ``/usr/share/datasets/fashion-mnist/``::

    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz   (60,000)
    t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz    (10,000)

read here with a pure-numpy idx reader. Online alternative: TFDS
``fashion_mnist`` (``source="tfds"``).

Class-disjoint retrieval split (the demo's protocol): train = the images of
classes 0-4 (T-shirt/top, trouser, pullover, dress, coat) from the train
file; test = classes 5-9 (sandal, shirt, sneaker, bag, ankle boot) from the
t10k file, relabelled 0-4. Images are uint8 [28, 28, 1].
"""

import gzip
import os
from typing import Optional, Sequence, Union

import numpy as np

from keras_dml.data.core import DataNotFoundError, RetrievalData, Split

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# idx type byte -> big-endian numpy dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4",
               0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read an idx file (optionally gzipped) into a numpy array.

    Format (LeCun's MNIST page): two zero bytes, a type byte (0x08 uint8,
    0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), a byte
    with the number of dimensions d, d big-endian uint32 sizes, then the
    data in C order, big-endian.
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: cannot read idx file ({err}).") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an idx file (bad magic number "
                         f"{raw[:4].hex()}).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated idx header.")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: idx header announces shape {shape} "
                         f"({expected} bytes) but {len(raw) - header} bytes "
                         "of data follow.")
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _read_files(root, part):
    image_file, label_file = (os.path.join(root, f) for f in FILES[part])
    for f in (image_file, label_file):
        if not os.path.exists(f):
            raise DataNotFoundError(
                f"Fashion-MNIST file not found: {f!r}. Install the Debian "
                f"package (apt-get install -y dataset-fashion-mnist, files in "
                f"{DEBIAN_DIR}) or pass source='tfds' where TFDS can "
                "download.")
    images = read_idx(image_file)
    labels = read_idx(label_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{root}: {part} images {images.shape} and labels "
                         f"{labels.shape} do not match.")
    return images[..., None].astype(np.uint8), labels.astype(np.int64), \
        os.path.basename(image_file)


def _read_tfds(part, data_dir, download):
    import tensorflow_datasets as tfds
    builder = tfds.builder("fashion_mnist", data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    try:
        ds = builder.as_dataset(split=part, shuffle_files=False,
                                as_supervised=True)
    except AssertionError as err:
        raise DataNotFoundError(
            f"TFDS fashion_mnist is not prepared ({err}). Pass download=True "
            "(needs internet) or use the offline Debian files "
            f"(source='files', {DEBIAN_DIR}).") from None
    images, labels = [], []
    for x, y in ds.batch(10_000).as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images).astype(np.uint8), \
        np.concatenate(labels).astype(np.int64), f"tfds:fashion_mnist/{part}"


def load_fashion_mnist(root: Union[str, os.PathLike] = DEBIAN_DIR, source: str = "auto",
                       train_classes: Sequence[int] = range(5),
                       test_classes: Sequence[int] = range(5, 10),
                       data_dir: Optional[str] = None,
                       download: bool = False) -> RetrievalData:
    """Fashion-MNIST with class-disjoint train/test splits.

    Args:
      root: folder with the idx ``.gz`` files (the Debian package's by
        default).
      source: ``"files"`` (idx files in ``root``), ``"tfds"``, or ``"auto"``
        (files if ``root`` has them, else TFDS).
      train_classes, test_classes: class ids for each split (disjoint); the
        train split comes from the train file, the test split from t10k.
        Labels are remapped to 0..C-1 in the given order.
      data_dir, download: for the TFDS source.
    """
    train_classes, test_classes = list(train_classes), list(test_classes)
    if set(train_classes) & set(test_classes):
        raise ValueError("train_classes and test_classes overlap: "
                         f"{sorted(set(train_classes) & set(test_classes))}.")
    if source == "auto":
        source = "files" if os.path.exists(
            os.path.join(root, FILES["train"][0])) else "tfds"
    if source not in ("files", "tfds"):
        raise ValueError(f"source must be 'files', 'tfds' or 'auto'; got "
                         f"{source!r}.")
    splits = {}
    for part, classes in (("train", train_classes), ("test", test_classes)):
        if source == "files":
            images, labels, origin = _read_files(root, part)
        else:
            images, labels, origin = _read_tfds(part, data_dir, download)
        lookup = np.full(max(10, labels.max() + 1), -1, np.int64)
        lookup[classes] = np.arange(len(classes))
        keep = np.flatnonzero(lookup[labels] >= 0)
        names = [f"{origin}[{i}]" for i in keep]
        splits[part] = Split.from_arrays(
            part, images[keep], lookup[labels[keep]].astype(np.int32),
            names=names,
            info={"classes": classes,
                  "class_names": [CLASS_NAMES[c] for c in classes]})
    return RetrievalData(
        name="fashion_mnist", train=splits["train"], test=splits["test"],
        num_train_classes=len(train_classes), image_shape=(28, 28, 1),
        label_type="class",
        info={"source": source, "root": root, "recall_ks": (1, 2, 4, 8)})


__all__ = ["load_fashion_mnist", "read_idx", "CLASS_NAMES", "DEBIAN_DIR"]
