"""CUB-200-2011, Cars-196 and Stanford Online Products through TFDS.

Class-disjoint splits exactly as the papers (and the Proxy Anchor authors'
``code/dataset/{cub,cars,SOP}.py``):

===========  ======================  ============================  ==============
benchmark    TFDS builder            train                         test
===========  ======================  ============================  ==============
``cub200``   ``caltech_birds2011``   classes 1-100 (ids 0-99) of   classes 101-200
                                     both TFDS splits pooled       (ids 100-199)
``cars196``  ``cars196``             classes 1-98 (ids 0-97),      classes 99-196
                                     both TFDS splits pooled       (ids 98-195)
``sop``      ``stanford_online_      TFDS ``train`` (Ebay_train,   TFDS ``test``
             products``              ``class_id`` 0-11317)         (11318-22633)
===========  ======================  ============================  ==============

TFDS's own train/test splits of CUB and Cars are the classification splits
(every class in both); the metric-learning protocol ignores them and splits
by class, hence the pooling. Labels are remapped per split to contiguous
0..C-1 by subtracting the first class id of the split's range (TFDS ids are
the official class number minus one). SOP's label is TFDS's ``class_id``
(``super_class_id`` is the 12 product categories, not the retrieval class).

Data: pass ``data_dir`` where the TFDS data were prepared (``tfds build
caltech_birds2011 --data_dir=DIR`` on a machine with internet; Cars-196 and
SOP may need their archives placed in TFDS's manual directory, see the TFDS
catalogue). ``download=False`` (default) never touches the network and
raises :class:`~keras_dml.data.core.DataNotFoundError` saying this when the
data are missing; ``download=True`` lets TFDS download and prepare.

Memory: the encoded (JPEG/PNG) bytes of the selected examples are read once
into memory (CUB ~1.1 GB, Cars ~1.9 GB, SOP ~2.9 GB in total) so that
images can be fetched by index (shuffling before decoding, class-balanced
samplers); images are decoded on the fly in ``tf.data``.
"""

import logging
from typing import Any, Dict, List, Optional

import numpy as np

from keras_dml.data.core import DataNotFoundError, RetrievalData, Split

log = logging.getLogger(__name__)

# name -> (TFDS builder, label feature, name feature, train ids, test ids,
#          TFDS split(s) for train, TFDS split(s) for test)
BENCHMARKS: Dict[str, Dict[str, Any]] = {
    "cub200": dict(builder="caltech_birds2011", label="label",
                   key="image/filename", train=(0, 100), test=(100, 200),
                   train_splits=("train", "test"),
                   test_splits=("train", "test"), recall_ks=(1, 2, 4, 8)),
    "cars196": dict(builder="cars196", label="label", key="id",
                    train=(0, 98), test=(98, 196),
                    train_splits=("train", "test"),
                    test_splits=("train", "test"), recall_ks=(1, 2, 4, 8)),
    "sop": dict(builder="stanford_online_products", label="class_id",
                key=None, train=(0, 11318), test=(11318, 22634),
                train_splits=("train",), test_splits=("test",),
                recall_ks=(1, 10, 100, 1000)),
}


def _how_to_prepare(builder_name, data_dir):
    where = f"--data_dir={data_dir}" if data_dir else "(default ~/tensorflow_datasets)"
    return (
        f"Prepare it once on a machine with internet: `tfds build "
        f"{builder_name} {where}` (or `tfds.builder('{builder_name}', "
        f"data_dir=...).download_and_prepare()`), copy the prepared folder "
        f"here and pass data_dir=<that folder>; or call this loader with "
        f"download=True to let TFDS download and prepare it now. Some "
        f"archives must be downloaded by hand into <data_dir>/downloads/"
        f"manual (see https://www.tensorflow.org/datasets/catalog/"
        f"{builder_name}).")


def _read_tfds_split(builder, split, label_key, name_key, data_dir):
    """(encoded image bytes, labels, names) of one TFDS split, no decoding."""
    import tensorflow_datasets as tfds
    features = {"image": True, label_key: True}
    if name_key:
        features[name_key] = True
    decoders = tfds.decode.PartialDecoding(
        features, decoders={"image": tfds.decode.SkipDecoding()})
    try:
        ds = builder.as_dataset(split=split, decoders=decoders,
                                shuffle_files=False)
    except AssertionError as err:  # TFDS: "could not find data in ..."
        raise DataNotFoundError(
            f"TFDS data set {builder.name!r} is not prepared in "
            f"{data_dir or '~/tensorflow_datasets'} ({err}). "
            + _how_to_prepare(builder.name, data_dir)) from None
    blobs, labels, names = [], [], []
    for batch in ds.batch(512).as_numpy_iterator():
        blobs.extend(batch["image"])
        labels.append(batch[label_key])
        if name_key:
            names.extend(n.decode("utf-8", "replace") for n in batch[name_key])
    labels = np.concatenate(labels) if labels else np.zeros([0], np.int64)
    if not name_key:
        names = [f"{builder.name}/{split}[{i}]" for i in range(len(labels))]
    else:
        names = [f"{builder.name}/{split}[{i}] {n}"
                 for i, n in enumerate(names)]
    return blobs, labels.astype(np.int64), names


