"""The Keras base class shared by every keras_dml loss, and input checks."""

import inspect

import keras
from keras import ops as kops

from keras_dml import _backend, ops


class MetricLoss(keras.losses.Loss):
    """A batch-level metric-learning loss usable in ``model.compile``.

    Subclasses implement ``call(y_true, y_pred)`` returning a scalar: these
    losses are defined on the whole batch (pairs, triplets, proxies), not as a
    mean of independent per-sample terms, so Keras' reduction leaves the
    scalar as it is. ``get_config`` returns the ``__init__`` arguments, read
    from the attributes of the same names.

    Class attributes say what the loss consumes, so that models, the runner
    and the apps read them instead of keeping their own tables:

    * ``short_name``: the name used in flagfiles and ``keras_dml.losses.get``.
    * ``takes_proxies``: ``y_pred`` holds cosines to class proxies (build the
      model with ``keras_dml.layers.Proxies``), not embeddings.
    * ``continuous_labels``: ``y_true`` holds continuous label vectors [B, L]
      rather than class ids.
    * ``proxies_per_class``: proxy columns per class in ``y_pred`` (an
      instance property; 1 unless a loss has several centres per class).
    * ``supports_xla``: ``MetricModel`` may compile the loss with XLA (every
      keras_dml loss does; set False on a subclass with ops XLA cannot
      compile, e.g. ``tf.py_function``).

    Bad input is never silently absorbed: a NaN or Inf in ``y_pred``, labels
    out of range or mismatched shapes raise (``ValueError`` eagerly on every
    backend, ``InvalidArgumentError`` inside ``tf.function``), and where
    nothing can raise (XLA, ``jit_compile=True``, ``jax.jit``) the loss itself
    is NaN, so ``TerminateOnNaN`` stops the run instead of training on a loss
    of 0. See ``keras_dml._backend``.
    """

    short_name = None
    takes_proxies = False
    continuous_labels = False
    supports_xla = True

    @property
    def proxies_per_class(self):
        return 1

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__} is defined on the whole batch and does "
                "not take per-sample weights (sample_weight)."
            )
        y_pred = kops.convert_to_tensor(y_pred)
        with _backend.collect_checks() as checks:
            _backend.check_finite(y_pred, f"{type(self).__name__}: y_pred")
            loss = super().__call__(y_true, y_pred)
        # Where the checks cannot raise (XLA, jax.jit) a NaN loss takes the
        # place of a failed one (a loss of 0 would train on silently).
        return _backend.nan_unless(_backend.all_ok(checks), loss)

    def get_config(self):
        config = super().get_config()
        params = inspect.signature(type(self).__init__).parameters
        for name in params:
            if name in ("self", "name", "reduction", "dtype", "kwargs"):
                continue
            config[name] = getattr(self, name)
        return config


def check_embeddings(embeddings, name="y_pred"):
    """Embeddings must be a float matrix [B, D]."""
    embeddings = kops.convert_to_tensor(embeddings)
    if len(embeddings.shape) != 2:
        raise ValueError(
            f"{name} must be embeddings of shape [batch, dim]; got shape "
            f"{embeddings.shape}."
        )
    return embeddings


def check_batch_sizes(labels, embeddings):
    """Labels and embeddings must describe the same batch."""
    n_labels, n_emb = labels.shape[0], embeddings.shape[0]
    if n_labels is not None and n_emb is not None:
        if n_labels != n_emb:
            raise ValueError(
                f"labels ({n_labels}) and embeddings ({n_emb}) have different "
                "batch sizes."
            )
    else:
        _backend.check(kops.equal(kops.shape(labels)[0], kops.shape(embeddings)[0]),
                       "labels and embeddings have different batch sizes")


def proxy_inputs(y_true, y_pred, columns_per_class=1, num_classes=None):
    """Validate (labels, proxy similarities) for a proxy loss.

    ``y_pred`` is [B, C * K] (K = ``columns_per_class``). Returns int32
    labels [B], the similarities and C. Raises on a width that is not a
    multiple of K (or not ``num_classes * K``), and on labels outside [0, C).
    """
    labels = ops.flatten_labels(y_true)
    sims = check_embeddings(y_pred, "y_pred (similarities to proxies)")
    check_batch_sizes(labels, sims)
    width = sims.shape[1]
    if width is None:
        raise ValueError("The number of proxy columns of y_pred must be known.")
    if width % columns_per_class:
        raise ValueError(
            f"y_pred has {width} columns, not a multiple of "
            f"centers_per_class={columns_per_class}."
        )
    classes = width // columns_per_class
    if num_classes is not None and classes != num_classes:
        raise ValueError(
            f"y_pred has {width} columns; expected num_classes * "
            f"centers_per_class = {num_classes} * {columns_per_class}."
        )
    _backend.check(labels >= 0, "class labels must be >= 0")
    _backend.check(labels < classes,
                   f"class labels must be < num_classes = {classes} "
                   "(the number of proxies)")
    return labels, sims, classes


def class_pair_inputs(y_true, y_pred):
    """Validate (labels, embeddings) for a pair/triplet loss."""
    labels = ops.flatten_labels(y_true)
    embeddings = check_embeddings(y_pred)
    check_batch_sizes(labels, embeddings)
    return labels, embeddings
