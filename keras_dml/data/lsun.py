"""LSUN room layout for layout retrieval (labels: layout segmentations).

Release layout (LSUN 2015/2016 room layout challenge)::

    ROOT/training.mat     variable ``training``   (4,000 images)
    ROOT/validation.mat   variable ``validation`` (394 images)
    ROOT/testing.mat      variable ``testing``    (1,000 images, no labels)
    ROOT/images/<image>.jpg
    ROOT/layout_seg/<image>.mat   variable ``layout``: int map [H, W],
                                  1 frontal wall, 2 left wall, 3 right wall,
                                  4 floor, 5 ceiling

Each ``.mat`` split is a 1 x N struct array with fields ``image`` (file
stem), ``scene``, ``type`` (layout type 0-10), ``point`` (K x 2 corner
points) and ``resolution``. The Beyond-Binary paper trains on the training
set and tests on the validation set (test labels are not public); we do
the same. Labels: each image's layout map resized (nearest neighbour) to
``label_size`` so that 1 - mIoU between any two images
(``keras_dml.label_distances.one_minus_miou`` with ``num_classes=5``)
compares maps of one size; stored as uint8 [h, w] with class ids 0-4 (the
file's 1-5 minus one; any other value becomes 255, ignored by the
distance).
Images are returned whole (variable size); use
``augment.resize_transform(224)``: crops or flips would no longer match the
label (a flip swaps left and right walls).
"""

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from keras_dml.data.core import RetrievalData, Split, require_file

SPLIT_FILES = {"train": "training", "validation": "validation",
               "test": "testing"}
LAYOUT_CLASSES = ("frontal", "left", "right", "floor", "ceiling")


def read_split_mat(path: Union[str, os.PathLike]) -> List[Dict[str, Any]]:
    """The records of ``training.mat`` / ``validation.mat`` / ``testing.mat``.

    Returns a list of dicts with keys image, scene, type, point, resolution
    (missing fields -> None).
    """
    import scipy.io
    var = os.path.splitext(os.path.basename(path))[0]
    mat = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
    if var not in mat:
        keys = [k for k in mat if not k.startswith("__")]
        if len(keys) != 1:
            raise ValueError(f"{path}: expected a variable {var!r}; found "
                             f"{keys}.")
        var = keys[0]
    records = mat[var]
    records = list(records.ravel()) if isinstance(records, np.ndarray) \
        else [records]
    out = []
    for i, r in enumerate(records):
        image = getattr(r, "image", None)
        if not isinstance(image, str) or not image:
            raise ValueError(f"{path}: record {i} has no image name.")

        def field(name):
            v = getattr(r, name, None)
            return None if isinstance(v, np.ndarray) and v.size == 0 else v

        out.append({"image": image, "scene": field("scene"),
                    "type": None if field("type") is None
                    else int(np.asarray(field("type")).ravel()[0]),
                    "point": None if field("point") is None
                    else np.asarray(field("point"), np.float32).reshape(-1, 2),
                    "resolution": None if field("resolution") is None
                    else np.asarray(field("resolution")).ravel()})
    return out


def read_layout(path: Union[str, os.PathLike]) -> np.ndarray:
    """The integer layout map of ``layout_seg/<image>.mat``."""
    import scipy.io
    mat = scipy.io.loadmat(path)
    if "layout" not in mat:
        raise ValueError(f"{path}: no 'layout' variable.")
    layout = np.asarray(mat["layout"])
    if layout.ndim != 2:
        raise ValueError(f"{path}: layout must be a 2-D map; got shape "
                         f"{layout.shape}.")
    return layout


def resize_layout(layout: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer map to ``size`` (h, w)."""
    layout = np.asarray(layout)
    if layout.min() < 0 or layout.max() > 255:
        raise ValueError(f"layout ids must lie in [0, 255]; got "
                         f"[{layout.min()}, {layout.max()}].")
    out = tf.image.resize(layout.astype(np.int32)[..., None], size,
                          method="nearest")
    return tf.cast(out[..., 0], tf.uint8).numpy()


def layout_labels(layout: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """File map (1-5) -> uint8 [h, w] label: resized, ids 0-4, else 255."""
    small = resize_layout(layout, size).astype(np.int32)
    return np.where((small >= 1) & (small <= 5), small - 1, 255).astype(
        np.uint8)


def _load_split(root, part, image_dir, layout_dir, label_size):
    mat_path = require_file(
        os.path.join(root, SPLIT_FILES[part] + ".mat"),
        f"LSUN room layout {part} file",
        "Download training.mat, validation.mat, image.zip and layout.zip "
        "(layout_seg) of the LSUN room layout challenge and pass their folder.")
    records = read_split_mat(mat_path)
    paths, labels = [], []
    for r in records:
        paths.append(os.path.join(image_dir, r["image"] + ".jpg"))
        layout_path = require_file(
            os.path.join(layout_dir, r["image"] + ".mat"),
            "LSUN layout segmentation",
            "Unpack layout.zip so that layout_seg/<image>.mat exists.")
        labels.append(layout_labels(read_layout(layout_path), label_size))
    labels = np.stack(labels) if labels else np.zeros((0, *label_size),
                                                      np.uint8)
    info = {"scene": [r["scene"] for r in records],
            "type": np.array([-1 if r["type"] is None else r["type"]
                              for r in records]),
            "point": [r["point"] for r in records],
            "resolution": [r["resolution"] for r in records]}
    return Split.from_files(part, paths, labels, channels=3, info=info)


def load_lsun_layout(root: Union[str, os.PathLike], image_dir: Optional[str] = None,
                     layout_dir: Optional[str] = None,
                     label_size: Sequence[int] = (64, 64)) -> RetrievalData:
    """LSUN room layout as :class:`RetrievalData` (``label_type="layout"``).

    ``train`` = training.mat (4,000), ``test`` = validation.mat (394); each
    yields ``(uint8 [H, W, 3] image, uint8 [h, w] layout map)`` with
    ``(h, w) = label_size``.
    """
    root = os.fspath(root)
    image_dir = image_dir or os.path.join(root, "images")
    layout_dir = layout_dir or os.path.join(root, "layout_seg")
    label_size = tuple(int(s) for s in label_size)
    train = _load_split(root, "train", image_dir, layout_dir, label_size)
    test = _load_split(root, "validation", image_dir, layout_dir, label_size)
    test.name = "test"
    return RetrievalData(
        name="lsun_layout", train=train, test=test, num_train_classes=None,
        image_shape=(None, None, 3), label_type="layout",
        info={"label_size": label_size, "root": root,
              "layout_classes": LAYOUT_CLASSES})


__all__ = ["load_lsun_layout", "read_split_mat", "read_layout",
           "resize_layout", "layout_labels", "LAYOUT_CLASSES"]