def load_tfds_benchmark(name: str, data_dir: Optional[str] = None, download: bool = False,
                        builder_kwargs: Optional[Dict[str, Any]] = None) -> RetrievalData:
    """One of ``"cub200"``, ``"cars196"``, ``"sop"`` as :class:`RetrievalData`.

    ``train`` / ``test`` splits yield ``(uint8 [H, W, 3], int32 label)`` with
    labels 0..C-1 within each split; ``info["class_offset"]`` holds the
    subtracted first class id (original TFDS id = label + offset).
    """
    import tensorflow_datasets as tfds
    if name not in BENCHMARKS:
        raise ValueError(f"unknown TFDS benchmark {name!r}; known: "
                         f"{sorted(BENCHMARKS)}.")
    spec = BENCHMARKS[name]
    builder = tfds.builder(spec["builder"], data_dir=data_dir,
                           **(builder_kwargs or {}))
    if download:
        builder.download_and_prepare()

    cache: Dict[str, Any] = {}

    def read(split):
        if split not in cache:
            cache[split] = _read_tfds_split(builder, split, spec["label"],
                                            spec["key"], data_dir)
        return cache[split]

    splits = {}
    for part in ("train", "test"):
        lo, hi = spec[part]
        blobs: List[bytes] = []
        names: List[str] = []
        label_parts: List[np.ndarray] = []
        dropped = 0
        for tfds_split in spec[f"{part}_splits"]:
            b, y, n = read(tfds_split)
            outside = (y < 0) | (y >= BENCHMARKS[name]["test"][1])
            if outside.any():
                raise ValueError(
                    f"{spec['builder']}/{tfds_split}: class ids outside "
                    f"[0, {spec['test'][1]}) found (e.g. {y[outside][:5]}); "
                    "is this the expected TFDS version?")
            keep = np.flatnonzero((y >= lo) & (y < hi))
            dropped += len(y) - len(keep)
            blobs.extend(b[i] for i in keep)
            label_parts.append(y[keep] - lo)
            names.extend(n[i] for i in keep)
        labels = np.concatenate(label_parts).astype(np.int32)
        if len(spec[f"{part}_splits"]) == 1 and dropped:
            # SOP: the TFDS split itself is the class split; examples outside
            # its class range should not exist.
            log.warning("%s: %d examples of TFDS split %r have class ids "
                        "outside [%d, %d) and were left out.", name, dropped,
                        spec[f"{part}_splits"][0], lo, hi)
        num_present = len(np.unique(labels))
        if labels.size and num_present != hi - lo:
            log.warning("%s %s: %d of the %d classes have images.", name,
                        part, num_present, hi - lo)
        splits[part] = Split.from_encoded(
            part, blobs, labels, names, channels=3,
            info={"class_offset": lo, "num_classes": hi - lo,
                  "tfds_splits": spec[f"{part}_splits"]})
    return RetrievalData(
        name=name, train=splits["train"], test=splits["test"],
        num_train_classes=spec["train"][1] - spec["train"][0],
        image_shape=(None, None, 3), label_type="class",
        info={"tfds_builder": spec["builder"], "recall_ks": spec["recall_ks"],
              "data_dir": data_dir})


def load_cub200(data_dir: Optional[str] = None, download: bool = False) -> RetrievalData:
    """CUB-200-2011: train classes 1-100, test 101-200 (5,864 / 5,924 images
    in the real data). See :func:`load_tfds_benchmark`."""
    return load_tfds_benchmark("cub200", data_dir, download)


def load_cars196(data_dir: Optional[str] = None, download: bool = False) -> RetrievalData:
    """Cars-196: train classes 1-98, test 99-196 (8,054 / 8,131 images in
    the real data). See :func:`load_tfds_benchmark`."""
    return load_tfds_benchmark("cars196", data_dir, download)


def load_sop(data_dir: Optional[str] = None, download: bool = False) -> RetrievalData:
    """Stanford Online Products: 11,318 train / 11,316 test classes
    (59,551 / 60,502 images in the real data). See
    :func:`load_tfds_benchmark`."""
    return load_tfds_benchmark("sop", data_dir, download)


__all__ = ["BENCHMARKS", "load_tfds_benchmark", "load_cub200",
           "load_cars196", "load_sop"]
