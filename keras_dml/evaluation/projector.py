"""Embeddings for TensorBoard's Embedding Projector, with image thumbnails.

    from keras_dml.evaluation import projector
    thumbs = projector.thumbnails(split, size=64)          # uint8 [N, 64, 64, C]
    projector.write_projector("runs/demo/logs/projector", embeddings,
                              metadata={"label": labels, "name": names},
                              thumbnails=thumbs)
    # tensorboard --logdir=runs/demo/logs  ->  the "Projector" tab

``write_projector`` writes one TensorBoard run directory:

* ``embeddings.ckpt-1.*`` and ``checkpoint``: a ``tf.train.Checkpoint`` of one
  ``tf.Variable`` [n, D] (the points);
* ``metadata.tsv``: one row per point (a header row when there are several
  columns, as the projector expects);
* ``sprite.png``: the thumbnails in a square grid, row-major in point order;
* ``projector_config.pbtxt``: ``projector.ProjectorConfig`` naming the tensor,
  the metadata and the sprite by paths relative to the directory (so the run
  directory can be moved or copied);
* an events file with one text summary, so that TensorBoard lists the
  directory as a run. The projector plugin also looks for checkpoints in a
  run's parent directory, so the files live in their own run (``logs/
  projector``) rather than in ``logs/`` itself: there, ``logs/train`` and
  ``logs/validation`` would each show the same tensor again without labels
  or sprite.

The projector loads every point into the browser, so at most ``max_points``
(10,000 by default) are written, a seeded random sample in the original
order; the sprite is at most ``max_sprite_size`` (8192) pixels a side, the
size browsers' WebGL textures are sure to take, so thumbnails shrink as the
points grow (82 px at 10,000 points).
"""

import math
import os

import numpy as np

MAX_POINTS = 10_000
MAX_SPRITE_SIZE = 8192
TENSOR_NAME = "embeddings"
METADATA_FILE = "metadata.tsv"
SPRITE_FILE = "sprite.png"
CONFIG_FILE = "projector_config.pbtxt"
# What a checkpointed attribute is called inside a tf.train.Checkpoint.
_VARIABLE_KEY = f"{TENSOR_NAME}/.ATTRIBUTES/VARIABLE_VALUE"


def sample_indices(n, max_points=MAX_POINTS, seed=0):
    """Sorted indices of at most ``max_points`` of ``n`` items (all of them
    when ``n <= max_points``; else a seeded uniform sample)."""
    if max_points is None or n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=int(max_points), replace=False))


def thumbnail_size(n, channels, largest=64, budget_bytes=256 * 2 ** 20, smallest=16):
    """Side of square thumbnails for ``n`` images: ``largest``, smaller when
    ``n`` of them would exceed ``budget_bytes``, never below ``smallest``."""
    fits = int(math.sqrt(budget_bytes / max(1, n * channels)))
    return int(max(smallest, min(largest, fits)))


