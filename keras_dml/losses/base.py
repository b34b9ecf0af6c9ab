"""The Keras base classes of the keras_dml losses, and input checks.

``MetricLoss``: every loss (batch-level, checked input, config from the
``__init__`` arguments). ``ContinuousLoss``: the losses on continuous labels,
which own ``label_distance`` and its kwargs, turn ``y_true`` into label
distances and call ``loss_from_distances``.
"""

import inspect
from typing import Any, Callable, Dict, Optional, Tuple, Union

import keras
from keras import ops as kops

from keras_dml import _backend, ops
from keras_dml import label_distances as ld
from keras_dml._types import Tensor, TensorLike


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
    * ``supports_references``: the loss can compare the batch with
      reference embeddings and labels (``loss(y_true, y_pred,
      references=keras_dml.losses.References(...))``, PML's
      ``ref_emb``/``ref_labels``), as cross-batch memory needs.
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

    short_name: Optional[str] = None
    takes_proxies = False
    continuous_labels = False
    supports_references = False
    supports_xla = True

    @property
    def proxies_per_class(self) -> int:
        return 1

    def __init__(self, name: Optional[str] = None, reduction: Optional[str] = "sum_over_batch_size",
                 dtype: Any = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def __call__(self, y_true: TensorLike, y_pred: TensorLike, sample_weight: Any = None,
                 references: Any = None) -> Tensor:
        if sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__} is defined on the whole batch and does "
                "not take per-sample weights (sample_weight)."
            )
        if references is not None and not self.supports_references:
            raise ValueError(
                f"{type(self).__name__} does not compare a batch with "
                "reference embeddings (cross-batch memory); the pair losses "
                "(contrastive, multi_similarity, triplet, circle) do.")
        y_pred = kops.convert_to_tensor(y_pred)
        with _backend.collect_checks() as checks:
            _backend.check_finite(y_pred, f"{type(self).__name__}: y_pred")
            if references is None:
                loss = super().__call__(y_true, y_pred)
            else:
                # Keras' Loss.__call__ (dtype conversion, then call; the
                # reduction of a scalar is the scalar) with the references.
                with keras.name_scope(self.name):
                    y_pred = kops.convert_to_tensor(y_pred, dtype=self.dtype)
                    y_true = kops.convert_to_tensor(y_true, dtype=self.dtype)
                    loss = kops.cast(self.call(y_true, y_pred, references=references),
                                     self.dtype)
        # Where the checks cannot raise (XLA, jax.jit) a NaN loss takes the
        # place of a failed one (a loss of 0 would train on silently).
        return _backend.nan_unless(_backend.all_ok(checks), loss)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        params = inspect.signature(type(self).__init__).parameters
        for name in params:
            if name in ("self", "name", "reduction", "dtype", "kwargs"):
                continue
            config[name] = getattr(self, name)
        return config


def check_embeddings(embeddings: TensorLike, name: str = "y_pred") -> Tensor:
    """Embeddings must be a float matrix [B, D]."""
    embeddings = kops.convert_to_tensor(embeddings)
    if len(embeddings.shape) != 2:
        raise ValueError(
            f"{name} must be embeddings of shape [batch, dim]; got shape "
            f"{embeddings.shape}."
        )
    return embeddings


def check_batch_sizes(labels: Tensor, embeddings: Tensor) -> None:
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


def proxy_inputs(y_true: TensorLike, y_pred: TensorLike, columns_per_class: int = 1,
                 num_classes: Optional[int] = None) -> Tuple[Tensor, Tensor, int]:
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


def class_pair_inputs(y_true: TensorLike, y_pred: TensorLike) -> Tuple[Tensor, Tensor]:
    """Validate (labels, embeddings) for a pair/triplet loss."""
    labels = ops.flatten_labels(y_true)
    embeddings = check_embeddings(y_pred)
    check_batch_sizes(labels, embeddings)
    return labels, embeddings


# ----------------------------------------------------------- continuous labels
ANCHORS = ("all", "first")

