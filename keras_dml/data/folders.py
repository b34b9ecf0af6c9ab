"""The user's own images: a folder tree of classes, or a CSV file.

    data = kd.data.load_image_folder("photos/")          # photos/<class>/<images>
    data = kd.data.load_image_csv("photos.csv")          # path,label[,split]

Folder layouts (decided from the sub-folders of ``root``):

* ``root/<class>/<images>``: one folder per class (images may sit in
  sub-folders of the class folder, e.g. ``root/shoe/2024/a.jpg``). The
  classes are split into train and test by the loader: ``split="classes"``
  (default) puts a seeded ``test_classes`` fraction of the *classes* in
  test (class-disjoint, the metric-learning protocol: test classes are
  never seen in training); ``split="examples"`` keeps every class in both
  and puts a ``test_examples`` fraction of *each class's* images in test.
* ``root/train/<class>/...`` and ``root/test/<class>/...`` (optionally
  ``root/val/<class>/...``): used as given. A given ``val/`` is returned as
  ``data.info["val"]`` (a Split), which the runner uses for checkpoint
  selection; otherwise validation is held out of train by the runner
  (``val_fraction``), as for every other data set.

Class names are the folder names (any Unicode); class ids are their
positions in sorted order, renumbered 0..C-1 within each split. Every
split's ``info["class_names"][label]`` is the name of ``label`` in that
split, and ``data.info["class_names"]`` lists all classes.

Listing uses ``os.scandir`` (no ``stat`` per file: the directory entry
types and names decide), so 100k files list in about a second (see
``bench/data_listing.py``). Skipped, and counted in one log line: hidden
files and folders (names starting with "."), files whose extension is not
an image type TensorFlow decodes (``IMAGE_EXTENSIONS``), and files lying
directly in ``root``. A class with fewer than 2 images cannot give a
positive pair: it is dropped with a warning naming it.

Unreadable images follow the ``on_corrupt`` policy of
``kd.data.make_train_pipeline`` (default "raise": the pipeline stops naming
the file). ``on_corrupt="skip"`` / ``"raise"`` given to the loader decodes
every image once at load time (``Split.verify``) and drops (with a warning
naming them) or refuses the unreadable ones, before any training starts.
"""

import csv
import os
from typing import Dict, List, Optional, Union

import numpy as np
from absl import logging

from keras_dml.data import splits as _splits
from keras_dml.data.core import DataNotFoundError, RetrievalData, Split

# What tf.io.decode_image reads (JPEG, PNG, GIF, BMP, WebP).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".gif", ".bmp", ".webp"})
SPLIT_FOLDERS = ("train", "test", "val")
SPLITS = ("classes", "examples")
MIN_IMAGES = 2

__all__ = ["load_image_folder", "load_image_csv", "list_image_folder",
           "IMAGE_EXTENSIONS"]


class _Skipped:
    """Counts of skipped entries, reported in one log line."""

    def __init__(self):
        self.hidden = self.not_image = self.loose = 0

    def report(self, where):
        total = self.hidden + self.not_image + self.loose
        if total:
            logging.info("%s: skipped %d entries (%d hidden files or folders, %d not an "
                         "image by extension, %d outside a class folder)", where, total, self.hidden,
                         self.not_image, self.loose)
        return total


def _is_image(name):
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk_images(top, skipped, out):
    """Append the image files under ``top`` (recursively, sorted) to ``out``."""
    try:
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as err:
        raise DataNotFoundError(f"cannot list {top!r}: {err}") from None
    for entry in entries:
        if entry.name.startswith("."):
            skipped.hidden += 1
        elif entry.is_dir():
            _walk_images(entry.path, skipped, out)
        elif _is_image(entry.name):
            out.append(entry.path)
        else:
            skipped.not_image += 1


def _class_folders(root, skipped):
    """``{class name: sorted image paths}`` of ``root/<class>/...``."""
    classes = {}
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if entry.name.startswith("."):
            skipped.hidden += 1
        elif entry.is_dir():
            paths = []
            _walk_images(entry.path, skipped, paths)
            classes[entry.name] = paths
        else:
            skipped.loose += 1
    return classes


def _is_split_layout(root):
    names = {e.name for e in os.scandir(root)
             if e.is_dir() and not e.name.startswith(".")}
    return {"train", "test"} <= names and names <= set(SPLIT_FOLDERS)