def thumbnails(split, size, indices=None, batch_size=64):
    """uint8 [n, size, size, C] thumbnails of ``split``'s images (``indices``
    or all): each image fitted into the square with its aspect ratio kept
    (antialiased resize) and centred on white. Images already of that size
    are copied exactly."""
    import tensorflow as tf
    indices = np.arange(len(split)) if indices is None else np.asarray(indices, np.int64)
    size = int(size)

    def fit(image, label):
        del label
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = size / tf.reduce_max(shape)
        new = tf.maximum(1, tf.cast(tf.round(shape * scale), tf.int32))
        same = tf.reduce_all(tf.equal(tf.shape(image)[:2], [size, size]))
        resized = tf.cond(
            same, lambda: tf.cast(image, tf.float32),
            lambda: tf.image.resize(tf.cast(image, tf.float32), new, antialias=True))
        # Pad the inverted image with zeros = white padding of the image.
        inverted = 255.0 - tf.clip_by_value(tf.round(resized), 0.0, 255.0)
        padded = tf.image.pad_to_bounding_box(
            inverted, (size - tf.shape(inverted)[0]) // 2,
            (size - tf.shape(inverted)[1]) // 2, size, size)
        return tf.cast(255.0 - padded, tf.uint8)

    if len(indices) == 0:
        return np.zeros((0, size, size, split.channels), np.uint8)
    ds = split.load(tf.data.Dataset.from_tensor_slices(indices))
    ds = ds.map(fit, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    return np.concatenate(list(ds.as_numpy_iterator())).astype(np.uint8)


def sprite_image(images, max_size=MAX_SPRITE_SIZE):
    """(uint8 RGB sprite [S, S, 3], cell side): ``images`` [n, t, t, C]
    row-major in a ceil(sqrt(n)) x ceil(sqrt(n)) grid on white, each shrunk
    (area average) when ``n`` cells of side t would not fit in ``max_size``."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != images.shape[2] or \
            images.shape[-1] not in (1, 3) or images.dtype != np.uint8:
        raise ValueError("sprite images must be uint8 [n, t, t, 1 or 3]; got "
                         f"{images.dtype} {images.shape}.")
    n, t = images.shape[0], images.shape[1]
    if n == 0:
        raise ValueError("no images for a sprite.")
    cols = math.ceil(math.sqrt(n))
    cell = min(t, max_size // cols)
    if cell < 1:
        raise ValueError(f"{n} images cannot fit in a {max_size}-pixel sprite.")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if cell < t:
        import tensorflow as tf
        images = tf.image.resize(images, (cell, cell), method="area").numpy()
        images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    grid = np.full((cols * cell, cols * cell, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = images[i]
    return grid, cell


def _tsv_cell(value):
    # The projector splits on tabs and lines; keep every value on its cell.
    text = "" if value is None else str(value)
    return " ".join(text.replace("\t", " ").splitlines()) or " "


def write_metadata_tsv(path, columns):
    """``columns``: {name: [n values]}. One column: no header (the
    projector's rule); several: a header row."""
    names = list(columns)
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise ValueError(f"metadata columns differ in length: "
                         f"{ {k: len(v) for k, v in columns.items()} }.")
    n = lengths.pop()
    with open(path, "w", encoding="utf-8") as f:
        if len(names) > 1:
            f.write("\t".join(_tsv_cell(k) for k in names) + "\n")
        for i in range(n):
            f.write("\t".join(_tsv_cell(columns[k][i]) for k in names) + "\n")
    return path


def write_projector(logdir, embeddings, metadata=None, thumbnails=None,
                    max_points=MAX_POINTS, max_sprite_size=MAX_SPRITE_SIZE, seed=0,
                    description=None):
    """Write a TensorBoard Embedding Projector run into ``logdir``.

    Args:
      logdir: the run directory (e.g. ``DIR/logs/projector``; created).
      embeddings: float [N, D].
      metadata: optional {column: [N values]} (e.g. label, class name,
        image name), shown and searchable in the projector.
      thumbnails: optional uint8 [N, t, t, C] images, drawn as the points'
        sprites.
      max_points: at most this many points (a seeded sample, see
        ``sample_indices``); None: all.
      max_sprite_size: the sprite's largest side in pixels.
      seed: the sample's seed.
      description: the text summary that makes the directory a run.

    Returns:
      ``{"config", "checkpoint", "metadata", "sprite", "indices"}``: the
      written paths (metadata/sprite None when not given) and the indices of
      the points written.
    """
    import tensorflow as tf
    from tensorboard.plugins import projector

    emb = np.asarray(embeddings, np.float32)
    if emb.ndim != 2 or emb.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty [N, D] array; got {emb.shape}.")
    if not np.all(np.isfinite(emb)):
        raise ValueError("embeddings contain NaN or Inf.")
    n = emb.shape[0]
    for name, values in (metadata or {}).items():
        if len(values) != n:
            raise ValueError(f"metadata column {name!r} has {len(values)} values for "
                             f"{n} embeddings.")
    if thumbnails is not None and len(thumbnails) != n:
        raise ValueError(f"{len(thumbnails)} thumbnails for {n} embeddings.")
    keep = sample_indices(n, max_points, seed)
    logdir = os.fspath(logdir)
    os.makedirs(logdir, exist_ok=True)

    checkpoint = tf.train.Checkpoint(**{TENSOR_NAME: tf.Variable(emb[keep], name=TENSOR_NAME)})
    # The manager writes a relative path into the `checkpoint` file, which the
    # plugin resolves in the run directory; max_to_keep=1 drops a rerun's old one.
    manager = tf.train.CheckpointManager(checkpoint, logdir, max_to_keep=1,
                                         checkpoint_name=TENSOR_NAME + ".ckpt")
    ckpt_path = manager.save()

    config = projector.ProjectorConfig()
    info = config.embeddings.add()
    info.tensor_name = _VARIABLE_KEY
    paths = {"checkpoint": ckpt_path, "metadata": None, "sprite": None,
             "indices": keep}
    if metadata:
        paths["metadata"] = write_metadata_tsv(
            os.path.join(logdir, METADATA_FILE),
            {k: [v[i] for i in keep.tolist()] for k, v in metadata.items()})
        info.metadata_path = METADATA_FILE
    if thumbnails is not None:
        from PIL import Image
        grid, cell = sprite_image(np.asarray(thumbnails)[keep], max_sprite_size)
        paths["sprite"] = os.path.join(logdir, SPRITE_FILE)
        Image.fromarray(grid).save(paths["sprite"])
        info.sprite.image_path = SPRITE_FILE
        info.sprite.single_image_dim.extend([cell, cell])
    projector.visualize_embeddings(logdir, config)
    paths["config"] = os.path.join(logdir, CONFIG_FILE)

    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        tf.summary.text("projector", description or (
            f"{len(keep)} of {n} embeddings ({emb.shape[1]}-d) for the Projector tab."),
            step=0)
    writer.close()
    return paths
