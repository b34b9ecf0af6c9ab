"""SavedModel export for serving: images in, L2-normalised embeddings (or
their nearest neighbours in a gallery) out.

    kd.export.export_saved_model(model, "out/saved_model", image_shape=(28, 28, 1),
                                 preprocess="efficientnet_lite")

    loaded = tf.saved_model.load("out/saved_model")
    emb = loaded.signatures["serving_default"](images=uint8_batch)["embeddings"]
    emb = loaded.signatures["serving_bytes"](image_bytes=png_or_jpeg_strings)["embeddings"]

Two signatures:

* ``serving_default(images)``: uint8 ``[N, H, W, C]`` in the data set's
  native layout (``image_shape``; Fashion-MNIST ``[N, 28, 28, 1]``);
* ``serving_bytes(image_bytes)``: string ``[N]`` of encoded JPEG or PNG
  files (or one scalar string: one image, embeddings ``[1, D]``), decoded to
  C channels, resized to (H, W) if they are another size,
  then the same path as ``serving_default``. Bytes that are not a JPEG or a
  PNG (or are truncated) fail with an ``InvalidArgumentError`` naming the
  problem.

Preprocessing: by default the model's own. A model made by
``kd.models.build_embedder`` (or the runner) carries its normalisation and
evaluation transform, and the export applies them, so the served embeddings
equal the evaluated ones; a model that carries nothing is refused unless
``preprocess`` / ``transform`` say what to do (``preprocess="identity"``:
none). ``model_fingerprint`` (also written into ``keras_dml.json``) lets an
index say which model made it.

Both return ``{"embeddings": float32 [N, D]}``, L2-normalised. Inside, in
order: cast to float32 (values stay 0-255), grey -> RGB (or RGB -> grey) to
the model's channel count, ``tf.image.resize`` to the model's input size
(``resize_to``; bilinear, half-pixel centres, no antialiasing, skipped when
the size already matches), the backbone's normalisation (``preprocess``),
the model, L2 normalisation. Training pipelines should resize the same way
for the served embeddings to equal the evaluated ones.

The archive is written with ``keras.export.ExportArchive`` endpoints (not
``archive.track(model)``): the archive then holds exactly the variables the
two signatures read, so a ``MetricModel``'s proxies (used by the loss only)
are not exported, and Keras 3 handles the Keras-variable / tf.Variable
bookkeeping. A JSON description of the preprocessing is written to
``<path>/assets.extra/keras_dml.json``.

``export_retrieval_model(model, index, path, k=10, image_shape=...)`` builds
on the same two functions and adds the gallery of a ``kd.retrieval.Index``
and an exact top-k search: signatures ``serving_default`` / ``serving_bytes``
return ``ids``, ``scores``, ``labels`` [N, k]; ``embeddings`` /
``embeddings_bytes`` return the embeddings (see its docstring for the
gallery sizes this suits).
"""

import json
import os
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import keras

try:
    import tensorflow as tf
except ImportError as error:  # a SavedModel is a TensorFlow graph
    raise ImportError(
        "keras_dml.export writes TensorFlow SavedModels and needs TensorFlow: "
        "pip install tensorflow") from error

from keras_dml import _backend, ops
from keras_dml.backbones import preprocessing as _preprocessing
from keras_dml.retrieval.index import (
    Index,
    model_fingerprint,  # noqa: F401  (kd.export API)
)

#: ``preprocess``: a preprocessing or backbone name, or a callable on float32 0-255 images.
Preprocess = Union[str, Callable[..., Any]]
#: (H, W, C) of the served images; H and W may be None with a ``transform``.
ImageShape = Sequence[Optional[int]]

OUTPUT_KEY = "embeddings"
_RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "area", "lanczos3",
                   "lanczos5", "gaussian", "mitchellcubic")
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def require_tensorflow_backend(what: str = "SavedModel export") -> None:
    """Refuse to export a model built on another Keras backend.

    The serving functions call the model inside ``tf.function``: its
    variables and ops must be TensorFlow's. A model trained under JAX or
    PyTorch exports after loading its weights (``.weights.h5`` files are
    backend-neutral) into the same architecture in a process started with
    ``KERAS_BACKEND=tensorflow``.
    """
    if not _backend.is_tensorflow():
        raise RuntimeError(
            f"{what} traces the model with TensorFlow and needs "
            f"KERAS_BACKEND=tensorflow (this process runs {_backend.name()!r}): save "
            "the weights (model.save_weights), rebuild the model under the "
            "TensorFlow backend, load them and export from there.")


