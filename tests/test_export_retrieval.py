"""export_retrieval_model: a SavedModel that serves neighbours, loaded in a
fresh process with only TensorFlow, returns the same ids as Index.search."""

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

IMAGE_SHAPE = (28, 28, 1)

FRESH_PROCESS = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
inputs, out = sys.argv[1:3]
data = np.load(inputs)
blobs = [open(p, "rb").read() for p in sorted(
    os.path.join(os.path.dirname(inputs), f)
    for f in os.listdir(os.path.dirname(inputs)) if f.endswith(".png"))]
result, info = {}, {}
for name in sys.argv[3:]:
    loaded = tf.saved_model.load(os.path.join(os.path.dirname(inputs), name))
    sig = loaded.signatures
    by_images = sig["serving_default"](images=tf.constant(data["images"]))
    by_bytes = sig["serving_bytes"](image_bytes=tf.constant(blobs))
    for key in ("ids", "scores", "labels"):
        result[f"{name}_{key}"] = by_images[key].numpy()
        result[f"{name}_bytes_{key}"] = by_bytes[key].numpy()
    result[f"{name}_embeddings"] = sig["embeddings"](
        images=tf.constant(data["images"]))["embeddings"].numpy()
    result[f"{name}_bytes_embeddings"] = sig["embeddings_bytes"](
        image_bytes=tf.constant(blobs))["embeddings"].numpy()
    info[name] = {k: {n: s.dtype.name for n, s in sig[k].structured_outputs.items()}
                  for k in sig}
np.savez(out, **result)
print(json.dumps(info))
"""


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(16)(x))


def embeddings_of(model, images):
    """What the served model computes: grey -> RGB, resize, model, L2."""
    x = tf.image.grayscale_to_rgb(tf.cast(images, tf.float32))
    x = tf.image.resize(x, (32, 32))
    e = model(x, training=False).numpy()
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_served_neighbours_equal_index_search_in_fresh_process(rng, tmp_path):
    model = tiny_model()
    gallery = rng.integers(0, 256, (120, *IMAGE_SHAPE)).astype(np.uint8)
    queries = rng.integers(0, 256, (9, *IMAGE_SHAPE)).astype(np.uint8)
    queries[:3] = gallery[[5, 77, 119]]           # some queries are gallery items
    g_emb = embeddings_of(model, gallery)
    cosine = kd.retrieval.Index(16)
    cosine.add(g_emb, labels=np.arange(120) % 6, ids=np.arange(120) * 10 + 3)
    euclid = kd.retrieval.Index(16, metric="euclidean")
    euclid.add(g_emb)
    euclid.remove([0, 1])
    export.export_retrieval_model(model, cosine, tmp_path / "cos", k=7,
                                  image_shape=IMAGE_SHAPE, preprocess="identity")
    export.export_retrieval_model(model, euclid, tmp_path / "euc", k=4,
                                  image_shape=IMAGE_SHAPE, memory_budget=4096,
                                  preprocess="identity")
    meta = json.loads((tmp_path / "cos" / "assets.extra" / "keras_dml.json").read_text())
    assert meta["retrieval"]["k"] == 7 and meta["retrieval"]["size"] == 120

    np.savez(tmp_path / "inputs.npz", images=queries)
    for i, image in enumerate(queries):
        (tmp_path / f"q{i:02d}.png").write_bytes(tf.io.encode_png(image).numpy())
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(tmp_path / "inputs.npz"),
         str(tmp_path / "out.npz"), "cos", "euc"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["cos"]["serving_default"] == {"ids": "int64", "scores": "float32",
                                              "labels": "int64"}
    assert info["cos"]["embeddings"] == {"embeddings": "float32"}
    out = dict(np.load(tmp_path / "out.npz"))

    for name, index, k in (("cos", cosine, 7), ("euc", euclid, 4)):
        served = out[f"{name}_embeddings"]
        np.testing.assert_allclose(served, embeddings_of(model, queries), atol=1e-5)
        expected = index.search(served, k)
        for prefix in (name, f"{name}_bytes"):    # PNG bytes = the same pixels
            np.testing.assert_allclose(out[f"{prefix}_scores"], expected.scores,
                                       rtol=1e-6, atol=1e-5)
            assert_same_ranking(index, served, out[f"{prefix}_ids"],
                                out[f"{prefix}_labels"], expected)
        # and the same as searching the Keras model's own embeddings
        assert_same_ranking(index, served, out[f"{name}_ids"], out[f"{name}_labels"],
                            index.search(embeddings_of(model, queries), k))
    np.testing.assert_array_equal(out["cos_ids"][:3, 0], [53, 773, 1193])



def assert_same_ranking(index, queries, ids, labels, expected, tol=1e-5):
    """``ids``/``labels`` equal ``expected``'s, except where two gallery items
    score within ``tol`` of each other: the SavedModel's matmul (TensorFlow's
    kernel) and the index's (a host BLAS on CPU) may round such a near-tie
    either way. Every served id must then score, by an exact float64 product,
    what the index's item at that rank scores."""
    gallery = dict(zip(index.ids.tolist(), index.embeddings.astype(np.float64)))
    q = queries.astype(np.float64)
    if index.metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    differ = np.argwhere(ids != expected.ids)
    assert len(differ) <= max(1, ids.size // 20), (ids, expected.ids)
    for i, j in differ:
        g = gallery[int(ids[i, j])]
        if index.metric == "cosine":
            score = q[i] @ (g / np.linalg.norm(g))
        else:
            score = 2 * q[i] @ g - g @ g        # |q|^2 - |q - g|^2 (kd.search)
        assert abs(score - expected.scores[i, j]) <= tol, (i, j, score, expected.scores[i, j])
    same = ids == expected.ids
    np.testing.assert_array_equal(labels[same], expected.labels[same])

def test_export_retrieval_bad_input(rng, tmp_path):
    model = tiny_model()
    index = kd.retrieval.Index(16)
    with pytest.raises(ValueError, match="index is empty"):
        export.export_retrieval_model(model, index, tmp_path / "a",
                                      image_shape=IMAGE_SHAPE, preprocess="identity")
    index.add(rng.normal(size=(5, 16)))
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 5\]"):
        export.export_retrieval_model(model, index, tmp_path / "a", k=6,
                                      image_shape=IMAGE_SHAPE, preprocess="identity")
    with pytest.raises(ValueError, match="needs image_shape"):
        export.export_retrieval_model(model, index, tmp_path / "a", k=2)
    other = kd.retrieval.Index(8)
    other.add(rng.normal(size=(5, 8)))
    with pytest.raises(ValueError, match="dimension 16, the index has 8"):
        export.export_retrieval_model(model, other, tmp_path / "a", k=2,
                                      image_shape=IMAGE_SHAPE, preprocess="identity")