def list_image_folder(root: Union[str, os.PathLike]) -> Dict[str, Dict[str, List[str]]]:
    """``{split or "all": {class name: [image paths]}}`` of a folder tree
    (see the module docstring), with hidden / non-image / loose files
    skipped and counted in one log line. Classes are not filtered here."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataNotFoundError(f"image folder not found: {root!r} (expected "
                                "root/<class>/<images> or root/train|test/<class>/...).")
    skipped = _Skipped()
    if _is_split_layout(root):
        tree = {s: _class_folders(os.path.join(root, s), skipped)
                for s in SPLIT_FOLDERS if os.path.isdir(os.path.join(root, s))}
    else:
        tree = {"all": _class_folders(root, skipped)}
    skipped.report(root)
    return tree


def _drop_tiny(classes, where):
    """``classes`` without those of fewer than MIN_IMAGES images (warned)."""
    tiny = sorted(c for c, paths in classes.items() if len(paths) < MIN_IMAGES)
    if tiny:
        shown = ", ".join(repr(c) for c in tiny[:20]) + (" ..." if len(tiny) > 20 else "")
        logging.warning("%s: dropped %d class(es) with fewer than %d images: %s",
                        where, len(tiny), MIN_IMAGES, shown)
    return {c: p for c, p in classes.items() if len(p) >= MIN_IMAGES}


def _class_order(names):
    """Sorted class names: numerically when every name is an integer."""
    names = list(names)
    try:
        return sorted(names, key=lambda n: (int(n), n))
    except ValueError:
        return sorted(names)


def _named(split, all_names, name):
    """``split`` renamed, with ``info["class_names"]`` for its labels.

    ``split.info["original_classes"]`` (set by ``kd.data.relabel``) maps its
    labels to ids of the full class list ``all_names``; a split that was not
    relabelled has labels that are already such ids.
    """
    classes = split.info.get("original_classes")
    labels_to_names = np.asarray(all_names, dtype=object)
    names = labels_to_names[np.asarray(classes)] if classes is not None else labels_to_names
    # Indices into intermediate splits and the relabelling map mean nothing
    # to a user of this split.
    info = {k: v for k, v in split.info.items()
            if k not in ("parent_indices", "original_classes")}
    info["class_names"] = [str(n) for n in names]
    return split.with_labels(split.labels, name=name, info=info)


def _whole_split(name, classes, order, root):
    """One Split of ``{class: paths}`` with labels = positions in ``order``."""
    paths, labels = [], []
    for label, cls in enumerate(order):
        paths.extend(classes[cls])
        labels.extend([label] * len(classes[cls]))
    split = Split.from_files(name, paths, np.asarray(labels, np.int32), channels=3,
                             info={"class_names": list(order), "root": root})
    return split


def _per_class_examples(labels, fraction, seed):
    """Sorted indices of a ``fraction`` of each class's examples (at least
    one, and at least one left), drawn with ``seed``."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"test_examples must be in (0, 1); got {fraction!r}.")
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n = min(max(int(round(fraction * len(members))), 1), len(members) - 1)
        picked.append(rng.choice(members, n, replace=False))
    return np.sort(np.concatenate(picked))


def _split_whole(split, split_by, test_classes, test_examples, seed):
    """(train, test) of one split of every class."""
    if split_by == "classes":
        if not (isinstance(test_classes, (int, float)) and 0.0 < test_classes < 1.0):
            raise ValueError(f"test_classes must be a fraction in (0, 1); got "
                             f"{test_classes!r}.")
        train, test = _splits.hold_out_classes(split, test_classes, seed)
        if test is None:
            raise ValueError(f"test_classes={test_classes} of {split.num_classes} classes "
                             "rounds to no test class; raise it or add classes.")
        return train, test
    test_idx = _per_class_examples(split.labels, test_examples, seed)
    train_idx = np.setdiff1d(np.arange(len(split)), test_idx)
    return split.subset(train_idx, "train"), split.subset(test_idx, "test")


