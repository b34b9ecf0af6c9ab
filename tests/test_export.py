"""SavedModel export: both signatures, checked in a fresh process that
imports only TensorFlow, against the Keras model run on the same images."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dml as kd
from keras_dml import export

IMAGE_SHAPE = (28, 28, 1)  # Fashion-MNIST's native layout

# Runs in a new interpreter: no keras_dml, no Keras model, only the SavedModel.
FRESH_PROCESS = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
path, inputs, out = sys.argv[1:4]
loaded = tf.saved_model.load(path)
data = np.load(inputs)
files = sorted(f for f in os.listdir(os.path.dirname(inputs)) if f.startswith("img_"))
blobs = [open(os.path.join(os.path.dirname(inputs), f), "rb").read() for f in files]
default = loaded.signatures["serving_default"]
by_bytes = loaded.signatures["serving_bytes"]
result = {
    "default": default(images=tf.constant(data["images"]))["embeddings"].numpy(),
    "bytes": by_bytes(image_bytes=tf.constant(blobs))["embeddings"].numpy(),
}
np.savez(out, **result)
info = {
    "signatures": sorted(loaded.signatures.keys()),
    "outputs": {k: {n: [s.dtype.name, s.shape.as_list()]
                    for n, s in loaded.signatures[k].structured_outputs.items()}
                for k in loaded.signatures},
    "inputs": {k: {n: [s.dtype.name, s.shape.as_list() if s.shape.rank is not None else None]
                   for n, s in loaded.signatures[k].structured_input_signature[1].items()}
               for k in loaded.signatures},
    "files": files,
}
print(json.dumps(info))
"""


def _run_fresh(path, images, blobs, tmp_path):
    work = tmp_path / "fresh"
    work.mkdir()
    np.savez(work / "inputs.npz", images=images)
    for i, blob in enumerate(blobs):
        (work / f"img_{i:03d}").write_bytes(blob)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(path), str(work / "inputs.npz"),
         str(work / "out.npz")],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(work / "out.npz") as out:
        return {k: out[k] for k in out.files}, info


