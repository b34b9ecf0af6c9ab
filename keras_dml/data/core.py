"""The common data interface: splits, data sets and tf.data pipelines.

Every loader in ``keras_dml.data`` returns a :class:`RetrievalData` whose
splits are :class:`Split` objects. A split knows its labels up front (a
numpy array, so samplers and evaluation never decode an image to read a
label) and loads image ``i`` lazily inside ``tf.data`` (files, encoded
bytes in memory, or a uint8 array). ``split.dataset()`` yields
``(image uint8 [H, W, C], label)`` in order, before any augmentation;
:func:`make_train_pipeline` / :func:`make_eval_pipeline` add shuffling (of
indices, before decoding) or a sampler, augmentation, normalisation,
batching and prefetching.

Unreadable images. A corrupt, truncated, empty or missing image file never
crashes an epoch with TensorFlow's bare ``jpeg::Uncompress failed``:
``on_corrupt="raise"`` (default) stops with an ``InvalidArgumentError``
whose message names the file; ``on_corrupt="skip"`` drops the example and
prints a warning naming it (batches then come from the remaining
examples). ``split.verify()`` decodes a whole split once and returns the
names of all unreadable images (e.g. to count them before training).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sized
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from keras_dml._types import TensorLike

#: A per-image transform, or a normalisation name / callable (see make_train_pipeline).
ImageFn = Callable[..., Any]

AUTOTUNE = tf.data.AUTOTUNE
# Arrays up to this size are embedded in the tf.data graph as constants;
# bigger ones are looked up through tf.numpy_function (the graph proto of a
# dataset must stay below 2 GB).
_MAX_CONSTANT_BYTES = 64 << 20
ON_CORRUPT = ("raise", "skip")
# Examples loaded concurrently by the checked loader (interleave cycle).
_CYCLE = 16


def _check_on_corrupt(on_corrupt):
    if on_corrupt not in ON_CORRUPT:
        raise ValueError(
            f"on_corrupt must be one of {ON_CORRUPT}; got {on_corrupt!r}.")


def array_lookup(array: TensorLike, name: str = "lookup") -> Callable[[Any], Any]:
    """``index -> array[index]`` as a graph function (constant or numpy)."""
    array = np.asarray(array)
    if array.dtype.kind in "US":
        array = array.astype(object)
    if array.dtype != object and array.nbytes <= _MAX_CONSTANT_BYTES:
        table = tf.constant(array)
        return lambda i: tf.gather(table, i)
    if array.dtype == object and sum(
            len(x) for x in array.ravel()) <= _MAX_CONSTANT_BYTES:
        table = tf.constant([x if isinstance(x, bytes) else str(x).encode()
                             for x in array.ravel()], dtype=tf.string)
        table = tf.reshape(table, array.shape)
        return lambda i: tf.gather(table, i)
    dtype = tf.string if array.dtype == object else tf.as_dtype(array.dtype)
    shape = array.shape[1:]

    def _get(i):
        return np.asarray(array[int(i)]) if dtype != tf.string \
            else np.asarray(array[int(i)], dtype=object)

    def lookup(i):
        out = tf.numpy_function(_get, [i], dtype, stateful=False, name=name)
        out.set_shape(shape)
        return out

    return lookup


def decode_image(data: Any, channels: int = 3) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP/WebP bytes -> uint8 [H, W, channels].

    Grey images become RGB with ``channels=3`` (as the authors'
    ``convert('RGB')``); animations keep their first frame.
    """
    image = tf.io.decode_image(data, channels=channels,
                               expand_animations=False)
    image.set_shape([None, None, channels])
    return image


