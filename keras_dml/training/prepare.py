"""The data side of a run: splits, K checks, transforms and pipelines.

    sets = prepare.split_data(recipe, data, task)     # before the run directory exists
    pipes = prepare.pipelines(recipe, data, task, loss, sets)
"""

import dataclasses
from typing import Callable, Optional

import numpy as np
from absl import logging

from keras_dml.training.recipe import RecipeError

# Label-space neighbours per anchor in a continuous batch (the log-ratio
# authors' sampler).
NUM_NEIGHBOURS = 5


@dataclasses.dataclass
class RunSets:
    """The splits of a run.

    Attributes:
      train, val: the training subset and its validation hold-out (or None).
      query, gallery: the test queries and the gallery they search (None:
        each query searches the rest of ``query``).
      test_distances: precomputed label distances among ``query`` (or None).
      num_classes: training classes (None for continuous labels).
    """

    train: object
    val: object
    query: object
    gallery: object
    test_distances: Optional[np.ndarray]
    num_classes: Optional[int]


@dataclasses.dataclass
class Pipelines:
    """The tf.data side of a run.

    Attributes:
      train: the training pipeline (repeating when ``steps_per_epoch`` is set).
      steps_per_epoch: training steps per epoch.
      eval: ``split -> evaluation pipeline`` (eval transform, normalisation).
      eval_transform, normalization: what ``eval`` applies (the export
        applies them too).
    """

    train: object
    steps_per_epoch: int
    eval: Callable
    eval_transform: Callable
    normalization: str


def split_train(recipe, data, task):
    """(train, val or None): subset, then the validation hold-out."""
    from keras_dml.data import splits
    train_all = splits.random_subset(data.train, recipe.max_train_examples, recipe.seed)
    given = data.info.get("val")
    if given is not None:
        # A validation split given by the data (an image folder's ROOT/val/):
        # used as it is, instead of a hold-out (val_fraction / val_split unused).
        if train_all is not data.train:
            train_all = splits.relabel(train_all, "train")
        return train_all, given
    how = recipe.val_split
    if how == "auto":
        how = "examples" if task.continuous else "classes"
    if task.continuous and how == "classes":
        raise RecipeError("val_split='classes' needs class labels; continuous tasks hold "
                          "out examples (val_split='examples' or 'auto').")
    if how == "classes":
        return splits.hold_out_classes(train_all, recipe.val_fraction, recipe.seed)
    return splits.hold_out_examples(train_all, recipe.val_fraction, recipe.seed,
                                    relabel_classes=not task.continuous)


def test_sets(recipe, data, task):
    """(query, gallery or None, precomputed test label distances or None)."""
    from keras_dml.data import splits
    if data.query is not None:
        return (splits.random_subset(data.query, recipe.max_test_examples, recipe.seed),
                data.gallery, None)
    if data.test is None:
        raise ValueError(f"data {data.name!r} has neither a test split nor query/gallery.")
    idx = splits.random_indices(len(data.test), recipe.max_test_examples, recipe.seed)
    dist = data.test.info.get("label_distances") if task.continuous else None
    if idx is None:
        return data.test, None, dist
    return (data.test.subset(idx, "test"), None,
            None if dist is None else np.asarray(dist)[np.ix_(idx, idx)])


def check_ks(recipe, val, query, gallery=None) -> None:
    """Fail before training unless every K is below the items a query can
    retrieve (the rest of its set, or the gallery): at K >= those, Recall@K
    is 1 and the continuous metrics are the same for any embedding, and the
    metric functions refuse them."""
    k = max(recipe.ks)
    for name, split, searched in (("validation", val, None), ("test", query, gallery)):
        if split is None:
            continue
        available = len(searched) if searched is not None else len(split) - 1
        if k >= available:
            where = "gallery items" if searched is not None else f"other {name} examples"
            raise RecipeError(
                f"ks up to {k} needs more than {k} {where} per query; there are "
                f"{available} (raise val_fraction / max_test_examples or lower ks).")


