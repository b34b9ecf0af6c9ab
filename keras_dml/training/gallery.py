"""A run's test gallery as a searchable index and as Projector points.

    kd.training.gallery.write_index("runs/demo", split, embeddings, labels)
        # -> runs/demo/index/   (kd.retrieval.Index.load reads it)
    kd.training.gallery.write_projector("runs/demo/logs", split, embeddings, labels)
        # -> runs/demo/logs/projector/  (tensorboard --logdir=runs/demo/logs)
    kd.training.gallery.images(index_dir, metadata)   # what `keras-dml search` draws

The index holds the embeddings the runner computed for the test metrics
(nothing is embedded again), the split's class labels, ids 0..N-1 (the
positions in the evaluated split) and, per item, JSON metadata saying where
its image comes from::

    {"split": "test", "index": 5123, "name": "t10k-images-idx3-ubyte.gz[5123]",
     "class": 7, "class_name": "Sneaker", "thumbnail": 123}
    {"split": "gallery", "index": 17, "name": "/data/inshop/img/...jpg",
     "path": "/data/inshop/img/...jpg", "thumbnail": 17}

``index`` is the position in the loader's split (before any
``max_test_examples`` subset), ``path`` is set when the image is a file on
disk, ``class`` / ``class_name`` when the loader knows the original class.
Images held in memory or in TFDS records have no path, so every item also
has a small thumbnail: ``thumbnails.npy`` (uint8 [N, t, t, C], t <= 64, at
most 256 MiB in all) inside the index directory, row ``thumbnail``. That
file is not part of the index's manifest: a later ``Index.save`` into the
same directory drops it, and ``images`` then falls back to the paths (or a
grey tile).
"""

import os

import numpy as np

from keras_dml.evaluation import projector
from keras_dml.training.rundir import RunPaths

THUMBNAILS_FILE = "thumbnails.npy"
PROJECTOR_RUN = "projector"
THUMBNAIL_SIZE = 64
THUMBNAIL_BUDGET = 256 * 2 ** 20


def _original_classes(split, labels):
    """(original class ids or None, class names or None) of ``labels``."""
    info, labels = split.info, np.asarray(labels, np.int64)
    classes = names = None
    if "classes" in info:
        classes = np.asarray(info["classes"])[labels].tolist()
    elif "class_offset" in info:
        classes = (labels + int(info["class_offset"])).tolist()
    elif "item_ids" in info:
        classes = np.asarray(info["item_ids"], dtype=object)[labels].tolist()
    if "class_names" in info:
        names = np.asarray(info["class_names"], dtype=object)[labels].tolist()
    return classes, names


def item_metadata(split, labels):
    """One JSON-serialisable dict per example of ``split`` (see module doc)."""
    n = len(split)
    parents = np.asarray(split.info.get("parent_indices", np.arange(n)), np.int64)
    classes, class_names = _original_classes(split, labels)
    out = []
    for i in range(n):
        name = str(split.names[i])
        m = {"split": split.name, "index": int(parents[i]), "name": name}
        if os.path.isfile(name):
            m["path"] = os.path.abspath(name)
        if classes is not None:
            c = classes[i]
            m["class"] = int(c) if isinstance(c, (int, np.integer)) else str(c)
        if class_names is not None:
            m["class_name"] = str(class_names[i])
        out.append(m)
    return out


def gallery_thumbnails(split, indices=None):
    """Thumbnails of ``split`` for the index: at most THUMBNAIL_SIZE px, no
    larger than the images themselves (Fashion-MNIST keeps its 28 x 28
    pixels), smaller for galleries that would exceed THUMBNAIL_BUDGET."""
    n = len(split) if indices is None else len(indices)
    size = projector.thumbnail_size(n, split.channels, THUMBNAIL_SIZE, THUMBNAIL_BUDGET)
    if split.fixed_shape:
        size = min(size, max(split.image_shape[:2]))
    return projector.thumbnails(split, size, indices)


def write_index(output_dir, split, embeddings, labels, thumbs=None):
    """Save ``DIR/index`` (exact cosine ``kd.retrieval.Index``) of ``split``'s
    ``embeddings`` with ``labels``, metadata and thumbnails. Returns the
    index directory."""
    from keras_dml import retrieval
    metadata = item_metadata(split, labels)
    if thumbs is None:
        thumbs = gallery_thumbnails(split)
    for row, m in enumerate(metadata):
        m["thumbnail"] = row
    emb = np.asarray(embeddings, np.float32)
    index = retrieval.Index(emb.shape[1], metric="cosine")
    index.add(emb, labels=np.asarray(labels, np.int64).reshape(-1), metadata=metadata)
    path = index.save(RunPaths(output_dir).index)
    # After the save: the atomic save replaces the whole directory.
    tmp = os.path.join(path, f".{THUMBNAILS_FILE}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(thumbs), allow_pickle=False)
    os.replace(tmp, os.path.join(path, THUMBNAILS_FILE))
    return path


def write_projector(logs_dir, split, embeddings, labels, thumbs=None, seed=0):
    """The Embedding Projector run ``logs_dir/projector`` of the gallery:
    at most ``projector.MAX_POINTS`` points, labels (and original classes,
    class names, image names) as metadata, thumbnails as the sprite.
    ``thumbs``: the index's thumbnails of the whole split, reused when given.
    Returns ``write_projector``'s paths."""
    n = len(split)
    keep = projector.sample_indices(n, projector.MAX_POINTS, seed)
    if thumbs is None:
        # Only the sampled points need thumbnails; scatter them back to N rows.
        sample = gallery_thumbnails(split, keep)
        thumbs = np.zeros((n, *sample.shape[1:]), np.uint8)
        thumbs[keep] = sample
    labels = np.asarray(labels).reshape(-1)
    classes, class_names = _original_classes(split, labels)
    columns = {"label": labels.tolist()}
    if class_names is not None:
        columns["class_name"] = class_names
    elif classes is not None:
        columns["class"] = classes
    columns["name"] = [str(x) for x in split.names]
    return projector.write_projector(
        os.path.join(os.fspath(logs_dir), PROJECTOR_RUN), embeddings, metadata=columns,
        thumbnails=thumbs, seed=seed,
        description=f"Test gallery ({split.name}): {min(n, projector.MAX_POINTS)} of {n} "
                    f"embeddings, labels and thumbnails, for the Projector tab.")


def _grey(size=64):
    return np.full((size, size, 3), 128, np.uint8)


def images(index_dir, metadata):
    """The gallery images of items with ``metadata`` (from the index), for a
    plot: the file at ``path`` when it still exists, else the row
    ``thumbnail`` of ``index_dir/thumbnails.npy``, else a grey tile.
    Returns (list of uint8 arrays, list of where each came from)."""
    from PIL import Image
    thumbs_path = os.path.join(os.fspath(index_dir), THUMBNAILS_FILE)
    thumbs = np.load(thumbs_path, mmap_mode="r") if os.path.isfile(thumbs_path) else None
    out, sources = [], []
    for m in metadata:
        m = m if isinstance(m, dict) else {}
        path, row = m.get("path"), m.get("thumbnail")
        if path and os.path.isfile(path):
            try:
                with Image.open(path) as im:
                    out.append(np.asarray(im.convert("RGB")))
                sources.append("path")
                continue
            except OSError:
                pass
        if thumbs is not None and isinstance(row, int) and 0 <= row < len(thumbs):
            out.append(np.array(thumbs[row]))
            sources.append("thumbnail")
        else:
            out.append(_grey())
            sources.append("none")
    return out, sources