# preprocess / transform not given: use what the model carries.
_FROM_MODEL = None


def serving_defaults(model: Any, preprocess: Optional[Preprocess] = _FROM_MODEL,
                     transform: Optional[Callable[..., Any]] = _FROM_MODEL
                     ) -> Tuple[Optional[Preprocess], Optional[Callable[..., Any]]]:
    """(preprocess, transform) for serving ``model``: the arguments when
    given, else what the model carries (an ``Embedder`` made by
    ``kd.models.build_embedder`` or the runner, alone or inside a
    ``MetricModel``: its ``preprocessing`` and ``eval_transform``).

    Refuses a model that carries nothing when neither is given: the served
    embeddings would silently differ from the evaluated ones. Say
    ``preprocess="identity"`` when no preprocessing is meant.
    """
    carrier = getattr(model, "embedder", None) or model
    carried_preprocess = getattr(carrier, "preprocessing", None)
    carried_transform = getattr(carrier, "eval_transform", None)
    if not isinstance(carried_preprocess, str):
        carried_preprocess = None
    if not hasattr(carried_transform, "get_config"):
        carried_transform = None
    if preprocess is None and transform is None and carried_preprocess is None:
        raise ValueError(
            "cannot tell how this model's inputs were preprocessed (it does not carry "
            "its preprocessing: build it with kd.models.build_embedder(..., "
            "preprocessing=..., eval_transform=...)). Pass preprocess= (the backbone's "
            "normalisation, e.g. 'efficientnet_lite', or a callable) and transform= "
            "(the evaluation transform, e.g. kd.data.eval_transform(224); omit it for "
            "a plain resize), or preprocess='identity' if no preprocessing is meant.")
    return (carried_preprocess if preprocess is None else preprocess,
            carried_transform if transform is None else transform)


def _resolve_preprocess(preprocess):
    """(callable, name) from a preprocessing name, backbone name or callable."""
    if callable(preprocess):
        return preprocess, getattr(preprocess, "__name__", "callable")
    if preprocess is None:
        return _preprocessing.identity, "identity"
    if preprocess in _preprocessing.PREPROCESSING:
        return _preprocessing.PREPROCESSING[preprocess], preprocess
    from keras_dml import backbones  # backbone names map to their preprocessing
    try:
        name = backbones.preprocessing_name(preprocess)
    except ValueError:
        raise ValueError(
            f"unknown preprocess {preprocess!r}: give a callable, a "
            f"preprocessing name {sorted(_preprocessing.PREPROCESSING)} or a "
            f"backbone name {backbones.available()}.") from None
    return _preprocessing.PREPROCESSING[name], name


def _model_input_shape(model):
    """(h, w, c) the model takes, with None for unknown dims, or None."""
    shape = None
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        shape = None
    if isinstance(shape, list):
        if len(shape) != 1:
            raise ValueError("export_saved_model needs a single-input model.")
        shape = shape[0]
    if shape is None:
        for attr in ("embedder", "backbone"):
            sub = getattr(model, attr, None)
            if isinstance(sub, keras.Model):
                return _model_input_shape(sub)
        return None
    shape = tuple(shape)
    if len(shape) != 4:
        raise ValueError(
            f"the model must take images [N, H, W, C]; its input shape is {shape}.")
    return shape[1:]


def _check_image_shape(image_shape, allow_any_size=False):
    """(H, W, C) with C in (1, 3); H, W may be None with ``allow_any_size``."""
    image_shape = tuple(None if d is None else int(d) for d in image_shape)
    sizes_ok = all((d is None and allow_any_size) or (d is not None and d >= 1)
                   for d in image_shape[:2]) if len(image_shape) == 3 else False
    if not sizes_ok or image_shape[-1] not in (1, 3):
        raise ValueError(
            "image_shape must be (H, W, C) with C = 1 (grey) or 3 (RGB)"
            + (" (H, W may be None with a transform)" if allow_any_size else "")
            + f"; got {image_shape}.")
    return image_shape


