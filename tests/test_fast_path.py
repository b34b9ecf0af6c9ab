"""The fast paths are the default paths (TensorFlow):

* ``MetricModel.compile`` with default arguments trains (and evaluates) with
  the head + loss as one XLA-compiled function inside the step, and the
  loss's input checks still raise (XLA drops assertions);
* ``jit_compile=False`` / ``run_eagerly=True`` turn it off;
* exact search and the retrieval metrics on a CPU score through the host
  BLAS product (``search.host_matmul``), with the same neighbours, scores
  and tie rule as the backend's own matmul.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras_dml as kd
import tiny_models
from keras_dml import search
from keras_dml.models import _steps_tensorflow


def proxy_model(classes=3):
    return tiny_models.metric_model(tiny_models.mlp_backbone(hidden=6, out=None),
                                    num_classes=classes, pooling="none")


def data(n=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 5)).astype("float32"),
            (np.arange(n) % classes).astype("int32"))


def test_default_compile_fits_with_the_xla_compiled_head_and_loss():
    model = proxy_model()
    model.compile(optimizer="adam", loss=kd.losses.ProxyAnchorLoss())
    x, y = data()
    history = model.fit(x, y, batch_size=6, epochs=2, verbose=0)
    fn = _steps_tensorflow.HEAD_LOSS_FUNCTIONS[model]
    assert isinstance(fn, tf.types.experimental.PolymorphicFunction)
    assert fn._jit_compile is True                 # the XLA-compiled function ...
    assert fn.experimental_get_tracing_count() >= 1   # ... is the one fit called
    assert np.all(np.isfinite(history.history["loss"]))
    # The same loss as the plain (uncompiled) computation of the batch.
    loss = model.evaluate(x, y, batch_size=12, verbose=0)
    plain = kd.losses.ProxyAnchorLoss()(y, model.proxies(model.embedder(x)))
    np.testing.assert_allclose(loss, float(plain), rtol=1e-5)


@pytest.mark.parametrize("kwargs", [{"jit_compile": False}, {"run_eagerly": True}])
def test_the_compiled_loss_can_be_turned_off(kwargs):
    model = proxy_model()
    model.compile(optimizer="adam", loss=kd.losses.ProxyAnchorLoss(), **kwargs)
    x, y = data()
    model.fit(x, y, batch_size=6, epochs=1, verbose=0)
    assert _steps_tensorflow.HEAD_LOSS_FUNCTIONS[model] is None


def test_bad_labels_still_raise_on_the_compiled_path():
    """Labels beyond the proxies: the check inside the XLA function is
    returned and asserted in the step's graph."""
    model = proxy_model(classes=3)
    model.compile(optimizer="adam", loss=kd.losses.ProxyAnchorLoss())
    x, y = data()
    y[0] = 7
    with pytest.raises(tf.errors.InvalidArgumentError):
        model.fit(x, y, batch_size=12, epochs=1, verbose=0)


def test_nan_embeddings_still_raise_on_the_compiled_path():
    model = proxy_model()
    model.compile(optimizer="adam", loss=kd.losses.ProxyAnchorLoss())
    x, y = data()
    x[3] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError):
        model.fit(x, y, batch_size=12, epochs=1, verbose=0)


def test_search_on_the_cpu_uses_the_host_product():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(300, 8)).astype("float32")
    g[10] = g[3]                                     # an exact duplicate
    gallery = search.Gallery(g, "cosine")
    assert search.host_matmul() and gallery.host_product
    s = gallery.scores(g[:5])
    assert isinstance(s, np.ndarray) and s.shape == (5, 300)   # numpy, duplicates copied
    assert s[0, 3] == s[0, 10]
    values, columns = gallery.top_k(g[:5], 6)
    assert isinstance(values, np.ndarray) and columns.dtype == np.int32
    idx, scores = search.top_k_neighbours(g, k=6, return_scores=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    s = gn @ gn.T
    np.fill_diagonal(s, -np.inf)
    expected = np.argsort(-s, axis=1, kind="stable")[:, :6]
    np.testing.assert_allclose(scores, np.take_along_axis(s, expected, 1), atol=1e-6)
    # The duplicate pair ties exactly: query 3 finds 10 first and vice versa,
    # and any query that ranks both ranks 3 before 10.
    assert idx[3, 0] == 10 and idx[10, 0] == 3
    both = [row for row in idx if 3 in row and 10 in row]
    assert all(list(row).index(3) < list(row).index(10) for row in both)