def _small_embedder(input_shape=(32, 32, 3), dim=16, seed=0):
    """A tiny conv net (not L2-normalising) with non-trivial BN statistics."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(dim)(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    bn = model.layers[2]
    bn.moving_mean.assign(rng.normal(0, 0.5, 8))
    bn.moving_variance.assign(rng.uniform(0.2, 3.0, 8))
    return model


def _keras_reference(model, images_float, size, preprocess):
    """The documented serving path, step by step, with the Keras model."""
    x = np.asarray(images_float, np.float32)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)  # grey -> RGB
    if x.shape[1:3] != tuple(size):
        x = tf.image.resize(x, size, method="bilinear").numpy()
    e = model(preprocess(x), training=False).numpy().astype(np.float64)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def _fashion_like_images(n, rng):
    """Grey 28x28 uint8 images with structure (blobs), not just noise."""
    yy, xx = np.mgrid[:28, :28]
    images = []
    for _ in range(n):
        cy, cx, r = rng.uniform(8, 20), rng.uniform(8, 20), rng.uniform(4, 10)
        blob = 255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        noise = rng.normal(0, 20, (28, 28))
        images.append(np.clip(blob + noise, 0, 255))
    return np.stack(images)[..., None].astype(np.uint8)


def _png(image):
    return tf.io.encode_png(image).numpy()


def _jpeg(image):
    return tf.io.encode_jpeg(image, quality=90).numpy()


def _saved_variable_shapes(path):
    ckpt = os.path.join(path, "variables", "variables")
    return sorted(tuple(shape) for name, shape in tf.train.list_variables(ckpt)
                  if name != "_CHECKPOINTABLE_OBJECT_GRAPH")


def test_signatures_match_keras_in_fresh_process(tmp_path, rng):
    model = _small_embedder()
    path = export.export_saved_model(model, tmp_path / "sm", image_shape=IMAGE_SHAPE,
                                     preprocess="efficientnet_lite")
    images = _fashion_like_images(5, rng)
    big = rng.integers(0, 256, (40, 30, 1)).astype(np.uint8)   # another size
    rgb = rng.integers(0, 256, (28, 28, 3)).astype(np.uint8)   # decoded as grey
    blobs = [_png(im) for im in images] + [_jpeg(images[0]), _png(big), _png(rgb)]
    out, info = _run_fresh(path, images, blobs, tmp_path)

    pre = kd.backbones.preprocessing.efficientnet_lite
    expected = _keras_reference(model, images, (32, 32), pre)
    np.testing.assert_allclose(out["default"], expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out["default"], axis=1), 1.0, atol=1e-6)

    # bytes: PNGs of the native size decode to the same pixels
    np.testing.assert_allclose(out["bytes"][:5], out["default"], atol=1e-6)
    # JPEG: compared with the Keras model on the decoded (lossy) pixels
    decoded = tf.io.decode_jpeg(blobs[5], channels=1).numpy()[None]
    np.testing.assert_allclose(out["bytes"][5],
                               _keras_reference(model, decoded, (32, 32), pre)[0],
                               atol=1e-5)
    # another size: resized to the native 28x28 first, then the same path
    native = tf.image.resize(big[None].astype(np.float32), (28, 28)).numpy()
    np.testing.assert_allclose(out["bytes"][6],
                               _keras_reference(model, native, (32, 32), pre)[0],
                               atol=1e-5)
    # an RGB PNG is decoded to the signature's one channel
    grey = tf.io.decode_png(blobs[7], channels=1).numpy()[None]
    np.testing.assert_allclose(out["bytes"][7],
                               _keras_reference(model, grey, (32, 32), pre)[0],
                               atol=1e-5)

    assert info["signatures"] == ["serving_bytes", "serving_default"]
    for name in info["signatures"]:
        assert info["outputs"][name] == {"embeddings": ["float32", [None, 16]]}
    assert info["inputs"]["serving_default"] == {"images": ["uint8", [None, 28, 28, 1]]}
    # Any rank: a batch [N] or one image (a scalar string).
    assert info["inputs"]["serving_bytes"] == {"image_bytes": ["string", None]}
    meta = json.loads((tmp_path / "sm" / "assets.extra" / "keras_dml.json").read_text())
    assert meta["preprocess"] == "efficientnet_lite" and meta["resize_to"] == [32, 32]


class WithProxies(keras.Model):
    """Embeds with ``embedder``; holds proxies that only a loss would use."""

    def __init__(self, embedder, num_classes):
        super().__init__()
        self.embedder = embedder
        self.proxies = kd.layers.Proxies(num_classes)
        self.proxies.build((None, embedder.output_shape[-1]))

    def call(self, inputs, training=None):
        return self.embedder(inputs, training=training)


def test_export_has_no_proxies(tmp_path, rng):
    embedder = _small_embedder(dim=12)
    model = WithProxies(embedder, num_classes=7)
    assert any(tuple(w.shape) == (7, 12) for w in model.weights)
    path = export.export_saved_model(model, tmp_path / "sm", image_shape=IMAGE_SHAPE,
                                     preprocess="efficientnet_lite")
    shapes = _saved_variable_shapes(path)
    assert (7, 12) not in shapes
    assert shapes == sorted(tuple(w.shape) for w in embedder.weights)
    loaded = tf.saved_model.load(path)
    images = _fashion_like_images(3, rng)
    got = loaded.signatures["serving_default"](images=images)["embeddings"].numpy()
    expected = _keras_reference(embedder, images, (32, 32),
                                kd.backbones.preprocessing.efficientnet_lite)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_export_metric_model_without_proxies(tmp_path, rng):
    models = kd.models
    backbone = keras.Sequential([keras.Input((32, 32, 3)),
                                 keras.layers.Conv2D(8, 3, strides=2),
                                 keras.layers.BatchNormalization(),
                                 keras.layers.ReLU()])
    embedder = models.build_embedder(backbone, embedding_dim=24,
                                     input_shape=(32, 32, 3))
    model = models.MetricModel(embedder, proxies=kd.layers.Proxies(5))
    x = np.zeros((1, 32, 32, 3), np.float32)
    model(x)
    assert any(tuple(w.shape) == (5, 24) for w in model.weights)
    path = export.export_saved_model(model, tmp_path / "sm", image_shape=IMAGE_SHAPE,
                                     preprocess="efficientnet_lite0")  # by backbone
    shapes = _saved_variable_shapes(path)
    assert (5, 24) not in shapes
    assert shapes == sorted(tuple(w.shape) for w in embedder.weights)
    images = _fashion_like_images(4, rng)
    loaded = tf.saved_model.load(path)
    got = loaded.signatures["serving_default"](images=images)["embeddings"].numpy()
    expected = _keras_reference(model, images, (32, 32),
                                kd.backbones.preprocessing.efficientnet_lite)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_bad_bytes_fail_clearly(tmp_path, rng):
    model = _small_embedder()
    path = export.export_saved_model(model, tmp_path / "sm", image_shape=IMAGE_SHAPE,
                                     preprocess="efficientnet_lite")
    serve = tf.saved_model.load(path).signatures["serving_bytes"]
    good = _png(_fashion_like_images(1, rng)[0])
    for bad in (b"definitely not an image", b"", b"GIF89a" + b"\x00" * 20):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match="not JPEG or PNG files"):
            serve(image_bytes=tf.constant([good, bad]))
    with pytest.raises(tf.errors.InvalidArgumentError):  # truncated PNG
        serve(image_bytes=tf.constant([good[: len(good) // 2]]))
    jpeg = _jpeg(_fashion_like_images(1, rng)[0])
    with pytest.raises(tf.errors.InvalidArgumentError):  # truncated JPEG
        serve(image_bytes=tf.constant([jpeg[: len(jpeg) // 3]]))
    assert serve(image_bytes=tf.constant([good]))["embeddings"].shape == (1, 16)


def test_rgb_native_size_callable_preprocess_and_dynamic_model(tmp_path, rng):
    # an RGB data set at the model's size: no resize, a callable preprocess
    model = _small_embedder(input_shape=(None, None, 3))
    path = export.export_saved_model(model, tmp_path / "sm", image_shape=(20, 24, 3),
                                     preprocess=lambda x: x / 255.0)
    images = rng.integers(0, 256, (3, 20, 24, 3)).astype(np.uint8)
    loaded = tf.saved_model.load(path)
    got = loaded.signatures["serving_default"](images=images)["embeddings"].numpy()
    expected = _keras_reference(model, images, (20, 24), lambda x: x / 255.0)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # the same dynamic-size model served at a chosen size
    path = export.export_saved_model(model, tmp_path / "sm2", image_shape=(20, 24, 3),
                                     preprocess="inception", resize_to=(40, 36))
    got = tf.saved_model.load(path).signatures["serving_default"](
        images=images)["embeddings"].numpy()
    expected = _keras_reference(model, images, (40, 36),
                                kd.backbones.preprocessing.inception)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_bad_arguments(tmp_path):
    model = _small_embedder()
    with pytest.raises(ValueError, match="C = 1 \\(grey\\) or 3"):
        export.export_saved_model(model, tmp_path / "a", image_shape=(28, 28, 2),
                                  preprocess="identity")
    with pytest.raises(ValueError, match="does not match the model's input size"):
        export.export_saved_model(model, tmp_path / "b", image_shape=IMAGE_SHAPE,
                                  resize_to=(64, 64), preprocess="identity")
    with pytest.raises(ValueError, match="unknown preprocess 'nope'"):
        export.export_saved_model(model, tmp_path / "c", image_shape=IMAGE_SHAPE,
                                  preprocess="nope")
    feature_map = keras.Sequential([keras.Input((32, 32, 3)),
                                    keras.layers.Conv2D(4, 3)])
    with pytest.raises(ValueError, match=r"embeddings of shape \[N, D\]"):
        export.export_saved_model(feature_map, tmp_path / "d",
                                  image_shape=IMAGE_SHAPE, preprocess="identity")


def test_eval_transform_inside_signatures_for_varying_sizes(tmp_path, rng):
    """With the training code's eval transform (shorter side 36, centre crop
    32), both signatures equal the Keras model on the transformed images,
    for RGB images of any size."""
    model = _small_embedder()
    transform = kd.data.eval_transform(32)
    path = export.export_saved_model(model, tmp_path / "sm", image_shape=(None, None, 3),
                                     preprocess="inception", transform=transform)
    prep = kd.backbones.preprocessing.get("inception")

    def reference(image):
        x = transform(tf.constant(image, tf.float32))[None]
        e = model(prep(x), training=False).numpy()[0].astype(np.float64)
        return e / np.linalg.norm(e)

    loaded = tf.saved_model.load(str(path))
    batch = rng.integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
    got = loaded.signatures["serving_default"](images=tf.constant(batch))["embeddings"]
    np.testing.assert_allclose(got.numpy(), [reference(b) for b in batch], atol=1e-5)
    odd = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((45, 33), (64, 90))]
    got = loaded.signatures["serving_bytes"](
        image_bytes=tf.constant([_png(o) for o in odd]))["embeddings"]
    np.testing.assert_allclose(got.numpy(), [reference(o) for o in odd], atol=1e-5)
    with pytest.raises(ValueError, match="None"):
        export.export_saved_model(model, tmp_path / "bad", image_shape=(None, None, 3),
                                  preprocess="identity")


# --------------------------------------------- the model carries its serving path
def _fashion_split(rng, n=6):
    images = _fashion_like_images(n, rng)
    return kd.data.Split.from_arrays("test", images, np.arange(n, dtype=np.int32) % 3)


def test_build_embedder_model_exports_with_its_own_preprocessing_by_default(tmp_path, rng):
    # Issue 17.3: with no preprocess / transform the export served embeddings
    # at cosine 0.70 to the model's own. A model from build_embedder carries
    # its normalisation (from kd.backbones.get) and eval transform, also
    # through a .keras save and load, and the export uses them.
    backbone = kd.backbones.get("small_cnn", input_shape=(32, 32, 3))
    transform = kd.data.eval_transform(32, rgb=True)        # resize 36, crop 32
    embedder = kd.models.build_embedder(backbone, embedding_dim=8, eval_transform=transform)
    assert embedder.preprocessing == "inception"             # small_cnn's
    model = kd.models.MetricModel(embedder, proxies=kd.layers.Proxies(3))
    split = _fashion_split(rng)
    evaluated, _ = kd.evaluation.embed(model, kd.data.make_eval_pipeline(
        split, 4, transform=transform, normalize="inception"), verbose=0)
    evaluated /= np.linalg.norm(evaluated, axis=1, keepdims=True)
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    assert reloaded.embedder.preprocessing == "inception"
    assert repr(reloaded.embedder.eval_transform) == repr(transform)
    for name, m in (("fresh", model), ("reloaded", reloaded)):
        path = export.export_saved_model(m, tmp_path / name, image_shape=IMAGE_SHAPE)
        served = tf.saved_model.load(path).signatures["serving_default"](
            images=tf.constant(split_images(split)))["embeddings"].numpy()
        np.testing.assert_allclose(served, evaluated, atol=1e-5, err_msg=name)
        info = json.loads((tmp_path / name / "assets.extra" / "keras_dml.json").read_text())
        assert info["preprocess"] == "inception" and "Compose" in info["transform"]


def split_images(split):
    return np.stack([x.numpy() for x, _ in split.dataset()])


def test_export_refuses_a_model_that_does_not_carry_its_preprocessing(tmp_path):
    model = _small_embedder()
    with pytest.raises(ValueError, match="preprocess=.*transform=.*'identity'"):
        export.export_saved_model(model, tmp_path / "a", image_shape=IMAGE_SHAPE)
    index = kd.retrieval.Index(16)
    index.add(np.eye(2, 16, dtype=np.float32))
    with pytest.raises(ValueError, match="cannot tell how this model's inputs"):
        export.export_retrieval_model(model, index, tmp_path / "b", k=1,
                                      image_shape=IMAGE_SHAPE)
    # Saying explicitly that no preprocessing is meant is enough.
    export.export_saved_model(model, tmp_path / "c", image_shape=IMAGE_SHAPE,
                              preprocess="identity")


def test_serving_bytes_takes_one_image_as_a_scalar_string(tmp_path, rng):
    # Issue 17.4: one `bytes` object raised a TensorSpec cast error.
    model = _small_embedder()
    path = export.export_saved_model(model, tmp_path / "sm", image_shape=IMAGE_SHAPE,
                                     preprocess="efficientnet_lite")
    serve = tf.saved_model.load(path).signatures["serving_bytes"]
    images = _fashion_like_images(2, rng)
    blobs = [_png(im) for im in images]
    one = serve(image_bytes=tf.constant(blobs[1]))["embeddings"].numpy()
    batch = serve(image_bytes=tf.constant(blobs))["embeddings"].numpy()
    assert one.shape == (1, 16)
    np.testing.assert_allclose(one[0], batch[1], atol=1e-6)


def test_model_fingerprint_names_the_weights_and_travels_with_export_and_index(
        tmp_path, rng):
    model = _small_embedder(seed=1)
    fp = kd.retrieval.model_fingerprint(model)
    assert fp.startswith("sha256:") and export.model_fingerprint is \
        kd.retrieval.model_fingerprint
    model.save(tmp_path / "m.keras")
    assert kd.retrieval.model_fingerprint(keras.models.load_model(tmp_path / "m.keras")) == fp
    other = _small_embedder(seed=1)
    other.layers[-1].kernel.assign(other.layers[-1].kernel + 1e-3)
    assert kd.retrieval.model_fingerprint(other) != fp
    assert kd.retrieval.model_fingerprint(_small_embedder(dim=8, seed=1)) != fp
    path = export.export_saved_model(model, tmp_path / "sm", image_shape=IMAGE_SHAPE,
                                     preprocess="identity")
    assert kd.retrieval.model_fingerprint(path) == fp
    # A loaded SavedModel embeds a data set of raw images (build_index / embed).
    split = _fashion_split(rng)
    raw = split.dataset().batch(4)
    loaded = tf.saved_model.load(path)
    index = kd.retrieval.build_index(loaded, raw, verbose=0)
    served = loaded.signatures["serving_default"](
        images=tf.constant(split_images(split)))["embeddings"].numpy()
    np.testing.assert_allclose(index.embeddings, served, atol=1e-6)
    np.testing.assert_array_equal(index.labels, split.labels)
    emb, _ = kd.evaluation.embed(loaded.signatures["serving_default"], raw, verbose=0)
    np.testing.assert_allclose(emb, served, atol=1e-6)
    # An index records the Keras model that made it, through save and load.
    made = kd.retrieval.build_index(model, kd.data.make_eval_pipeline(
        split, 4, transform=kd.data.resize_transform(32, rgb=True)), verbose=0)
    assert made.model_fingerprint == fp
    made.save(tmp_path / "index")
    assert kd.retrieval.Index.load(tmp_path / "index").model_fingerprint == fp