def _convert_channels(images, channels):
    have = images.shape[-1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(images)
    if have == 3 and channels == 1:
        return tf.image.rgb_to_grayscale(images)
    raise ValueError(f"cannot convert {have}-channel images to {channels} channels.")


def _serving_functions(model, image_shape, preprocess, resize_to, resize_method,
                       channels, transform):
    """(serving_default(images), serving_bytes(image_bytes), their input
    specs, a JSON description): the two image -> {"embeddings"} functions
    that every exported SavedModel is built on (arguments as in
    ``export_saved_model``)."""
    image_shape = _check_image_shape(image_shape, allow_any_size=transform is not None)
    height, width, image_channels = image_shape
    preprocess_fn, preprocess_name = _resolve_preprocess(preprocess)
    if resize_method not in _RESIZE_METHODS:
        raise ValueError(
            f"resize_method must be one of {_RESIZE_METHODS}; got {resize_method!r}.")
    model_shape = _model_input_shape(model) or (None, None, None)
    if channels is None:
        channels = model_shape[2]
    if channels is None:
        raise ValueError(
            "the model's input channel count is unknown; pass channels=1 or 3.")
    channels = int(channels)
    if channels not in (1, 3):
        raise ValueError(f"models taking {channels} channels cannot be served "
                         "from grey or RGB images.")
    if resize_to is None:
        resize_to = (model_shape[0] or height, model_shape[1] or width)
    if None in resize_to:
        raise ValueError("images of varying size need resize_to (or a model with a "
                         "static input size).")
    resize_to = tuple(int(d) for d in resize_to)
    if len(resize_to) != 2 or min(resize_to) < 1:
        raise ValueError(f"resize_to must be (h, w); got {resize_to}.")
    for want, have in zip(model_shape[:2], resize_to):
        if want is not None and want != have:
            raise ValueError(
                f"resize_to={resize_to} does not match the model's input size "
                f"{model_shape[:2]}.")

    def at_model_size(image):
        """One decoded float image -> the model's input size."""
        if transform is not None:
            image = tf.cast(transform(image), tf.float32)
        elif resize_to != (height, width):
            image = tf.image.resize(image, resize_to, method=resize_method)
        return tf.ensure_shape(image, (*resize_to, None))

    def embed_resized(images):
        """Images at the model's size -> {"embeddings": l2n(model(...))}."""
        x = tf.cast(preprocess_fn(_convert_channels(images, channels)), tf.float32)
        embeddings = model(x, training=False)
        if isinstance(embeddings, (dict, list, tuple)):
            raise ValueError(
                "the model must return one embeddings tensor [N, D] from call(); "
                f"got {type(embeddings).__name__}.")
        embeddings = tf.cast(embeddings, tf.float32)
        return {OUTPUT_KEY: ops.l2_normalize(embeddings, axis=-1)}

    def embed(images_float):
        if transform is None:   # one batched resize
            x = images_float
            if resize_to != (height, width):
                x = tf.image.resize(x, resize_to, method=resize_method)
        else:                   # the eval transform works image by image
            x = tf.map_fn(at_model_size, images_float,
                          fn_output_signature=tf.TensorSpec((*resize_to, None), tf.float32))
        return embed_resized(x)

    # One eager call builds an unbuilt model and surfaces shape errors here,
    # not deep inside tracing.
    probe = embed(tf.zeros((1, height or resize_to[0], width or resize_to[1],
                            image_channels), tf.float32))
    if probe[OUTPUT_KEY].shape.rank != 2:
        raise ValueError(
            "the model must return embeddings of shape [N, D]; got "
            f"{probe[OUTPUT_KEY].shape}.")

    def serving_default(images):
        return embed(tf.cast(images, tf.float32))

    def decode_one(data):
        image = tf.io.decode_image(data, channels=image_channels,
                                   expand_animations=False)
        image = tf.ensure_shape(tf.cast(image, tf.float32), (None, None, image_channels))
        if transform is not None:
            return at_model_size(image)
        # Bytes of another size than the native one: to (H, W) first, then
        # the same path as serving_default.
        size = tf.shape(image)[:2]
        same = tf.reduce_all(tf.equal(size, [height, width]))
        image = tf.cond(
            same, lambda: image,
            lambda: tf.image.resize(image, (height, width), method=resize_method))
        return at_model_size(tf.ensure_shape(image, (height, width, image_channels)))

    def serving_bytes(image_bytes):
        # One image (a scalar string) or a batch [N]: a scalar becomes [1].
        image_bytes = tf.reshape(image_bytes, [-1])
        jpeg = tf.equal(tf.strings.substr(image_bytes, 0, len(_JPEG_MAGIC)),
                        _JPEG_MAGIC)
        png = tf.equal(tf.strings.substr(image_bytes, 0, len(_PNG_MAGIC)),
                       _PNG_MAGIC)
        ok = tf.logical_or(jpeg, png)
        bad = tf.cast(tf.where(tf.logical_not(ok)), tf.int32)
        check = tf.debugging.Assert(
            tf.reduce_all(ok),
            ["serving_bytes: these inputs are not JPEG or PNG files (corrupt "
             "or empty bytes?); indices:", bad[:, 0]], summarize=20)
        with tf.control_dependencies([check]):
            images = tf.map_fn(
                decode_one, image_bytes,
                fn_output_signature=tf.TensorSpec((*resize_to, None), tf.float32))
        return embed_resized(images)

    specs = (tf.TensorSpec((None, height, width, image_channels), tf.uint8,
                           name="images"),
             tf.TensorSpec(None, tf.string, name="image_bytes"))
    info = {"image_shape": list(image_shape), "channels": channels,
            "transform": None if transform is None else repr(transform),
            "model_fingerprint": model_fingerprint(model),
            "resize_to": list(resize_to), "resize_method": resize_method,
            "preprocess": preprocess_name, "output_key": OUTPUT_KEY}
    return serving_default, serving_bytes, specs, info


def export_saved_model(model: Any, path: Union[str, os.PathLike], image_shape: ImageShape,
                       preprocess: Optional[Preprocess] = None,
                       resize_to: Optional[Tuple[int, int]] = None,
                       resize_method: str = "bilinear", channels: Optional[int] = None,
                       transform: Optional[Callable[..., Any]] = None) -> str:
    """Write a SavedModel that maps raw images to L2-normalised embeddings.

    Needs the TensorFlow Keras backend (see ``require_tensorflow_backend``).

    Args:
      model: a Keras model mapping preprocessed images [N, h, w, c] to
        embeddings [N, D] (e.g. ``kd.models.MetricModel``, whose ``call``
        gives embeddings without proxies). Called with ``training=False``.
      path: output directory.
      image_shape: (H, W, C) of the uint8 images the serving_default
        signature takes, the data set's native layout (C = 1 or 3).
      preprocess: the backbone's normalisation: a name from
        ``kd.backbones.preprocessing.PREPROCESSING`` (e.g.
        "efficientnet_lite", "identity": none), a backbone name (e.g.
        "bn_inception"), or a callable on float32 0-255 images. None: the
        model's own (see ``serving_defaults``); a model that carries none
        is refused unless ``preprocess`` or ``transform`` is given.
      resize_to: (h, w) the images are resized to before ``preprocess``;
        default the model's static input size, else no resize.
      resize_method: ``tf.image.resize`` method.
      channels: channel count the model takes; default from the model's
        input shape (needed only for models without one).
      transform: the evaluation transform of the training code (e.g.
        ``kd.data.eval_transform(224)``: shorter side to 256, centre crop
        224), a callable on one float32 0-255 image [H, W, C] returning
        [h, w, c] at the model's input size. When given it replaces the
        plain resize (and ``image_shape`` may have None for H and W, for
        data sets of varying image sizes), so served embeddings equal the
        evaluated ones. None: the model's own (see ``serving_defaults``),
        else a plain resize.
    Returns:
      ``path``.
    """
    require_tensorflow_backend()
    preprocess, transform = serving_defaults(model, preprocess, transform)
    serving_default, serving_bytes, specs, info = _serving_functions(
        model, image_shape, preprocess, resize_to, resize_method, channels,
        transform)
    archive = keras.export.ExportArchive()
    archive.add_endpoint("serving_default", serving_default,
                         input_signature=[specs[0]])
    archive.add_endpoint("serving_bytes", serving_bytes,
                         input_signature=[specs[1]])
    path = os.fspath(path)
    archive.write_out(path, verbose=False)
    _write_info(path, dict(info, signatures=["serving_default", "serving_bytes"]))
    return path


def _write_info(path, info):
    extra = os.path.join(path, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    with open(os.path.join(extra, "keras_dml.json"), "w") as f:
        json.dump(info, f, indent=2)


RETRIEVAL_OUTPUTS = ("ids", "scores", "labels")
# Beyond this many gallery bytes export_retrieval_model warns (see its doc).
RETRIEVAL_GALLERY_WARN_BYTES = 1 << 30


class _GalleryModule(tf.Module):
    """The gallery inside the SavedModel, as variables (checkpoint shards,
    not graph constants, so no 2 GB GraphDef limit): the distinct prepared
    rows, their bias, the row of each item, the scale (search.Gallery's
    parts), and each item's id and label."""

    def __init__(self, gallery, ids, labels):
        super().__init__(name="retrieval_gallery")
        rows, bias, inverse, scale = gallery.parts
        self.rows = tf.Variable(rows, trainable=False, name="rows")
        self.bias = tf.Variable(bias, trainable=False, name="bias")
        self.inverse = tf.Variable(inverse, trainable=False, name="inverse")
        self.scale = tf.Variable(scale, trainable=False, name="scale")
        self.ids = tf.Variable(ids, trainable=False, name="ids")
        self.labels = tf.Variable(labels, trainable=False, name="labels")


def export_retrieval_model(model: Any, index: Index, path: Union[str, os.PathLike],
                           k: int = 10, image_shape: Optional[ImageShape] = None,
                           preprocess: Optional[Preprocess] = None,
                           resize_to: Optional[Tuple[int, int]] = None,
                           resize_method: str = "bilinear", channels: Optional[int] = None,
                           transform: Optional[Callable[..., Any]] = None,
                           memory_budget: int = 256 * 1024 ** 2) -> str:
    """Write one SavedModel that embeds images and returns their k nearest
    neighbours in ``index``'s gallery, held inside it. Needs the TensorFlow
    Keras backend (see ``require_tensorflow_backend``).

        loaded = tf.saved_model.load(path)
        out = loaded.signatures["serving_default"](images=uint8_batch)
        out["ids"], out["scores"], out["labels"]            # [N, k]
        out = loaded.signatures["serving_bytes"](image_bytes=jpeg_or_png_strings)
        loaded.signatures["embeddings"](images=...)["embeddings"]
        loaded.signatures["embeddings_bytes"](image_bytes=...)["embeddings"]

    The image signatures are ``export_saved_model``'s (same decoding,
    resizing, preprocessing, L2 normalisation). The search is
    ``kd.search``'s exact engine in plain TF ops (matmul, gather,
    top-k; no custom op, so TF Serving loads it as it is), over chunks of
    queries of at most ``memory_budget`` bytes of scores. ``ids``, ``scores``
    and ``labels`` equal ``index.search(embeddings, k)`` of an exact index
    (a faiss index's vectors are exported and searched exactly): ids int64,
    scores float32 (cosine similarity, or ``-|q - g|^2`` for a euclidean
    index), labels int64 (-1: none), ties by insertion order.

    Size: the gallery costs N * D * 4 bytes in the SavedModel and in memory,
    and every query reads all of it: about 0.5 ms per 10^4 items of 128-d
    for a single query on a CPU core, batches amortise it. Up to about 10^5
    to 10^6 items (50-500 MB at 128-d) this one artefact is the simplest
    thing to serve; above 1 GiB of gallery this function warns. Beyond that,
    or when single-query latency matters at 10^6+ items, serve the
    embedding model alone (``export_saved_model``) and search a faiss index
    beside it (``kd.retrieval.Index(dim, backend="faiss",
    faiss_factory="HNSW32")``, saved with ``Index.save``).

    Args:
        model, image_shape, preprocess, resize_to, resize_method, channels,
            transform: as in ``export_saved_model``.
        index: a non-empty ``kd.retrieval.Index`` of the model's embeddings.
        path: output directory.
        k: neighbours per query, 1 <= k <= len(index), fixed in the
            signatures.
    Returns:
        ``path``.
    """
    require_tensorflow_backend()
    from keras_dml import search

    if image_shape is None:
        raise ValueError("export_retrieval_model needs image_shape=(H, W, C).")
    if len(index) == 0:
        raise ValueError("the index is empty: nothing to serve.")
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= len(index):
        raise ValueError(f"k must be an integer in [1, {len(index)}] (the "
                         f"index size); got {k!r}.")
    k = int(k)
    preprocess, transform = serving_defaults(model, preprocess, transform)
    embed_default, embed_bytes, specs, info = _serving_functions(
        model, image_shape, preprocess, resize_to, resize_method, channels,
        transform)
    probe = embed_default(tf.zeros([1, *specs[0].shape[1:]], tf.uint8))
    dim = int(probe[OUTPUT_KEY].shape[-1])
    if dim != index.dim:
        raise ValueError(f"the model's embeddings have dimension {dim}, the "
                         f"index has {index.dim}.")
    nbytes = index.embeddings.nbytes
    if nbytes > RETRIEVAL_GALLERY_WARN_BYTES:
        import warnings
        warnings.warn(
            f"export_retrieval_model: a {nbytes / 2 ** 30:.1f} GiB gallery in "
            "a SavedModel; every query scans all of it. Consider a faiss "
            "index beside export_saved_model's embedding model.", stacklevel=2)

    gallery = search.Gallery(index.embeddings, index.metric)
    module = _GalleryModule(gallery, index.ids, index.labels)
    chunk = search.auto_chunk_size(1 << 30, gallery.size, k,
                                   memory_budget=memory_budget)
    block = search.block_size(gallery.size, k)
    euclidean = index.metric == "euclidean"

    def neighbours(embeddings):
        q = embeddings[OUTPUT_KEY]
        if not euclidean:     # the served embeddings are L2-normalised;
            q = ops.l2_normalize(q)   # normalise as Gallery.prepare_queries does
        n = tf.shape(q)[0]
        steps = (n + chunk - 1) // chunk

        def body(i, values, indices):
            qc = q[i * chunk:(i + 1) * chunk]
            s = search.scores(qc, module.rows, module.bias, module.inverse,
                              module.scale, tf.fill([tf.shape(qc)[0]], -1))
            v, j = search.top_k_blocked(s, k, block)
            if euclidean:
                v = v - tf.reduce_sum(tf.square(qc), axis=1, keepdims=True)
            return i + 1, values.write(i, v), indices.write(i, j)

        _, values, indices = tf.while_loop(
            lambda i, *_: i < steps, body,
            (tf.constant(0),
             tf.TensorArray(tf.float32, size=steps, infer_shape=False,
                            element_shape=tf.TensorShape([None, k])),
             tf.TensorArray(tf.int32, size=steps, infer_shape=False,
                            element_shape=tf.TensorShape([None, k]))))
        scores = tf.reshape(values.concat(), [-1, k])
        positions = tf.reshape(indices.concat(), [-1, k])
        return {"ids": tf.gather(module.ids, positions),
                "scores": scores,
                "labels": tf.gather(module.labels, positions)}

    def serving_default(images):
        return neighbours(embed_default(images))

    def serving_bytes(image_bytes):
        return neighbours(embed_bytes(image_bytes))

    archive = keras.export.ExportArchive()
    archive.track(module)
    archive.add_endpoint("serving_default", serving_default,
                         input_signature=[specs[0]])
    archive.add_endpoint("serving_bytes", serving_bytes,
                         input_signature=[specs[1]])
    archive.add_endpoint("embeddings", embed_default, input_signature=[specs[0]])
    archive.add_endpoint("embeddings_bytes", embed_bytes,
                         input_signature=[specs[1]])
    path = os.fspath(path)
    archive.write_out(path, verbose=False)
    _write_info(path, dict(
        info, signatures=["serving_default", "serving_bytes", "embeddings",
                          "embeddings_bytes"],
        retrieval={"k": k, "metric": index.metric, "size": len(index),
                   "dim": index.dim, "outputs": list(RETRIEVAL_OUTPUTS),
                   "chunk_rows": chunk}))
    return path
