"""embed() and the retrieval callbacks inside model.fit."""

import csv
import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dml as kd


def cluster_data(rng, n=60, classes=4):
    """4-d inputs: dims 0-1 carry the class, dims 2-3 are noise."""
    y = np.repeat(np.arange(classes), n // classes)
    angles = 2 * np.pi * y / classes
    x = np.zeros((n, 4), np.float32)
    x[:, 0], x[:, 1] = np.cos(angles), np.sin(angles)
    x[:, :2] += 0.05 * rng.standard_normal((n, 2))
    x[:, 2:] = rng.standard_normal((n, 2))
    return x, y


def linear_model():
    return keras.Sequential([keras.Input((4,)),
                             keras.layers.Dense(2, use_bias=False, name="proj")])


GOOD = np.array([[1, 0], [0, 1], [0, 0], [0, 0]], np.float32)    # class dims
BAD = np.array([[0, 0], [0, 0], [1, 0], [0, 1]], np.float32)     # noise dims
MEDIUM = np.array([[1, 0], [0, 1], [0.5, 0], [0, 0.5]], np.float32)


class SetWeights(keras.callbacks.Callback):
    """Sets the projection at each epoch start (the optimizer has lr 0)."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule

    def on_epoch_begin(self, epoch, logs=None):
        self.model.get_layer("proj").kernel.assign(self.schedule[epoch])


def compiled(model):
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    return model


# ------------------------------------------------------------------- embed
def test_embed_dataset_numpy_and_unlabelled(rng, capsys):
    x, y = cluster_data(rng, 48)
    model = linear_model()
    expected = model(x).numpy()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    emb, labels = kd.evaluation.embed(model, ds, verbose=1)
    np.testing.assert_allclose(emb, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(labels, y)
    assert "3/3" in capsys.readouterr().out          # the progress bar ran
    emb2, labels2 = kd.evaluation.embed(model, (x, y), verbose=0, batch_size=7)
    np.testing.assert_allclose(emb2, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(labels2, y)
    emb3, none = kd.evaluation.embed(
        model, tf.data.Dataset.from_tensor_slices(x).batch(9), verbose=0)
    assert none is None and emb3.shape == (48, 2)
    emb4, _ = kd.evaluation.embed(model, x, verbose=0, batch_size=64)
    np.testing.assert_allclose(emb4, expected, rtol=1e-6, atol=1e-6)


def test_embed_refuses_non_tensor_outputs(rng):
    x, y = cluster_data(rng, 8)
    inp = keras.Input((4,))
    two = keras.Model(inp, [keras.layers.Dense(2)(inp), keras.layers.Dense(3)(inp)])
    with pytest.raises(TypeError, match="single tensor"):
        kd.evaluation.embed(two, (x, y), verbose=0)


# ---------------------------------------------------- RetrievalCallback
def test_retrieval_callback_logs_and_checkpoint_keeps_best(rng, tmp_path):
    x, y = cluster_data(rng)
    val_ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    model = compiled(linear_model())
    schedule = [BAD, GOOD, MEDIUM]
    expected = []
    for kernel in schedule:
        expected.append(kd.evaluation.retrieval_metrics(x @ kernel, y, ks=(1, 2)))
    # The schedule really does give recall bad < medium < good.
    assert expected[0]["recall@1"] < expected[2]["recall@1"] < expected[1]["recall@1"]

    retrieval = kd.evaluation.RetrievalCallback(val_ds, ks=(1, 2))
    ckpt = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "ep{epoch}.weights.h5"), monitor="val_recall@1",
        mode="max", save_best_only=True, save_weights_only=True)
    csv_path = tmp_path / "log.csv"
    history = model.fit(
        x, np.zeros((len(x), 2), np.float32), epochs=3, batch_size=20, verbose=0,
        callbacks=[SetWeights(schedule), retrieval, ckpt,
                   keras.callbacks.CSVLogger(str(csv_path))])

    for key in ("recall@1", "recall@2", "map@r", "r_precision"):
        np.testing.assert_allclose(history.history["val_" + key],
                                   [e[key] for e in expected], rtol=1e-6)
    assert retrieval.history["epoch"] == [0, 1, 2]
    # Best at epoch 2 (1-based): files for epochs 1 (first) and 2, not 3.
    saved = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "ep*")))
    assert saved == ["ep1.weights.h5", "ep2.weights.h5"]
    best = linear_model()
    best.load_weights(str(tmp_path / "ep2.weights.h5"))
    np.testing.assert_array_equal(best.get_layer("proj").kernel.numpy(), GOOD)
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [float(r["val_recall@1"]) for r in rows] == pytest.approx(
        [e["recall@1"] for e in expected])


def test_retrieval_callback_metrics_reach_tensorboard(rng, tmp_path):
    x, y = cluster_data(rng, 16)
    model = compiled(linear_model())
    model.fit(x, np.zeros((len(x), 2)), epochs=1, verbose=0,
              callbacks=[kd.evaluation.RetrievalCallback((x, y), ks=(1,)),
                         keras.callbacks.TensorBoard(str(tmp_path / "tb"))])
    # Keras' TensorBoard writes "val_*" logs into the validation run.
    tags = set()
    for path in glob.glob(str(tmp_path / "tb" / "validation" / "events*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    assert "epoch_recall@1" in tags


def test_retrieval_callback_every_and_gallery(rng):
    x, y = cluster_data(rng)
    model = compiled(linear_model())
    q, ql, g, gl = x[:20], y[:20], x[20:], y[20:]
    cb = kd.evaluation.RetrievalCallback((q, ql), gallery=(g, gl), ks=(1,),
                                         every=2, metrics=("recall",), prefix="dev_")
    history = model.fit(x, np.zeros((len(x), 2)), epochs=4, verbose=0,
                        callbacks=[SetWeights([BAD, MEDIUM, BAD, GOOD]), cb])
    assert cb.history["epoch"] == [1, 3]
    expected = [kd.evaluation.retrieval_metrics(q @ k, ql, g @ k, gl, ks=(1,),
                                                metrics=("recall",))["recall@1"]
                for k in (MEDIUM, GOOD)]
    assert history.history["dev_recall@1"] == pytest.approx(expected)
    assert set(history.history) == {"loss", "dev_recall@1"}


def test_callback_argument_checks(rng):
    x, y = cluster_data(rng, 8)
    with pytest.raises(ValueError, match="every"):
        kd.evaluation.RetrievalCallback((x, y), every=0)
    model = compiled(linear_model())
    cb = kd.evaluation.RetrievalCallback(x)          # no labels
    with pytest.raises(ValueError, match="labels"):
        model.fit(x, np.zeros((8, 2)), epochs=1, verbose=0, callbacks=[cb])


# ------------------------------------------- ContinuousRetrievalCallback
def test_continuous_callback_logs_metrics(rng):
    x, _ = cluster_data(rng, 40)
    labels = x[:, :2].astype(np.float64)            # continuous labels
    ds = tf.data.Dataset.from_tensor_slices((x, labels)).batch(8)
    model = compiled(linear_model())
    cb = kd.evaluation.ContinuousRetrievalCallback(ds, ks=(1, 5))
    history = model.fit(x, np.zeros((40, 2)), epochs=2, verbose=0,
                        callbacks=[SetWeights([BAD, GOOD]), cb])
    for i, kernel in enumerate((BAD, GOOD)):
        ref = kd.evaluation.continuous_metrics(x @ kernel, labels, ks=(1, 5))
        for key, value in ref.items():
            assert history.history["val_" + key][i] == pytest.approx(value, rel=1e-5)
    assert history.history["val_ndcg@5"][1] > history.history["val_ndcg@5"][0]


def test_callbacks_name_their_monitored_key_and_mode(rng):
    x, y = cluster_data(rng)
    cb = kd.evaluation.RetrievalCallback((x, y), ks=(2, 4), prefix="valid_")
    assert (cb.monitor_key, cb.monitor, cb.mode) == ("recall@2", "valid_recall@2", "max")
    cb = kd.evaluation.RetrievalCallback((x, y), monitor="map@r")
    assert cb.monitor == "val_map@r" and cb.mode == "max"
    labels = rng.normal(size=(len(x), 3)).astype(np.float32)
    cc = kd.evaluation.ContinuousRetrievalCallback((x, labels), ks=(5,))
    assert (cc.monitor, cc.mode) == ("val_ndcg@5", "max")
    cc = kd.evaluation.ContinuousRetrievalCallback((x, labels), ks=(5,),
                                                   monitor="mean_label_distance@5")
    assert cc.mode == "min"
    with pytest.raises(ValueError, match="at least one K"):
        kd.evaluation.RetrievalCallback((x, y), ks=())
