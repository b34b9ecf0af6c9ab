"""kd.data.load_image_folder / load_image_csv on generated folder trees and CSVs."""

import csv
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_dml as kd
from keras_dml.data import folders


def _png(path, value, size=(6, 5), mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(np.full(shape, value, np.uint8), mode).save(path)


def _jpeg(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path, format="JPEG")


def _first_pixel_classes(split):
    """The class name each image was written for: pixel value -> name."""
    return [int(img.numpy()[0, 0, 0]) for img, _ in split.dataset()]


# Class name -> pixel value the class's images are filled with (so a test can
# read an image and know which class folder it came from).
CLASSES = {"Ärmel": 10, "boot": 20, "猫": 30, "coat": 40, "dress": 50, "shirt": 60}


def _tree(root, per_class=3):
    for name, value in CLASSES.items():
        for i in range(per_class):
            _png(os.path.join(root, name, f"{i:03d}.png"), value + i % 2)
    return root


def _value_to_name():
    return {v + d: n for n, v in CLASSES.items() for d in (0, 1)}


def _check_names(split):
    """Every example's class_names[label] is the folder it was read from."""
    names = split.info["class_names"]
    seen = _first_pixel_classes(split)
    lookup = _value_to_name()
    for label, value in zip(split.labels.tolist(), seen):
        assert names[label] == lookup[value]
    # Labels are contiguous 0..C-1 and every name is used.
    assert sorted(set(split.labels.tolist())) == list(range(len(names)))


def test_class_disjoint_split_names_and_labels(tmp_path):
    data = kd.data.load_image_folder(_tree(str(tmp_path / "photos")), test_classes=0.5,
                                     seed=0)
    assert isinstance(data, kd.data.RetrievalData)
    assert data.train.name == "train" and data.test.name == "test"
    train_names, test_names = data.train.info["class_names"], data.test.info["class_names"]
    assert len(train_names) == 3 and len(test_names) == 3
    assert not set(train_names) & set(test_names)
    assert sorted(train_names + test_names) == sorted(CLASSES)
    assert data.num_train_classes == 3
    assert data.info["class_names"] == sorted(CLASSES)
    _check_names(data.train)
    _check_names(data.test)
    # Seeded: the same split again, another one for another seed (over seeds).
    again = kd.data.load_image_folder(str(tmp_path / "photos"), seed=0)
    assert again.test.info["class_names"] == test_names
    others = {tuple(kd.data.load_image_folder(str(tmp_path / "photos"), seed=s)
                    .test.info["class_names"]) for s in range(1, 6)}
    assert others - {tuple(test_names)}


def test_examples_split_keeps_every_class(tmp_path):
    data = kd.data.load_image_folder(_tree(str(tmp_path / "p"), per_class=4),
                                     split="examples", test_examples=0.25, seed=3)
    assert data.train.info["class_names"] == data.test.info["class_names"] == sorted(CLASSES)
    assert np.bincount(data.test.labels).tolist() == [1] * len(CLASSES)
    assert np.bincount(data.train.labels).tolist() == [3] * len(CLASSES)
    assert not set(data.train.names) & set(data.test.names)
    _check_names(data.train)
    _check_names(data.test)


def test_train_test_layout_used_as_given_and_nested(tmp_path):
    root = tmp_path / "given"
    _png(str(root / "train" / "boot" / "a.png"), 20)
    _png(str(root / "train" / "boot" / "deeper" / "x" / "b.png"), 21)   # nested
    _png(str(root / "train" / "coat" / "a.png"), 40)
    _jpeg(str(root / "train" / "coat" / "b.JPG"), 41)                   # case of extension
    _png(str(root / "test" / "猫" / "a.png"), 30)
    _png(str(root / "test" / "猫" / "b.png"), 31)
    _png(str(root / "test" / "shirt" / "a.png"), 60)
    _png(str(root / "test" / "shirt" / "b.png"), 61)
    _png(str(root / "val" / "dress" / "a.png"), 50)
    _png(str(root / "val" / "dress" / "b.png"), 51)
    data = kd.data.load_image_folder(str(root))
    assert data.train.info["class_names"] == ["boot", "coat"]
    assert data.test.info["class_names"] == ["shirt", "猫"]
    assert data.info["val"].info["class_names"] == ["dress"]
    assert len(data.train) == 4 and len(data.test) == 4
    assert any("deeper" in n for n in data.train.names)
    for split in (data.train, data.test, data.info["val"]):
        names = split.info["class_names"]
        for (_, label), path in zip(split.dataset(), split.names):
            assert names[int(label)] in path


def test_skipped_files_counted_in_one_line_and_tiny_classes_dropped(tmp_path, caplog):
    root = str(_tree(str(tmp_path / "p")))
    open(os.path.join(root, "boot", "notes.txt"), "w").write("x")
    open(os.path.join(root, "boot", ".DS_Store"), "w").write("x")
    _png(os.path.join(root, ".hidden_class", "a.png"), 1)
    _png(os.path.join(root, ".hidden_class", "b.png"), 1)
    _png(os.path.join(root, "coat", ".thumbs", "a.png"), 1)
    _png(os.path.join(root, "loose.png"), 1)
    _png(os.path.join(root, "lonely", "only.png"), 1)
    os.makedirs(os.path.join(root, "empty"))
    with caplog.at_level(logging.INFO, logger="absl"):
        data = kd.data.load_image_folder(root, test_classes=0.5)
    skipped = [r.getMessage() for r in caplog.records if ": skipped " in r.getMessage()]
    assert len(skipped) == 1
    assert ("skipped 5 entries (3 hidden files or folders, 1 not an image by extension, "
            "1 outside a class folder)") in skipped[0]
    dropped = [r for r in caplog.records if r.levelno == logging.WARNING
               and "fewer than 2 images" in r.getMessage()]
    assert len(dropped) == 1 and "'empty'" in dropped[0].getMessage() \
        and "'lonely'" in dropped[0].getMessage()
    all_names = data.train.info["class_names"] + data.test.info["class_names"]
    assert sorted(all_names) == sorted(CLASSES)
    assert not any(".thumbs" in n or "notes" in n for n in data.train.names)


def test_skip_counts(tmp_path):
    """The counted numbers, checked on the listing itself."""
    root = str(tmp_path / "p")
    _png(os.path.join(root, "a", "1.png"), 1)
    open(os.path.join(root, "a", "x.csv"), "w").write("x")
    open(os.path.join(root, "a", ".hidden.png"), "w").write("x")
    open(os.path.join(root, "top.png"), "w").write("x")
    skipped = folders._Skipped()
    classes = folders._class_folders(root, skipped)
    assert classes == {"a": [os.path.join(root, "a", "1.png")]}
    assert (skipped.hidden, skipped.not_image, skipped.loose) == (1, 1, 1)


def test_corrupt_file_follows_on_corrupt(tmp_path, caplog):
    root = str(_tree(str(tmp_path / "p")))
    bad = os.path.join(root, "boot", "broken.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)      # truncated PNG
    # Default: the pipeline refuses, naming the file.
    data = kd.data.load_image_folder(root, split="examples")
    holder = data.train if bad in list(data.train.names) else data.test
    assert bad in list(holder.names)
    with pytest.raises(tf.errors.InvalidArgumentError, match="broken.png"):
        list(holder.dataset())
    # Pipeline policy "skip": the rest still loads.
    n_ok = sum(1 for _ in holder.dataset(on_corrupt="skip"))
    assert n_ok == len(holder) - 1
    # At load time: skip drops it with a warning naming it, raise refuses.
    with caplog.at_level(logging.WARNING):
        skipped = kd.data.load_image_folder(root, split="examples", on_corrupt="skip")
    assert any("broken.png" in r.getMessage() for r in caplog.records)
    assert bad not in list(skipped.train.names) + list(skipped.test.names)
    assert len(skipped.train) + len(skipped.test) == len(data.train) + len(data.test) - 1
    _check_names(skipped.train)
    with pytest.raises(ValueError, match="broken.png"):
        kd.data.load_image_folder(root, split="examples", on_corrupt="raise")


def test_runner_pipeline_reads_grey_and_sized_images(tmp_path):
    root = str(tmp_path / "p")
    for c, v in (("a", 10), ("b", 20), ("c", 30), ("d", 40)):
        for i in range(2):
            _png(os.path.join(root, c, f"{i}.png"), v, size=(7 + i, 9), mode="L")
    data = kd.data.load_image_folder(root)
    batch = next(iter(kd.data.make_eval_pipeline(
        data.test, 4, transform=kd.data.resize_transform(16))))
    assert batch[0].shape == (4, 16, 16, 3)


def test_bad_arguments(tmp_path):
    root = str(_tree(str(tmp_path / "p")))
    with pytest.raises(kd.data.DataNotFoundError, match="nowhere"):
        kd.data.load_image_folder(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="split must be"):
        kd.data.load_image_folder(root, split="random")
    with pytest.raises(ValueError, match="test_classes"):
        kd.data.load_image_folder(root, test_classes=1.5)
    with pytest.raises(ValueError, match="rounds to no test class"):
        kd.data.load_image_folder(root, test_classes=0.01)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(kd.data.DataNotFoundError, match="no class"):
        kd.data.load_image_folder(str(empty))


def _write_csv(path, rows, header=("path", "label")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_csv_relative_paths_and_split_column(tmp_path):
    root = tmp_path / "imgs"
    rows = []
    for name, value in CLASSES.items():
        for i in range(2):
            rel = os.path.join("deep", name, f"{i}.png")
            _png(str(root / rel), value + i)
            rows.append((rel, name))
    # Relative to the CSV's folder.
    _write_csv(tmp_path / "imgs" / "list.csv", rows)
    data = kd.data.load_image_csv(str(tmp_path / "imgs" / "list.csv"), test_classes=0.5)
    assert len(data.train) + len(data.test) == 12
    _check_names(data.train)
    _check_names(data.test)
    # Relative to root=, other column names, a split column.
    rows2 = [(p, n, "train" if n in ("Ärmel", "boot", "coat") else "TEST")
             for p, n in rows]
    _write_csv(tmp_path / "other.csv", rows2, header=("file", "class", "subset"))
    data2 = kd.data.load_image_csv(str(tmp_path / "other.csv"), root=str(root),
                                   image_column="file", label_column="class",
                                   split_column="subset")
    assert data2.train.info["class_names"] == ["boot", "coat", "Ärmel"]
    assert data2.test.info["class_names"] == ["dress", "shirt", "猫"]
    _check_names(data2.train)
    _check_names(data2.test)


def test_csv_errors(tmp_path):
    _png(str(tmp_path / "a.png"), 1)
    _write_csv(tmp_path / "x.csv", [("a.png", "one"), ("missing.png", "one")])
    with pytest.raises(kd.data.DataNotFoundError, match="missing.png"):
        kd.data.load_image_csv(str(tmp_path / "x.csv"))
    with pytest.raises(ValueError, match="no column 'label2'"):
        kd.data.load_image_csv(str(tmp_path / "x.csv"), label_column="label2",
                               image_column="path")
    _write_csv(tmp_path / "y.csv", [("a.png", "one", "holdout")],
               header=("path", "label", "split"))
    with pytest.raises(ValueError, match="holdout"):
        kd.data.load_image_csv(str(tmp_path / "y.csv"), split_column="split")


def test_listing_many_files_is_complete(tmp_path):
    """5,000 empty entries in 50 classes list completely and in order (the
    100k timing is bench/data_listing.py; tests do not time)."""
    root = tmp_path / "many"
    for c in range(50):
        d = root / f"class_{c:02d}"
        d.mkdir(parents=True)
        for i in range(100):
            (d / f"{i:04d}.jpg").touch()
    tree = folders.list_image_folder(str(root))["all"]
    assert len(tree) == 50 and sum(map(len, tree.values())) == 5000
    assert tree["class_07"][3].endswith(os.path.join("class_07", "0003.jpg"))


def test_runner_uses_a_given_val_folder(tmp_path):
    from keras_dml.training import prepare, tasks
    root = tmp_path / "given"
    for split, names in (("train", ("a", "b", "c")), ("test", ("d", "e")), ("val", ("f", "g"))):
        for n in names:
            for i in range(3):
                _png(str(root / split / n / f"{i}.png"), 1)
    data = kd.data.load_image_folder(str(root))
    recipe = kd.training.Recipe(val_fraction=0.5)
    train, val = prepare.split_train(recipe, data, tasks.task_for(data))
    assert train is data.train and val is data.info["val"]
    assert val.info["class_names"] == ["f", "g"] and len(val) == 6
    # Without a given val/ the runner holds validation out of train.
    plain = kd.data.load_image_folder(str(root / "train"), split="examples",
                                      test_examples=0.34)
    _, held = prepare.split_train(recipe.replace(val_split="examples"), plain,
                                  tasks.task_for(plain))
    assert held is not None and held.name == "val"