def _verify(split, on_corrupt):
    """Decode ``split`` once; drop (skip) or refuse (raise) unreadable images."""
    bad = split.verify()
    if not bad:
        return split
    shown = ", ".join(bad[:10]) + (" ..." if len(bad) > 10 else "")
    if on_corrupt == "raise":
        raise ValueError(f"split {split.name!r}: {len(bad)} unreadable image(s) (corrupt, "
                         f"truncated or empty): {shown}; fix or remove them, or load with "
                         "on_corrupt='skip'.")
    logging.warning("split %r: skipping %d unreadable image(s): %s", split.name,
                    len(bad), shown)
    keep = np.flatnonzero(~np.isin(split.names.astype(str), np.asarray(bad, dtype=str)))
    return split.subset(keep, split.name)


def _assemble(name, parts, all_names, on_corrupt, root):
    """RetrievalData of ``{split name: Split}`` whose labels index ``all_names``."""
    if on_corrupt not in (None, "raise", "skip"):
        raise ValueError(f"on_corrupt must be None, 'raise' or 'skip'; got {on_corrupt!r}.")
    out = {}
    for split_name, split in parts.items():
        if on_corrupt is not None:
            split = _verify(split, on_corrupt)
        # Labels index all_names here; relabel renumbers them 0..C-1 within the
        # split and carries the class names along (and records the map).
        split = split.with_labels(split.labels, name=split.name,
                                  info={**split.info, "class_names": list(all_names)})
        split = _splits.relabel(split)
        out[split_name] = _named(split, all_names, split_name)
    train = out["train"]
    if train.num_classes < 2:
        raise ValueError(f"{root}: training needs at least 2 classes of >= {MIN_IMAGES} "
                         f"images; train has {train.num_classes}.")
    info = {"class_names": list(all_names), "root": root}
    if "val" in out:
        info["val"] = out["val"]
    logging.info("%s: %s", root, ", ".join(
        f"{k} {len(v)} images / {v.num_classes} classes" for k, v in out.items()))
    return RetrievalData(name, train=train, test=out.get("test"),
                         num_train_classes=train.num_classes, image_shape=None,
                         label_type="class", info=info)


def _check_split_arg(split):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}.")


def _from_class_lists(name, tree, root, test_classes, seed, split, test_examples,
                      on_corrupt):
    """RetrievalData of ``{"all": ...}`` or ``{"train": ..., "test": ...}``."""
    tree = {s: _drop_tiny(classes, f"{root} [{s}]" if s != "all" else root)
            for s, classes in tree.items()}
    all_names = _class_order({c for classes in tree.values() for c in classes})
    if not all_names:
        raise DataNotFoundError(f"{root}: no class with at least {MIN_IMAGES} images "
                                "found (expected root/<class>/<images>).")
    if "all" in tree:
        whole = _whole_split("all", tree["all"], all_names, root)
        train, test = _split_whole(whole, split, test_classes, test_examples, seed)
        # hold_out_classes relabelled: map back to ids of all_names.
        parts = {"train": _ids_of(train, whole), "test": _ids_of(test, whole)}
    else:
        parts = {}
        for s, classes in tree.items():
            if not classes:
                continue
            ids = {c: i for i, c in enumerate(all_names)}
            order = _class_order(classes)
            sub = _whole_split(s, classes, order, root)
            parts[s] = sub.with_labels(np.asarray([ids[order[y]] for y in sub.labels],
                                                  np.int32), name=s)
        for required in ("train", "test"):
            if required not in parts:
                raise DataNotFoundError(f"{root}/{required}: no class with at least "
                                        f"{MIN_IMAGES} images.")
    return _assemble(name, parts, all_names, on_corrupt, root)


def _ids_of(part, whole):
    """``part`` (a subset of ``whole``, maybe relabelled) with labels that are
    ``whole``'s class ids again."""
    idx = part.info["parent_indices"]
    return part.with_labels(whole.labels[idx], name=part.name,
                            info={k: v for k, v in part.info.items()
                                  if k not in ("original_classes", "class_names")})


