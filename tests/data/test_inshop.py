"""In-Shop loader on a fixture folder in the release's exact layout."""

import numpy as np
import pytest
from PIL import Image

from keras_dml.data import DataNotFoundError, augment, make_eval_pipeline
from keras_dml.data.inshop import load_inshop, read_partition

# (category, item number, image, status)
ROWS = [
    ("WOMEN/Dresses", 7, "01_1_front", "train"),
    ("WOMEN/Dresses", 2, "02_1_front", "train"),
    ("MEN/Denim", 12, "01_2_side", "train"),
    ("WOMEN/Dresses", 7, "01_2_side", "train"),
    ("MEN/Shirts", 9, "01_1_front", "query"),
    ("MEN/Shirts", 3, "02_1_front", "query"),
    ("MEN/Shirts", 9, "01_4_full", "gallery"),
    ("WOMEN/Tees", 50, "01_1_front", "gallery"),
    ("MEN/Shirts", 3, "02_2_side", "gallery"),
]


def write_inshop(root, rows=ROWS, image_prefix="", count=None):
    """Eval/list_eval_partition.txt + img/... JPEGs as in the release."""
    lines = [str(len(rows) if count is None else count),
             "image_name item_id evaluation_status"]
    for k, (cat, item, stem, status) in enumerate(rows):
        rel = f"img/{cat}/id_{item:08d}/{stem}.jpg"
        # The release pads the image column with spaces.
        lines.append(f"{rel:<70}id_{item:08d} {status}")
        path = root / image_prefix / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((12 + k, 10, 3), 20 * k, np.uint8)).save(
            path, quality=95)
    (root / "Eval").mkdir(parents=True, exist_ok=True)
    (root / "Eval" / "list_eval_partition.txt").write_text(
        "\n".join(lines) + "\n")


def test_inshop_splits_and_consistent_item_labels(tmp_path):
    write_inshop(tmp_path)
    data = load_inshop(tmp_path)
    assert data.test is None
    assert (len(data.train), len(data.query), len(data.gallery)) == (4, 2, 3)
    # Train: items 2, 7, 12 -> 0, 1, 2 in increasing id order.
    np.testing.assert_array_equal(data.train.labels, [1, 0, 2, 1])
    assert data.num_train_classes == 3
    # Query and gallery share one mapping over items 3, 9, 50.
    np.testing.assert_array_equal(data.query.labels, [1, 0])
    np.testing.assert_array_equal(data.gallery.labels, [1, 2, 0])
    assert list(data.query.info["item_ids"]) == [3, 9, 50]
    assert data.info["recall_ks"] == (1, 10, 20, 40)
    # Images are the listed files, in order (pixel value 20 * row).
    for split, first_row in ((data.train, 0), (data.query, 4),
                             (data.gallery, 6)):
        for k, (image, _) in enumerate(split.dataset()):
            assert image.dtype.name == "uint8" and image.shape[-1] == 3
            assert image.shape[0] == 12 + first_row + k
            assert abs(int(image[0, 0, 0]) - 20 * (first_row + k)) <= 2
    batches = list(make_eval_pipeline(
        data.gallery, 2, transform=augment.eval_transform(8)))
    assert [int(x.shape[0]) for x, _ in batches] == [2, 1]


def test_inshop_images_under_Img(tmp_path):
    write_inshop(tmp_path, image_prefix="Img")
    data = load_inshop(tmp_path)
    assert data.info["image_root"].endswith("Img")
    assert len(list(data.query.dataset())) == 2


def test_inshop_bad_files(tmp_path):
    with pytest.raises(DataNotFoundError, match="list_eval_partition"):
        load_inshop(tmp_path)
    write_inshop(tmp_path, count=8)
    with pytest.raises(ValueError, match="announces 8 images but 9"):
        load_inshop(tmp_path)
    part = tmp_path / "Eval" / "list_eval_partition.txt"
    text = part.read_text().splitlines()
    text[0] = "9"
    part.write_text("\n".join(text[:2] + ["img/x.jpg id_00000001 validation"]
                              + text[3:]))
    with pytest.raises(ValueError, match=r"list_eval_partition.txt:3"):
        read_partition(part)
    part.write_text("9\nname id status\n" + "\n".join(text[2:]))
    with pytest.raises(ValueError, match="line 2"):
        read_partition(part)
    other = tmp_path / "other"
    other.mkdir()
    (other / "Eval").mkdir()
    (other / "Eval" / "list_eval_partition.txt").write_text(
        "1\nimage_name item_id evaluation_status\n"
        "img/a/id_00000001/x.jpg id_00000001 train\n")
    with pytest.raises(DataNotFoundError, match="img.zip"):
        load_inshop(other)