class Split:
    """N examples: labels in memory, images loaded by index in tf.data.

    Args:
      name: split name, for messages ("train", "query", ...).
      labels: numpy array [N, ...]: int class ids [N] (contiguous 0..C-1),
        float label vectors [N, L], integer maps [N, h, w], ...
      load_image: graph function ``index (int64 scalar) -> uint8 [H, W, C]``;
        it may fail (TensorFlow error) for an unreadable image.
      names: [N] strings naming each example (file path, TFDS key) for
        error messages and plots.
      channels: C of the images.
      image_shape: (H, W, C) when every image has that shape, else
        (None, None, C).
      info: free-form metadata (e.g. the original class id of each label).
    """

    def __init__(self, name: str, labels: TensorLike, load_image: Callable[[Any], Any],
                 names: TensorLike, channels: int = 3,
                 image_shape: Optional[Sequence[Optional[int]]] = None,
                 info: Optional[Dict[str, Any]] = None, may_fail: bool = True) -> None:
        self.name = name
        self.labels = np.asarray(labels)
        self.names = np.asarray(names, dtype=object)
        if len(self.names) != len(self.labels):
            raise ValueError(f"split {name!r}: {len(self.names)} names for "
                             f"{len(self.labels)} labels.")
        self._load_image = load_image
        self.channels = int(channels)
        self.image_shape = tuple(image_shape) if image_shape is not None \
            else (None, None, self.channels)
        self.info = dict(info or {})
        # False for in-memory arrays: nothing to check, plain fast map.
        self.may_fail = bool(may_fail)
        self._label_lookup = array_lookup(self.labels, name=f"{name}_labels")
        self._name_lookup = array_lookup(self.names, name=f"{name}_names")

    # -- construction helpers -------------------------------------------
    @classmethod
    def from_files(cls, name: str, paths: Iterable[Union[str, os.PathLike]],
                   labels: TensorLike, channels: int = 3,
                   image_shape: Optional[Sequence[int]] = None,
                   info: Optional[Dict[str, Any]] = None) -> Split:
        """Images stored as files (``paths``), decoded with TensorFlow.

        ``image_shape`` (H, W): declare that every image has this size (a
        file of another size then fails like a corrupt one).
        """
        paths = np.asarray([str(p) for p in paths], dtype=object)
        path_of = array_lookup(paths, name=f"{name}_paths")
        shape = None
        if image_shape is not None:
            shape = (int(image_shape[0]), int(image_shape[1]), channels)

        def load_image(i):
            image = decode_image(tf.io.read_file(path_of(i)), channels)
            return image if shape is None else tf.ensure_shape(image, shape)

        return cls(name, labels, load_image, paths, channels=channels,
                   image_shape=shape, info=info)

    @classmethod
    def from_encoded(cls, name: str, blobs: TensorLike, labels: TensorLike,
                     names: TensorLike, channels: int = 3,
                     info: Optional[Dict[str, Any]] = None) -> Split:
        """Images held in memory as encoded bytes (e.g. read from TFDS)."""
        blobs = np.asarray(blobs, dtype=object)
        blob_of = array_lookup(blobs, name=f"{name}_blobs")

        def load_image(i):
            return decode_image(blob_of(i), channels)

        return cls(name, labels, load_image, names, channels=channels,
                   info=info)

    @classmethod
    def from_arrays(cls, name: str, images: TensorLike, labels: TensorLike,
                    names: Optional[TensorLike] = None,
                    info: Optional[Dict[str, Any]] = None) -> Split:
        """Images already decoded: uint8 array [N, H, W, C]."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError("from_arrays expects uint8 images [N, H, W, C]; "
                             f"got {images.dtype} {images.shape}.")
        if names is None:
            names = [f"{name}[{i}]" for i in range(len(images))]
        image_of = array_lookup(images, name=f"{name}_images")
        return cls(name, labels, image_of, names, channels=images.shape[-1],
                   image_shape=images.shape[1:], info=info, may_fail=False)

    # -- properties --------------------------------------------------------
    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"Split({self.name!r}, n={len(self)}, "
                f"image_shape={self.image_shape}, labels {self.labels.dtype}"
                f"{list(self.labels.shape[1:])})")

    @property
    def num_classes(self) -> int:
        """Number of distinct class labels (class-labelled splits only)."""
        if self.labels.ndim != 1 or self.labels.dtype.kind not in "iu":
            raise ValueError(f"split {self.name!r} has no class labels "
                             f"(labels {self.labels.dtype} "
                             f"{self.labels.shape}).")
        return int(len(np.unique(self.labels)))

    @property
    def fixed_shape(self) -> bool:
        return None not in self.image_shape

    def label_of(self, index: Any) -> tf.Tensor:
        return self._label_lookup(index)

    # -- loading -------------------------------------------------------------
    def _checked(self, index_ds):
        """index -> (index, image, ok); ``ok`` false where loading failed.

        Each index runs in its own one-element dataset whose errors are
        ignored, followed by a placeholder: ``take(1)`` then yields the image
        or, if loading failed, the placeholder with ``ok=False``. The
        interleave keeps the input order and decodes in parallel.
        """
        # The placeholder has the images' static shape when it is known, so
        # that the concatenation keeps it (Keras layers such as RandomCrop
        # need it).
        placeholder = tf.zeros(
            self.image_shape if self.fixed_shape else [1, 1, self.channels],
            tf.uint8)

        def one(i):
            i = tf.cast(i, tf.int64)
            loaded = tf.data.Dataset.from_tensors(i).map(
                lambda j: (self._load_image(j), True)).ignore_errors()
            fallback = tf.data.Dataset.from_tensors((placeholder, False))
            return loaded.concatenate(fallback).take(1).map(
                lambda image, ok: (i, image, ok))

        return index_ds.interleave(one, cycle_length=_CYCLE, block_length=1,
                                   num_parallel_calls=AUTOTUNE,
                                   deterministic=True)

    def load(self, index_ds: tf.data.Dataset, on_corrupt: str = "raise") -> tf.data.Dataset:
        """A dataset of indices -> ``(image uint8, label)`` in that order."""
        _check_on_corrupt(on_corrupt)
        if not self.may_fail:
            return index_ds.map(
                lambda i: (self._load_image(i), self._label_lookup(i)),
                num_parallel_calls=AUTOTUNE)
        ds = self._checked(index_ds)
        split_name = self.name
        if on_corrupt == "raise":
            def check(i, image, ok):
                assertion = tf.debugging.Assert(ok, [
                    f"keras_dml.data: cannot read or decode image of split "
                    f"'{split_name}':", self._name_lookup(i),
                    "(corrupt, truncated, empty or missing file; fix or "
                    "remove it, or load with on_corrupt='skip')"],
                    summarize=1)
                with tf.control_dependencies([assertion]):
                    return tf.identity(image), self._label_lookup(i)
            return ds.map(check, num_parallel_calls=AUTOTUNE)

        def warn(i, image, ok):
            def _report():
                printed = tf.print(
                    "keras_dml.data: WARNING: skipping unreadable image of "
                    f"split '{split_name}':", self._name_lookup(i),
                    output_stream=sys.stderr)
                with tf.control_dependencies([printed]):
                    return tf.constant(False)
            return tf.cond(ok, lambda: tf.constant(True), _report)

        ds = ds.filter(warn)
        return ds.map(lambda i, image, ok: (image, self._label_lookup(i)),
                      num_parallel_calls=AUTOTUNE)

    def dataset(self, on_corrupt: str = "raise") -> tf.data.Dataset:
        """All examples in order: ``(image uint8 [H, W, C], label)``."""
        return self.load(tf.data.Dataset.range(len(self)), on_corrupt)

    def verify(self, batch_size: int = 64) -> List[str]:
        """Decode every image once; return the names of unreadable ones."""
        ds = self._checked(tf.data.Dataset.range(len(self)))
        ds = ds.map(lambda i, image, ok: (i, ok)).batch(batch_size)
        bad: List[str] = []
        for idx, ok in ds.as_numpy_iterator():
            bad.extend(str(self.names[i]) for i in idx[~ok])
        return bad

    def subset(self, indices: TensorLike, name: Optional[str] = None) -> Split:
        """A split of the examples ``indices`` (labels kept as they are)."""
        indices = np.asarray(indices, dtype=np.int64)
        table = tf.constant(indices)
        parent = self._load_image
        info = dict(self.info)
        info["parent_indices"] = indices
        return Split(name or self.name, self.labels[indices],
                     lambda i: parent(tf.gather(table, i)),
                     self.names[indices], channels=self.channels,
                     image_shape=self.image_shape, info=info,
                     may_fail=self.may_fail)

    def with_labels(self, labels: TensorLike, name: Optional[str] = None,
                    info: Optional[Dict[str, Any]] = None) -> Split:
        """The same images with other ``labels`` [N, ...] (e.g. remapped
        class ids); ``info`` replaces the split's info when given."""
        labels = np.asarray(labels)
        if len(labels) != len(self):
            raise ValueError(f"split {self.name!r} has {len(self)} examples; "
                             f"got {len(labels)} labels.")
        return Split(name or self.name, labels, self._load_image, self.names,
                     channels=self.channels, image_shape=self.image_shape,
                     info=self.info if info is None else info,
                     may_fail=self.may_fail)


