"""Embed a data set with a model, batch by batch, with a progress bar."""

import weakref
from typing import Optional, Tuple

import keras
import numpy as np

from keras_dml import _backend

# One compiled inference function per model, so that repeated evaluations
# (a callback every epoch) trace the model only once.
_CALL_FNS = weakref.WeakKeyDictionary()


def _host(x):
    """A batch as numpy when it is a TensorFlow tensor (a tf.data batch fed
    to a JAX or PyTorch model)."""
    return x.numpy() if _backend.is_tf_tensor(x) else x


def _signature_of(model):
    """The serving signature of a loaded SavedModel (``tf.saved_model.load``)
    or the signature itself; None for anything else (a Keras model)."""
    if isinstance(model, keras.Model):
        return None
    signatures = getattr(model, "signatures", None)
    if signatures is not None and hasattr(signatures, "keys"):
        for name in ("embeddings", "serving_default"):
            if name in signatures:
                return signatures[name]
        raise ValueError(f"the SavedModel has no serving_default or embeddings "
                         f"signature; it has {sorted(signatures.keys())}.")
    if hasattr(model, "structured_input_signature") and hasattr(model, "structured_outputs"):
        return model
    return None


def _signature_fn(signature):
    """``x -> embeddings`` through a SavedModel signature with one tensor
    input (``images`` of kd.export: raw images, preprocessed inside) and an
    ``embeddings`` output (or a single output)."""
    import tensorflow as tf
    inputs = signature.structured_input_signature[1]
    if len(inputs) != 1:
        raise ValueError(f"the signature takes {sorted(inputs)}; embed needs one input.")
    (name, spec), = inputs.items()
    outputs = signature.structured_outputs
    key = "embeddings" if "embeddings" in outputs else None
    if key is None and len(outputs) == 1:
        key = next(iter(outputs))
    if key is None:
        raise ValueError(f"the signature returns {sorted(outputs)}; embed needs "
                         "'embeddings' (or a single output).")

    def fn(x):
        x = tf.convert_to_tensor(_host(x))
        if x.dtype != spec.dtype:
            if spec.dtype == tf.uint8:
                x = tf.cast(tf.clip_by_value(tf.round(tf.cast(x, tf.float32)), 0, 255),
                            tf.uint8)
            else:
                x = tf.cast(x, spec.dtype)
        return signature(**{name: x})[key]
    return fn


def _inference_fn(model):
    signature = _signature_of(model)
    if signature is not None:
        return _signature_fn(signature)
    fn = _CALL_FNS.get(model)
    if fn is None:
        model_ref = weakref.ref(model)   # the cache must not keep the model alive
        if _backend.is_tensorflow():
            def call(x):
                return model_ref()(x, training=False)
            fn = _backend.function(call)      # tf.function(reduce_retracing=True)
        else:
            # Keras' compiled predict step (jax.jit under JAX, eager torch).
            def fn(x):
                return model_ref().predict_on_batch(_host(x))
        _CALL_FNS[model] = fn
    return fn


def _split(element):
    """A batch -> (x, y or None). (x, y) and (x, y, sample_weight) are split."""
    if isinstance(element, (tuple, list)):
        if len(element) == 1:
            return element[0], None
        if len(element) in (2, 3):
            return element[0], element[1]
        raise ValueError("dataset elements must be x, (x,), (x, y) or "
                         f"(x, y, sample_weight); got a tuple of {len(element)}.")
    return element, None


def _numpy_batches(data, batch_size):
    arrays = list(data) if isinstance(data, (tuple, list)) else [data]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("the arrays of the data tuple have different lengths.")
    for start in range(0, n, batch_size):
        batch = [a[start:start + batch_size] for a in arrays]
        yield tuple(batch) if isinstance(data, (tuple, list)) else batch[0]


def _num_batches(data, batch_size):
    if _backend.is_tf_dataset(data):
        n = int(data.cardinality())
        return n if n >= 0 else None
    if isinstance(data, np.ndarray):
        return -(-len(data) // batch_size)
    if isinstance(data, (tuple, list)) and data and isinstance(data[0], np.ndarray):
        return -(-len(data[0]) // batch_size)
    try:
        return len(data)
    except TypeError:
        return None


def _to_numpy(t, what):
    if isinstance(t, (dict, list, tuple)):
        raise TypeError(f"the {what} must be a single tensor; got a "
                        f"{type(t).__name__}. For embeddings, use a model whose "
                        "output is the embedding.")
    return _backend.to_numpy(t)


def embed(model, dataset, verbose: int = 1, batch_size: int = 256
          ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Embeddings (and labels) of a whole data set, as numpy arrays.

    Args:
        model: a Keras model whose output ``model(x, training=False)`` is the
            embedding (a ``MetricModel`` outputs embeddings, not proxies); or
            a SavedModel of ``kd.export`` loaded with ``tf.saved_model.load``
            (or one of its signatures), fed the raw images it takes (uint8
            ``[N, H, W, C]`` for ``serving_default``: it preprocesses them
            itself; other dtypes are cast, float 0-255 rounded).
        dataset: a *batched* ``tf.data.Dataset`` (or any iterable of batches)
            yielding ``x``, ``(x, y)`` or ``(x, y, sample_weight)``; or numpy
            data ``x`` or ``(x, y)``, which is cut into ``batch_size`` batches.
        verbose: 1 shows a ``keras.utils.Progbar``, 0 is silent.
        batch_size: batch size for numpy data.

    Returns:
        ``(embeddings [N, D], labels [N, ...] or None)``; labels are the
        concatenated ``y`` of the batches when the data set has them.
    """
    if isinstance(dataset, np.ndarray) or (
            isinstance(dataset, (tuple, list)) and dataset
            and all(isinstance(a, np.ndarray) for a in dataset)):
        batches = _numpy_batches(dataset, int(batch_size))
    else:
        batches = dataset
    call = _inference_fn(model)
    progbar = keras.utils.Progbar(_num_batches(dataset, int(batch_size)),
                                  verbose=verbose, unit_name="batch")
    embeddings, labels = [], []
    has_labels = None
    for step, element in enumerate(batches):
        x, y = _split(element)
        if has_labels is None:
            has_labels = y is not None
        elif has_labels != (y is not None):
            raise ValueError("some batches have labels and others do not.")
        embeddings.append(_to_numpy(call(x), "model output"))
        if has_labels:
            labels.append(_to_numpy(y, "label batch"))
        progbar.update(step + 1)
    if not embeddings:
        raise ValueError("the data set is empty.")
    if verbose:
        progbar.update(len(embeddings), finalize=True)
    emb = np.concatenate(embeddings, axis=0)
    if emb.ndim != 2:
        raise ValueError(f"model output must be [batch, D] embeddings; got "
                         f"shape {emb.shape[1:]} per example.")
    return emb, (np.concatenate(labels, axis=0) if has_labels else None)
