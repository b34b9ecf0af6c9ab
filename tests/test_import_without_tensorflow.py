"""``import keras_dml`` works without TensorFlow: under KERAS_BACKEND=jax
with TensorFlow made unimportable (``sys.modules["tensorflow"] = None``), a
fresh interpreter imports keras_dml, computes a loss and a few ops, trains a
MetricModel step, and never loads TensorFlow; the TensorFlow-only modules
(tf.data pipelines, SavedModel export) refuse with an ImportError that
names what needs TensorFlow.

Runs in the TensorFlow pass (it starts its own JAX interpreter).
"""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import sys
    sys.modules["tensorflow"] = None          # any import of it now fails

    import numpy as np
    import keras
    import keras_dml as kd

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, 4)).astype("float32")
    labels = np.array([0, 1, 2, 0, 1, 2])
    proxies = kd.layers.Proxies(3)
    loss = kd.losses.ProxyAnchorLoss()(labels, proxies(emb))
    assert np.isfinite(float(keras.ops.convert_to_numpy(loss)))
    d = kd.ops.pairwise_distances(kd.ops.l2_normalize(emb))
    assert keras.ops.convert_to_numpy(d).shape == (6, 6)

    # Training and the optimiser need no TensorFlow either.
    backbone = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6)])
    model = kd.models.MetricModel(
        kd.models.build_embedder(backbone, 4, pooling="none"),
        proxies=kd.layers.Proxies(3))
    model.compile(keras.optimizers.AdamW(1e-3), kd.losses.ProxyAnchorLoss(),
                  proxy_lr_multiplier=10.0, clip_value=1.0)
    x = rng.normal(size=(6, 5)).astype("float32")
    history = model.fit(x, labels, batch_size=6, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    kd.evaluation.embed(model, x, verbose=0)

    for name, needs in (("data", "tf.data"), ("export", "SavedModel")):
        try:
            getattr(kd, name)
        except ImportError as error:
            message = str(error)
            assert needs in message and "pip install tensorflow" in message, message
        else:
            raise AssertionError(f"keras_dml.{name} imported without TensorFlow")

    loaded = sorted(m for m, v in sys.modules.items()
                    if m.split(".")[0] == "tensorflow" and v is not None)
    assert not loaded, loaded
    print("OK")
""")


def test_import_train_and_refuse_without_tensorflow():
    env = dict(os.environ, KERAS_BACKEND="jax",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    # On failure the traceback names the module that imported TensorFlow.
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-4000:]
