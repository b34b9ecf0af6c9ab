"""In-Shop Clothes Retrieval (DeepFashion) from its released folder.

Layout of the release (``In-shop Clothes Retrieval Benchmark``)::

    ROOT/Eval/list_eval_partition.txt
    ROOT/img/WOMEN/Dresses/id_00000002/02_1_front.jpg   (or ROOT/Img/img/...)

``list_eval_partition.txt``: line 1 the number of images, line 2 the column
names ``image_name item_id evaluation_status``, then one row per image::

    img/WOMEN/Dresses/id_00000002/02_1_front.jpg   id_00000002 train

with status ``train`` (25,882 images of 3,997 items), ``query`` (14,218) or
``gallery`` (12,612; 3,985 test items). As the Proxy Anchor authors
(``code/dataset/Inshop.py``): train labels are the items' numeric ids
mapped in increasing order to 0..C-1; query and gallery share one mapping
(built over both) so that a query and its gallery matches carry the same
label. Evaluation: query vs gallery, Recall@1/10/20/40.
"""

import os
from typing import List, Optional, Tuple, Union

from keras_dml.data.core import DataNotFoundError, RetrievalData, Split, remap_labels, require_file

PARTITION_FILE = os.path.join("Eval", "list_eval_partition.txt")
STATUSES = ("train", "query", "gallery")


def read_partition(path: Union[str, os.PathLike]) -> List[Tuple[str, ...]]:
    """Parse ``list_eval_partition.txt`` -> list of (image, item_id, status).

    Checks the header (count line, column line) and every row, and raises a
    ``ValueError`` naming the line on anything unexpected.
    """
    with open(path, encoding="utf-8") as f:
        lines = [ln.strip() for ln in f]
    lines = [ln for ln in lines if ln]  # tolerate trailing blank lines
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a count line and a header line.")
    try:
        count = int(lines[0])
    except ValueError:
        raise ValueError(f"{path}: line 1 should be the number of images; "
                         f"got {lines[0]!r}.") from None
    header = lines[1].split()
    if header[:3] != ["image_name", "item_id", "evaluation_status"]:
        raise ValueError(f"{path}: line 2 should be 'image_name item_id "
                         f"evaluation_status'; got {lines[1]!r}.")
    rows = []
    for lineno, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if len(parts) != 3 or parts[2] not in STATUSES \
                or not parts[1].startswith("id_"):
            raise ValueError(f"{path}:{lineno}: expected '<image> id_XXXXXXXX "
                             f"train|query|gallery'; got {line!r}.")
        rows.append(tuple(parts))
    if len(rows) != count:
        raise ValueError(f"{path}: line 1 announces {count} images but "
                         f"{len(rows)} rows follow.")
    return rows


def _item_number(item_id):
    try:
        return int(item_id.split("_")[-1])
    except ValueError:
        raise ValueError(f"bad item id {item_id!r} (expected id_<digits>)."
                         ) from None


def _image_root(root, first_image):
    for candidate in (root, os.path.join(root, "Img")):
        if os.path.exists(os.path.join(candidate, first_image)):
            return candidate
    raise DataNotFoundError(
        f"In-Shop images not found: neither {os.path.join(root, first_image)!r}"
        f" nor {os.path.join(root, 'Img', first_image)!r} exists. Unpack "
        "img.zip of the In-shop Clothes Retrieval Benchmark into the folder "
        "that holds Eval/ (or pass image_root=).")


def load_inshop(root: Union[str, os.PathLike],
                image_root: Optional[Union[str, os.PathLike]] = None) -> RetrievalData:
    """In-Shop Clothes as :class:`RetrievalData` with train/query/gallery.

    Args:
      root: the benchmark folder (holds ``Eval/list_eval_partition.txt``).
      image_root: folder the partition's image paths are relative to;
        default: ``root`` or ``root/Img``, whichever holds the images.
    """
    root = os.fspath(root)
    part_path = require_file(
        os.path.join(root, PARTITION_FILE), "In-Shop partition file",
        "Download the In-shop Clothes Retrieval Benchmark (DeepFashion: "
        "Eval/list_eval_partition.txt and img.zip) and pass its folder.")
    rows = read_partition(part_path)
    if not rows:
        raise ValueError(f"{part_path}: no images listed.")
    if image_root is None:
        image_root = _image_root(root, rows[0][0])
    by_status = {s: [(img, _item_number(item)) for img, item, st in rows
                     if st == s] for s in STATUSES}
    for status in STATUSES:
        if not by_status[status]:
            raise ValueError(f"{part_path}: no '{status}' images.")

    train_labels, train_items = remap_labels(
        [item for _, item in by_status["train"]])
    qg_items = [item for _, item in by_status["query"]] + \
        [item for _, item in by_status["gallery"]]
    qg_labels, test_items = remap_labels(qg_items)
    n_query = len(by_status["query"])

    def split(name, entries, labels, items):
        paths = [os.path.join(image_root, img) for img, _ in entries]
        return Split.from_files(name, paths, labels, channels=3,
                                info={"item_ids": items})

    data = RetrievalData(
        name="inshop",
        train=split("train", by_status["train"], train_labels, train_items),
        query=split("query", by_status["query"], qg_labels[:n_query],
                    test_items),
        gallery=split("gallery", by_status["gallery"], qg_labels[n_query:],
                      test_items),
        num_train_classes=len(train_items), image_shape=(None, None, 3),
        label_type="class",
        info={"recall_ks": (1, 10, 20, 40), "root": root,
              "image_root": image_root})
    return data


__all__ = ["load_inshop", "read_partition"]