def load_image_folder(root: Union[str, os.PathLike], test_classes: float = 0.5, seed: int = 0,
                      split: str = "classes", test_examples: float = 0.5,
                      on_corrupt: Optional[str] = None, name: Optional[str] = None) -> RetrievalData:
    """A folder tree of class folders as a :class:`RetrievalData`.

    Args:
      root: ``root/<class>/<images>`` or ``root/train|test[|val]/<class>/...``
        (see the module docstring).
      test_classes: ``split="classes"``: the fraction of the classes held out
        as the (class-disjoint) test split, ``round(test_classes * C)``.
      seed: the random split's seed (same seed, same split on any machine).
      split: "classes" (class-disjoint) or "examples" (every class in both;
        ``test_examples`` of each class's images, at least 1, go to test).
        Ignored for the train/test layout, which is used as given.
      test_examples: ``split="examples"``: the fraction of each class's
        images in test.
      on_corrupt: None (unreadable images fail later, in the pipeline, with
        its ``on_corrupt`` policy), "skip" or "raise" (decode every image
        now; drop or refuse unreadable ones).
      name: the data set's name (default the folder's name).

    Returns:
      ``RetrievalData`` with ``train`` and ``test`` splits of files (labels
      0..C-1 within each split, ``info["class_names"]``), ``image_shape``
      None (images may differ in size).
    """
    _check_split_arg(split)
    root = os.path.abspath(os.fspath(root))
    tree = list_image_folder(root)
    return _from_class_lists(name or os.path.basename(root.rstrip(os.sep)) or "images",
                             tree, root, test_classes, seed, split, test_examples,
                             on_corrupt)


def load_image_csv(path: Union[str, os.PathLike], root: Optional[Union[str, os.PathLike]] = None,
                   image_column: str = "path", label_column: str = "label",
                   split_column: Optional[str] = None, test_classes: float = 0.5,
                   seed: int = 0, split: str = "classes", test_examples: float = 0.5,
                   on_corrupt: Optional[str] = None, name: Optional[str] = None) -> RetrievalData:
    """Images listed in a CSV file (a header row names the columns).

    Args:
      path: the CSV file (UTF-8; comma-separated, Excel dialect).
      root: the folder relative paths are relative to (default the CSV's
        folder); absolute paths are used as they are.
      image_column, label_column: the columns of the image path and of the
        class (any text: the class name).
      split_column: optional column of "train" / "test" / "val" per row
        (used as given, like the folder layout ``root/train|test|val``);
        without it the split is made as in :func:`load_image_folder`.
      test_classes, seed, split, test_examples, on_corrupt, name: as in
        :func:`load_image_folder`. Rows whose file is missing are refused
        (``on_corrupt`` "skip": dropped with a warning).

    Returns:
      ``RetrievalData`` as :func:`load_image_folder`.
    """
    _check_split_arg(split)
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise DataNotFoundError(f"CSV file not found: {path!r}.")
    base = os.path.abspath(os.fspath(root)) if root is not None else os.path.dirname(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for col in (image_column, label_column) + ((split_column,) if split_column else ()):
            if col not in columns:
                raise ValueError(f"{path}: no column {col!r}; the header has {columns}.")
        rows = list(reader)
    tree: Dict[str, Dict[str, List[str]]] = {}
    missing: List[str] = []
    for number, row in enumerate(rows, 2):
        file = (row.get(image_column) or "").strip()
        label = (row.get(label_column) or "").strip()
        if not file or not label:
            raise ValueError(f"{path}:{number}: empty {image_column!r} or {label_column!r}.")
        where = "all"
        if split_column:
            where = (row.get(split_column) or "").strip().lower()
            if where not in SPLIT_FOLDERS:
                raise ValueError(f"{path}:{number}: {split_column!r} must be one of "
                                 f"{SPLIT_FOLDERS}; got {where!r}.")
        full = file if os.path.isabs(file) else os.path.join(base, file)
        if not os.path.isfile(full):
            missing.append(full)
            continue
        tree.setdefault(where, {}).setdefault(label, []).append(full)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        if on_corrupt != "skip":
            raise DataNotFoundError(f"{path}: {len(missing)} listed image file(s) not found "
                                    f"(paths relative to {base}): {shown}.")
        logging.warning("%s: skipping %d missing image file(s): %s", path, len(missing),
                        shown)
    if split_column and not {"train", "test"} <= set(tree):
        raise ValueError(f"{path}: the {split_column!r} column must give both train and "
                         f"test rows; it has {sorted(tree)}.")
    if not split_column:
        tree = {"all": tree.get("all", {})}
    return _from_class_lists(name or os.path.splitext(os.path.basename(path))[0], tree,
                             path, test_classes, seed, split, test_examples, on_corrupt)