def remap_labels(labels: TensorLike) -> Tuple[np.ndarray, np.ndarray]:
    """Class ids -> contiguous 0..C-1 (sorted), and the original ids.

    Returns ``(new_labels int32, classes)`` with ``classes[new] == old``.
    """
    classes, new = np.unique(np.asarray(labels), return_inverse=True)
    return new.astype(np.int32), classes


@dataclasses.dataclass
class RetrievalData:
    """A benchmark or task: its splits and what a trainer needs to know.

    ``train`` is always present. Class-disjoint benchmarks set ``test``
    (each test image queries the rest of the test set); In-Shop sets
    ``query`` and ``gallery`` instead. Labels are contiguous 0..C-1 within
    each split for class benchmarks (``num_train_classes`` = C of train;
    ``label_type`` "class", or "glyph" for class labels that train with the
    glyph transforms), and label arrays for continuous tasks (``label_type``
    "pose", "layout", "caption"; ``num_train_classes`` None).
    """

    name: str
    train: Split
    test: Optional[Split] = None
    query: Optional[Split] = None
    gallery: Optional[Split] = None
    num_train_classes: Optional[int] = None
    image_shape: Optional[tuple] = None
    label_type: str = "class"
    info: dict = dataclasses.field(default_factory=dict)

    def splits(self) -> Dict[str, Split]:
        """``{name: Split}`` of the splits that are present."""
        return {k: getattr(self, k) for k in
                ("train", "test", "query", "gallery")
                if getattr(self, k) is not None}

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={len(v)}" for k, v in self.splits().items())
        return (f"RetrievalData({self.name!r}, {parts}, "
                f"num_train_classes={self.num_train_classes}, "
                f"image_shape={self.image_shape}, "
                f"label_type={self.label_type!r})")


