"""Train / validation splitting and subsetting of :class:`Split` objects.

    train, val = kd.data.hold_out_classes(data.train, fraction=0.1, seed=0)
    train, val = kd.data.hold_out_examples(data.train, fraction=0.1, seed=0)
    small = kd.data.random_subset(data.test, 1000, seed=0)
    split = kd.data.relabel(split)          # class ids -> 0..C-1

Every helper is deterministic in its ``seed`` and keeps the examples in
their original order (indices sorted), so the same seed gives the same
split on any machine.

Class metadata follows the labels: ``info`` entries indexed by class label
(``PER_CLASS_KEYS``: ``classes``, ``class_names``, ``item_ids``; and the
TFDS loaders' ``class_offset``) are rewritten whenever a helper renumbers
the labels, so ``info["class_names"][label]`` names the right class in every
split a helper returns (helpers that keep the labels keep the entries).
"""

import numpy as np

from keras_dml.data.core import Split, remap_labels

__all__ = ["hold_out_classes", "hold_out_examples", "random_indices",
           "random_subset", "relabel", "PER_CLASS_KEYS"]

# Split.info entries holding one value per class label (row = label).
PER_CLASS_KEYS = ("classes", "class_names", "item_ids")


def _check_split(split, what):
    if not isinstance(split, Split):
        raise TypeError(f"{what} takes a keras_dml.data.Split; got "
                        f"{type(split).__name__}.")


def _check_fraction(fraction):
    if not (isinstance(fraction, (int, float)) and 0.0 <= fraction < 1.0):
        raise ValueError(f"fraction must be in [0, 1); got {fraction!r}.")


def _class_labels(split, what):
    labels = split.labels
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"{what} needs int class labels [N]; split "
                         f"{split.name!r} has {labels.dtype} {labels.shape}.")
    return labels


def renumbered_info(info, old_ids):
    """``info`` for labels renumbered so that new label ``j`` is old label
    ``old_ids[j]``: every per-class entry (``PER_CLASS_KEYS``) becomes
    ``entry[old_ids]``, ``class_offset`` becomes explicit ``classes``, and
    ``original_classes`` is ``old_ids``."""
    info, old_ids = dict(info), np.asarray(old_ids, np.int64)
    for key in PER_CLASS_KEYS:
        if key not in info:
            continue
        values = info[key]
        table = np.asarray(values, dtype=object if key != "classes" else None)
        if len(old_ids) and old_ids.max() >= len(table):
            raise ValueError(f"split info[{key!r}] has {len(table)} entries but the "
                             f"labels go up to {int(old_ids.max())}.")
        picked = table[old_ids]
        info[key] = picked.tolist() if isinstance(values, (list, tuple)) else picked
    if "class_offset" in info:
        offset = int(info.pop("class_offset"))
        info.setdefault("classes", (old_ids + offset).tolist())
    if "num_classes" in info:
        info["num_classes"] = int(len(old_ids))
    info["original_classes"] = old_ids
    return info


def relabel(split, name=None):
    """``split`` with its class ids remapped to 0..C-1 (sorted order).

    ``info["original_classes"][new_id]`` is the old id of each new one, and
    the per-class info entries (``class_names``, ...) follow the new ids.
    """
    _check_split(split, "relabel")
    labels, classes = remap_labels(_class_labels(split, "relabel"))
    return split.with_labels(labels, name=name,
                             info=renumbered_info(split.info, classes))


def random_indices(n, count, seed):
    """Sorted indices of ``count`` of ``n`` items drawn without replacement,
    or None when ``count`` is None or >= n (take everything)."""
    if count is None or count >= n:
        return None
    if int(count) != count or count < 1:
        raise ValueError(f"count must be a positive integer or None; got "
                         f"{count!r}.")
    return np.sort(np.random.default_rng(seed).choice(n, int(count),
                                                      replace=False))


def random_subset(split, count, seed, name=None):
    """A random subset of ``count`` examples (``split`` itself if ``count``
    is None or not smaller than the split); labels are kept as they are."""
    _check_split(split, "random_subset")
    idx = random_indices(len(split), count, seed)
    return split if idx is None else split.subset(idx, name or split.name)


def hold_out_classes(split, fraction, seed):
    """(train, val): a random ``fraction`` of the classes goes to ``val``
    (class-disjoint, like the retrieval benchmarks' test splits).

    Both are relabelled to 0..C-1; ``val`` is None when ``fraction`` rounds
    to no class. Raises ValueError if fewer than 2 training classes remain.
    """
    _check_split(split, "hold_out_classes")
    _check_fraction(fraction)
    labels = _class_labels(split, "hold_out_classes")
    classes = np.unique(labels)
    n_val = int(round(fraction * len(classes)))
    if n_val == 0:
        return relabel(split, "train"), None
    if len(classes) - n_val < 2:
        raise ValueError(f"holding out {n_val} of {len(classes)} classes "
                         f"(fraction={fraction}) leaves fewer than 2 "
                         "training classes.")
    val_classes = np.random.default_rng(seed).choice(classes, n_val,
                                                     replace=False)
    is_val = np.isin(labels, val_classes)
    return (relabel(split.subset(np.flatnonzero(~is_val)), "train"),
            relabel(split.subset(np.flatnonzero(is_val)), "val"))


def hold_out_examples(split, fraction, seed, relabel_classes=False):
    """(train, val): a random ``fraction`` of the examples goes to ``val``
    (None when that rounds to 0 examples).

    ``relabel_classes``: remap class ids to 0..C-1 in each part (for class
    labels, where a class may fall entirely into one part).
    """
    _check_split(split, "hold_out_examples")
    _check_fraction(fraction)
    n_val = int(round(fraction * len(split)))
    parts = [split, None]
    if n_val:
        perm = np.random.default_rng(seed).permutation(len(split))
        parts = [split.subset(np.sort(perm[n_val:]), "train"),
                 split.subset(np.sort(perm[:n_val]), "val")]
    if relabel_classes:
        parts = [p if p is None else relabel(p, name)
                 for p, name in zip(parts, ("train", "val"))]
    return tuple(parts)