def split_data(recipe, data, task) -> RunSets:
    """Training subset, validation hold-out and test sets, with the K check."""
    train, val = split_train(recipe, data, task)
    query, gallery, test_dist = test_sets(recipe, data, task)
    check_ks(recipe, val, query, gallery)
    num_classes = None if task.continuous else int(train.labels.max()) + 1
    logging.info("data %s: train %d images%s, val %s", data.name, len(train),
                 "" if num_classes is None else f" / {num_classes} classes",
                 None if val is None else len(val))
    return RunSets(train, val, query, gallery, test_dist, num_classes)


def transforms(recipe, data, task):
    """(train transform, eval transform, normalisation name)."""
    from keras_dml import backbones
    from keras_dml.data import augment as aug
    normalization = backbones.preprocessing_name(recipe.backbone)
    if task.transforms is not None:
        return (*task.transforms(recipe), normalization)
    size = recipe.image_size
    native = data.image_shape or data.train.image_shape
    rgb = native[-1] == 1
    if native[0] is not None and native[0] < size:
        # Small images (Fashion-MNIST): upscale whole; crops would lose too much.
        return (aug.train_transform(size, scale=(0.5, 1.0), rgb=rgb),
                aug.resize_transform(size, rgb=rgb), normalization)
    return aug.train_transform(size, rgb=rgb), aug.eval_transform(size, rgb=rgb), normalization


def train_pipeline(recipe, task, loss, train, train_tf, normalization):
    """The training tf.data pipeline and its batch size (class batches of P
    classes x M images for pair losses; label-space batches for continuous)."""
    from keras_dml.data import core, samplers
    batch_size, sampler = recipe.batch_size, None
    if recipe.sampler == "label_space" and not task.continuous:
        raise RecipeError("sampler='label_space' needs continuous labels; class tasks use "
                          "sampler='auto' or 'random'.")
    if recipe.sampler == "random":
        # Shuffled examples (e.g. the "log-ratio without dense mining" ablation).
        batch_size = min(batch_size, len(train))
    elif task.continuous:
        sampler = samplers.LabelSpaceBatchSampler(
            task.label_neighbours(train.labels, NUM_NEIGHBOURS),
            batch_size=min(batch_size, len(train)), num_neighbours=NUM_NEIGHBOURS,
            seed=recipe.seed)
        batch_size = sampler.batch_size
    elif recipe.m_per_class or not loss.takes_proxies:
        # Pair losses need positives in every batch: P classes x M images
        # (M = 3 unless m_per_class; fewer classes per batch if few exist).
        num_classes = int(train.labels.max()) + 1
        m = recipe.m_per_class or max(3, -(-batch_size // num_classes))
        batch_size = m * min(num_classes, batch_size // m)
        if batch_size != recipe.batch_size:
            logging.warning("batch size %d -> %d (%d classes x %d images)",
                            recipe.batch_size, batch_size, batch_size // m, m)
        sampler = samplers.MPerClassSampler(train.labels, m, batch_size, seed=recipe.seed)
    return core.make_train_pipeline(
        train, batch_size, augment=train_tf, sampler=sampler, normalize=normalization,
        cache=recipe.cache and sampler is None, seed=recipe.seed)


def pipelines(recipe, data, task, loss, sets: RunSets) -> Pipelines:
    """The training pipeline (exactly ``steps_per_epoch`` steps an epoch
    when the recipe sets it) and the evaluation pipeline factory."""
    from keras_dml.data import core
    train_tf, eval_tf, normalization = transforms(recipe, data, task)
    train_ds = train_pipeline(recipe, task, loss, sets.train, train_tf, normalization)
    steps_per_epoch = recipe.steps_per_epoch or int(train_ds.cardinality().numpy())
    if recipe.steps_per_epoch:
        # Exactly steps_per_epoch steps every epoch: the stream repeats
        # (each pass is the sampler's next epoch) instead of running dry.
        train_ds = train_ds.repeat()

    def eval_ds(split):
        return core.make_eval_pipeline(split, recipe.eval_batch_size, transform=eval_tf,
                                       normalize=normalization)

    return Pipelines(train_ds, steps_per_epoch, eval_ds, eval_tf, normalization)