# -- pipelines ---------------------------------------------------------------

def _grey_to_rgb(x):
    """[..., 1] -> [..., 3] (the grey value in every channel); RGB as it is,
    also when the channel count is only known at run time."""
    channels = x.shape[-1]
    if channels == 1:
        return tf.repeat(x, 3, axis=-1)
    if channels is not None:
        return x
    return tf.cond(tf.equal(tf.shape(x)[-1], 1), lambda: tf.repeat(x, 3, axis=-1),
                   lambda: x)


def _apply(transform, normalize):
    """``(image, label) -> (transform(image), normalised, label)``. A named
    normalisation of an RGB backbone (every name but "identity") gets grey
    images as RGB, in the training and the evaluation pipeline alike."""
    from keras_dml.data.augment import get_normalization
    norm = get_normalization(normalize) if normalize is not None else None
    needs_rgb = isinstance(normalize, str) and normalize != "identity"

    def fn(image, label):
        x = transform(image) if transform is not None else image
        if needs_rgb:
            x = _grey_to_rgb(x)
        x = norm(x) if norm is not None else tf.cast(x, tf.float32)
        return x, label

    return fn


def _sampler_indices(sampler, batch_size, n):
    """Flat index stream from a batch sampler.

    ``sampler``: an object of ``keras_dml.data.samplers`` (its
    ``as_dataset()`` gives int64 index batches and each iteration is a new
    epoch), or any iterable whose iteration yields one index batch at a time.
    """
    sampler_batch = getattr(sampler, "batch_size", None)
    if sampler_batch is not None and int(sampler_batch) != batch_size:
        raise ValueError(f"the sampler makes batches of {sampler_batch}; "
                         f"make_train_pipeline was given batch_size="
                         f"{batch_size}.")
    if hasattr(sampler, "as_dataset"):
        ds = sampler.as_dataset()
    else:
        def gen():
            for batch in sampler:
                batch = np.asarray(batch, dtype=np.int64).reshape(-1)
                if len(batch) != batch_size:
                    raise ValueError(
                        f"the sampler yielded a batch of {len(batch)} "
                        f"indices; make_train_pipeline was given "
                        f"batch_size={batch_size}.")
                yield batch

        ds = tf.data.Dataset.from_generator(
            gen, output_signature=tf.TensorSpec([batch_size], tf.int64))

    def check(batch):
        batch = tf.cast(batch, tf.int64)
        ok = tf.logical_and(tf.reduce_all(batch >= 0),
                            tf.reduce_all(batch < n))
        assertion = tf.debugging.Assert(
            ok, [f"the sampler yielded indices outside [0, {n})"])
        with tf.control_dependencies([assertion]):
            return tf.identity(batch)

    return ds.map(check).unbatch()