LabelDistance = Union[str, Callable]


def check_anchors(anchors: str) -> None:
    """``anchors`` of a continuous loss: "all" (every sample in turn) or
    "first" (row 0 only, the log-ratio authors' batches)."""
    if anchors not in ANCHORS:
        raise ValueError(f"anchors must be one of {ANCHORS}; got {anchors!r}.")


def check_label_distance(label_distance: LabelDistance) -> None:
    """A ``kd.label_distances`` name, "precomputed" or a callable."""
    if label_distance == "precomputed" or callable(label_distance):
        return
    ld.get(label_distance)    # raises on an unknown name


def continuous_inputs(y_true: TensorLike, y_pred: TensorLike, label_distance: LabelDistance,
                      label_distance_kwargs: Optional[Dict[str, Any]],
                      first_row_only: bool, name: str) -> Tuple[Any, Any]:
    """Validate (labels, embeddings) of a continuous-label loss.

    Returns the embeddings [B, D] (checked finite) and the label distances
    [B, B] (or [1, B] for ``first_row_only``), checked finite and >= 0, with
    no gradient.
    """
    embeddings = check_embeddings(y_pred)
    _backend.check_finite(embeddings, f"{name}: y_pred (embeddings)")
    dy = ld.batch_label_distances(
        y_true, label_distance, batch_size=kops.shape(embeddings)[0],
        first_row_only=first_row_only,
        label_distance_kwargs=label_distance_kwargs, name=name)
    dy = kops.stop_gradient(kops.cast(dy, embeddings.dtype))
    return embeddings, dy


class ContinuousLoss(MetricLoss):
    """A loss on embeddings ``y_pred`` [B, D] with continuous labels ``y_true``.

    ``y_true`` are label vectors [B, L] (or maps, caption embeddings:
    whatever ``label_distance`` reads), or with
    ``label_distance="precomputed"`` a [B, B] label-distance matrix (with
    ``anchors="first"`` also the [B] row D_y(0, i)). ``call`` turns them into
    the label distances D_y (``continuous_inputs``: checked finite and
    >= 0, no gradient) and returns ``loss_from_distances(embeddings, D_y)``,
    the subclass's functional core. A callable ``label_distance`` goes
    through Keras (de)serialisation in the config.

    Args:
      label_distance: a ``kd.label_distances`` name ("squared_l2", "l1",
        "one_minus_miou", "caption_set"), "precomputed", or a callable
        ``fn(y1, y2=None)``.
      label_distance_kwargs: keyword arguments of the named label distance
        (e.g. ``{"num_classes": 5}`` for "one_minus_miou").
    """

    continuous_labels = True

    def __init__(self, label_distance: LabelDistance = "squared_l2",
                 label_distance_kwargs: Optional[Dict[str, Any]] = None,
                 name: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        check_label_distance(label_distance)
        self.label_distance = label_distance
        self.label_distance_kwargs = label_distance_kwargs

    @property
    def first_row_only(self) -> bool:
        """Only anchor 0's label distances are read (``anchors="first"``)."""
        return getattr(self, "anchors", "all") == "first"

    def loss_from_distances(self, embeddings: Tensor, label_dist: Tensor) -> Tensor:
        """The loss of embeddings [B, D] and label distances [B, B] ([1, B]
        when ``first_row_only``)."""
        raise NotImplementedError

    def call(self, y_true: TensorLike, y_pred: TensorLike) -> Tensor:
        embeddings, dy = continuous_inputs(
            y_true, y_pred, self.label_distance, self.label_distance_kwargs,
            first_row_only=self.first_row_only, name=type(self).__name__)
        return self.loss_from_distances(embeddings, dy)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        if callable(config.get("label_distance")):
            config["label_distance"] = keras.saving.serialize_keras_object(
                config["label_distance"])
        return config

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "ContinuousLoss":
        if isinstance(config.get("label_distance"), dict):
            config = dict(config)
            config["label_distance"] = keras.saving.deserialize_keras_object(
                config["label_distance"])
        return cls(**config)
