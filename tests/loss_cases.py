"""Inputs for driving any keras_dml loss by its short name, built from the
loss's own attributes (takes_proxies, continuous_labels, proxies_per_class)."""

import numpy as np

import keras_dml as kd

NUM_CLASSES = 4
# Constructor arguments that keep the tests small.
ARGS = {"soft_triple": {"centers_per_class": 2}}


def make_loss(name, **kwargs):
    return kd.losses.get(name, **{**ARGS.get(name, {}), **kwargs})


def kind(loss):
    """"proxy" (cosines to proxies), "continuous" (label vectors) or "pair"."""
    if loss.takes_proxies:
        return "proxy"
    return "continuous" if loss.continuous_labels else "pair"


def batch(loss, n=16, dim=6, seed=0):
    """A random (y_true, y_pred) batch of the shapes ``loss`` takes."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % NUM_CLASSES
    if kind(loss) == "proxy":
        width = NUM_CLASSES * loss.proxies_per_class
        return labels.astype("int32"), rng.uniform(-1, 1, (n, width)).astype("float32")
    emb = rng.normal(size=(n, dim)).astype("float32")
    if kind(loss) == "continuous":
        return rng.normal(size=(n, 2)).astype("float32"), emb
    return labels.astype("int32"), emb