def make_train_pipeline(source: Union[Split, tf.data.Dataset], batch_size: int,
                        augment: Optional[ImageFn] = None, sampler: Optional[Iterable[Any]] = None,
                        cache: Union[bool, str] = False,
                        normalize: Optional[Union[str, ImageFn]] = None, shuffle: bool = True,
                        shuffle_buffer: Optional[int] = None, seed: Optional[int] = None,
                        drop_remainder: bool = True, on_corrupt: str = "raise"
                        ) -> tf.data.Dataset:
    """Training batches ``(float32 images [B, h, w, C], labels [B, ...])``.

    Args:
      source: a :class:`Split` (preferred: shuffles indices before decoding)
        or a ``tf.data.Dataset`` of ``(image, label)``.
      batch_size: examples per batch.
      augment: per-image transform, e.g. ``augment.train_transform(224)``;
        None keeps the images (they must then share one shape).
      sampler: a batch sampler (an iterable whose iteration yields one
        1-D array of ``batch_size`` indices into ``source`` per batch, e.g.
        the M-per-class sampler of ``keras_dml.data.samplers``); it replaces
        shuffling and is iterated afresh every epoch. Needs a Split.
      cache: False, True (cache the decoded, un-augmented images in memory)
        or a file path prefix (cache on disk). Not with a sampler.
      normalize: backbone normalisation applied after augmentation (a name
        of ``keras_dml.backbones.preprocessing`` or a callable); None leaves
        float32 values in [0, 255] (normalise inside the model instead). A
        name other than "identity" is an RGB backbone's: grey images are
        repeated to 3 channels first (as ``make_eval_pipeline`` does).
      shuffle, shuffle_buffer, seed: index shuffling, reshuffled every epoch
        (buffer = whole split for a Split, 10,000 for a Dataset by default).
      drop_remainder: drop the last incomplete batch (True for training, as
        the authors' ``drop_last=True``).
      on_corrupt: "raise" or "skip" (see the module docstring).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    _check_on_corrupt(on_corrupt)
    fn = _apply(augment, normalize)
    if isinstance(source, Split):
        if sampler is not None:
            if cache:
                raise ValueError(
                    "cache is not supported together with a sampler (the "
                    "sampler needs random access by index); use cache=False.")
            ds = source.load(_sampler_indices(sampler, batch_size, len(source)),
                             on_corrupt)
        elif cache:
            ds = source.dataset(on_corrupt).cache(
                "" if cache is True else str(cache))
            if shuffle:
                ds = ds.shuffle(shuffle_buffer or len(source), seed=seed,
                                reshuffle_each_iteration=True)
        else:
            idx = tf.data.Dataset.range(len(source))
            if shuffle:
                idx = idx.shuffle(shuffle_buffer or len(source), seed=seed,
                                  reshuffle_each_iteration=True)
            ds = source.load(idx, on_corrupt)
        if augment is None and not source.fixed_shape:
            raise ValueError(
                f"split {source.name!r} has images of varying size "
                f"{source.image_shape}: pass an augment transform that "
                "outputs a fixed size (e.g. augment.train_transform(224)).")
    elif isinstance(source, tf.data.Dataset):
        if sampler is not None:
            raise ValueError("a sampler needs a Split (random access by "
                             "index), not a tf.data.Dataset.")
        ds = source
        if cache:
            ds = ds.cache("" if cache is True else str(cache))
        if shuffle:
            ds = ds.shuffle(shuffle_buffer or 10_000, seed=seed,
                            reshuffle_each_iteration=True)
    else:
        raise TypeError("source must be a keras_dml.data.Split or a "
                        f"tf.data.Dataset; got {type(source).__name__}.")
    ds = ds.map(fn, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder,
                  num_parallel_calls=AUTOTUNE)
    # Declare the number of batches (Keras then knows the steps per epoch)
    # where it is certain: no example can be skipped.
    steps = None
    if isinstance(source, Split) and on_corrupt == "raise":
        if sampler is not None:
            steps = len(sampler) if isinstance(sampler, Sized) else None
        elif drop_remainder:
            steps = len(source) // batch_size
        else:
            steps = -(-len(source) // batch_size)
    if steps is not None:
        ds = ds.apply(tf.data.experimental.assert_cardinality(steps))
    return ds.prefetch(AUTOTUNE)


def make_eval_pipeline(source: Union[Split, tf.data.Dataset], batch_size: int,
                       transform: Optional[ImageFn] = None,
                       normalize: Optional[Union[str, ImageFn]] = None,
                       cache: Union[bool, str] = False, on_corrupt: str = "raise"
                       ) -> tf.data.Dataset:
    """Evaluation batches in split order (no shuffle, last batch kept).

    ``transform`` e.g. ``augment.eval_transform(224)`` (resize 256, centre
    crop 224); other arguments as :func:`make_train_pipeline` (grey images
    become RGB for a named RGB normalisation, in both pipelines).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    _check_on_corrupt(on_corrupt)
    if isinstance(source, Split):
        if transform is None and not source.fixed_shape:
            raise ValueError(
                f"split {source.name!r} has images of varying size "
                f"{source.image_shape}: pass a transform that outputs a fixed "
                "size (e.g. augment.eval_transform(224)).")
        ds = source.dataset(on_corrupt)
    elif isinstance(source, tf.data.Dataset):
        ds = source
    else:
        raise TypeError("source must be a keras_dml.data.Split or a "
                        f"tf.data.Dataset; got {type(source).__name__}.")
    if cache:
        ds = ds.cache("" if cache is True else str(cache))
    ds = ds.map(_apply(transform, normalize), num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, num_parallel_calls=AUTOTUNE)
    if isinstance(source, Split) and on_corrupt == "raise":
        ds = ds.apply(tf.data.experimental.assert_cardinality(
            -(-len(source) // batch_size)))
    return ds.prefetch(AUTOTUNE)


class DataNotFoundError(FileNotFoundError):
    """A data set is not where the loader looked; the message says how to
    get it."""


def require_file(path: Union[str, os.PathLike], what: str, how: str) -> Union[str, os.PathLike]:
    """Raise :class:`DataNotFoundError` naming ``path`` unless it exists."""
    if not os.path.exists(path):
        raise DataNotFoundError(f"{what} not found: {path!r}. {how}")
    return path


__all__ = [
    "Split", "RetrievalData", "make_train_pipeline", "make_eval_pipeline",
    "decode_image", "remap_labels", "array_lookup", "DataNotFoundError",
    "require_file",
]
