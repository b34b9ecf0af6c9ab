"""Triplet rank loss over dense in-batch triplets ordered by label distance.

The "L(Triplet) + M(Dense)" baseline of Kim et al., CVPR 2019: every triplet
(a, i, j) of the batch with D_y(a, i) < D_y(a, j) asks f_i to be closer to
f_a than f_j is, by a margin.
"""

import keras
from keras import ops as kops

from keras_dml import ops
from keras_dml.losses.base import MetricLoss
from keras_dml.losses.log_ratio import (
    _check_anchors, _check_label_distance, continuous_inputs,
    deserialize_label_distance, serialize_label_distance)

#: Floats of one [block, B, B] triplet block (1M floats = 4 MB in float32;
#: about ten such temporaries live at once: B = 150 runs in 4 blocks of 46
#: anchors).
DEFAULT_TRIPLET_BUDGET = 1 << 20


def _dim(x, axis):
    """Static size of ``x`` along ``axis`` if known, else a scalar tensor
    (only in a TensorFlow graph with an unknown batch size)."""
    static = x.shape[axis]
    return static if static is not None else kops.shape(x)[axis]


def _block_anchors(num_anchors, width, block_size):
    """Anchors per block: ``block_size``, or as many as fit in
    ``DEFAULT_TRIPLET_BUDGET`` floats of [block, B, B]; at most A."""
    if block_size is not None:
        block = int(block_size)
    elif isinstance(width, int):
        block = max(1, DEFAULT_TRIPLET_BUDGET // max(width * width, 1))
    else:
        block = kops.maximum(1, DEFAULT_TRIPLET_BUDGET // kops.maximum(width * width, 1))
    if isinstance(num_anchors, int) and isinstance(block, int):
        block = max(1, min(block, num_anchors))
    return block


def chunked_triplet_hinge(dist, row_data, valid_fn, margin, block_size=None,
                          nonzero=False):
    """Mean over valid triplets of ``relu(dist[a, i] - dist[a, j] + margin)``.

        L = 1/|T| * sum_{(a, i, j) in T} max(0, dist[a, i] - dist[a, j] + margin)

    With ``nonzero=True`` the mean is over the *active* triplets only (valid
    and hinge > 0, PML's ``AvgNonZeroReducer``): |T| becomes their count.

    The anchors are processed in blocks of ``block_size`` (default: as many
    as fit in ``DEFAULT_TRIPLET_BUDGET`` floats, ``block * B * B``), so no
    more than one block of triplets lives at once, in the forward *and* the
    backward pass: the gradient with respect to ``dist`` is accumulated
    blockwise in the same loop,

        dL/d dist[a, i] = 1/|T| (#{j: (a, i, j) active} - #{j: (a, j, i) active})

    (active = valid and hinge > 0) and returned by a custom gradient
    (``keras.ops.custom_gradient``), instead of letting autodiff keep every
    block of the loop for backprop. The loop over blocks is
    ``keras.ops.map`` (``lax.map`` under JAX, ``tf.map_fn`` under
    TensorFlow, a Python loop under PyTorch, whose custom-gradient forward
    records no graph): the same code on every backend.

    XLA / ``jax.jit``: with a static batch size every block has a static
    shape (the anchors are padded to a whole number of blocks; padded anchors
    have no triplet), so the loop compiles.

    Args:
      dist: [A, B] embedding distances, row r = anchor r.
      row_data: list of float [A, B] tensors (e.g. label distances) sliced
        into the same anchor blocks as ``dist`` and handed to ``valid_fn``;
        they select triplets and get no gradient.
      valid_fn: callable (anchors, rows) -> [b, B, B] bool, the triplets T
        of the block: ``anchors`` int32 [b] are the rows' anchor indices,
        ``rows`` the blocks of ``row_data``.
      margin: float.
      block_size: anchors per block (None: from the budget).
      nonzero: divide by the number of active triplets, not of valid ones.
    Returns:
      A scalar; 0 with a zero gradient if T is empty.
    """
    dist = kops.convert_to_tensor(dist)
    dtype = ops.dtype_of(dist)
    acc = ops.accumulation_dtype(dtype)   # sums and counts of many triplets
    margin = ops.constant(margin, dtype)
    row_data = [kops.stop_gradient(kops.convert_to_tensor(x)) for x in row_data]
    num_anchors, width = _dim(dist, 0), _dim(dist, 1)
    if 0 in [n for n in (num_anchors, width) if isinstance(n, int)]:
        # No triplet; keeps the loop away from empty blocks.
        return kops.sum(dist) * ops.constant(0.0, dtype)
    block = _block_anchors(num_anchors, width, block_size)
    num_blocks = (num_anchors + block - 1) // block
    padded_anchors = num_blocks * block

    def blocks_of(x):
        """[A, B] -> [num_blocks, block, B], the padding rows zero."""
        pad = padded_anchors - num_anchors
        if not isinstance(pad, int) or pad:
            x = kops.concatenate([x, kops.zeros((pad, width), x.dtype)], axis=0)
        return kops.reshape(x, (num_blocks, block, width))

    def one_block(xs):
        rows, anchors, *others = xs
        real = anchors < num_anchors                          # padding rows: none
        h = kops.expand_dims(rows, 2) - kops.expand_dims(rows, 1) + margin   # [b, B, B]
        valid = kops.logical_and(valid_fn(anchors, list(others)),
                                 real[:, None, None])
        active = kops.logical_and(valid, h > 0)
        total = kops.sum(kops.cast(kops.where(active, h, kops.zeros_like(h)), acc))
        count = kops.sum(kops.cast(active if nonzero else valid, acc))
        act = kops.cast(active, dtype)
        grad_rows = kops.sum(act, axis=2) - kops.sum(act, axis=1)
        return grad_rows, total, count

    @kops.custom_gradient
    def hinge(d, *rows):
        anchors = kops.reshape(kops.arange(padded_anchors, dtype="int32"),
                               (num_blocks, block))
        g, totals, counts = kops.map(
            one_block, tuple([blocks_of(d), anchors] + [blocks_of(r) for r in rows]))
        total, count = kops.sum(totals), kops.sum(counts)
        g = kops.reshape(g, (padded_anchors, width))[:num_anchors]
        loss = kops.cast(ops.divide_no_nan(total, count), dtype)

        def grad(*args, upstream=None):
            # TensorFlow and JAX pass the upstream gradient positionally,
            # PyTorch as ``upstream=`` (after the saved inputs).
            if upstream is None:
                (upstream,) = args
            d_grad = upstream * kops.cast(
                ops.divide_no_nan(kops.cast(g, acc), count), dtype)
            return (d_grad,) + tuple(kops.zeros_like(r) for r in rows)

        return loss, grad

    return hinge(dist, *row_data)


def _not_anchor(anchors, width):
    """[b, B] bool: column i is not the anchor ``anchors[r]`` of row r."""
    columns = kops.arange(width, dtype="int32")
    return kops.not_equal(kops.expand_dims(columns, 0),
                          kops.expand_dims(kops.cast(anchors, "int32"), 1))


def triplet_distances(embeddings, squared=True, normalize=True, first_only=False):
    """D(a, i) of the triplet baselines: [B, B] or [1, B] for anchor 0 only."""
    f = ops.l2_normalize(embeddings) if normalize else embeddings
    if first_only:
        return ops.pairwise_distances(f[:1], f, squared=squared)
    return ops.pairwise_distances(f, squared=squared)


def dense_triplet_loss(embeddings, label_dist, margin=0.03, squared=True,
                       normalize=True, anchors="all", block_size=None):
    """Triplet rank loss over every triplet ordered by label distance.

        L = 1/|T| sum_{(a,i,j) in T} max(0, D(f_a, f_i) - D(f_a, f_j) + margin)
        T = {(a, i, j): i != a, j != a, D_y(a, i) < D_y(a, j)}

    D is the squared (``squared=True``, the authors' ``Squared_L2dist``) or
    plain Euclidean distance, between L2-normalised embeddings when
    ``normalize`` (the authors' ``--is-norm True`` for triplet runs).

    Reduction: the mean over *all* triplets of T, including those already
    satisfied (loss 0), as the authors' ``Dense_TripletLoss`` does (uniform
    weights 1/#pairs over every pair i < j, clamp(min=1e-12) instead of relu,
    which adds 1e-12 per inactive triplet and nothing to the gradient).
    Ties D_y(a, i) = D_y(a, j) give no triplet.

    The authors order triplets by *batch position* (i < j), relying on their
    sampler to put the batch in increasing label distance from the anchor,
    and use only anchor 0: ``anchors="first"`` with such a batch (no ties) is
    their loss. Their ``Squared_L2dist`` adds 1e-4/dim to every distance,
    which cancels in D(a,i) - D(a,j).

    Memory: triplets are processed in anchor blocks (``chunked_triplet_hinge``):
    one block holds max(B^2, 1M) floats of triplets, forward and backward
    (measured on CPU at B = 320: peak RSS growth 40 MB with 8-anchor
    blocks, 536 MB with all 320 anchors in one block).

    Args:
      embeddings: [B, D].
      label_dist: [B, B] label distances ([1, B] or row 0 for "first").
    Returns:
      A scalar; 0 with a zero gradient when there is no triplet (B < 3).
    """
    _check_anchors(anchors)
    embeddings = kops.convert_to_tensor(embeddings)
    first = anchors == "first"
    dist = triplet_distances(embeddings, squared, normalize, first)
    dy = kops.cast(label_dist, dist.dtype)
    if first:
        dy = dy[:1]
    width = _dim(dist, 1)

    def valid_fn(anchor_ids, rows):
        closer = kops.expand_dims(rows[0], 2) < kops.expand_dims(rows[0], 1)
        not_a = _not_anchor(anchor_ids, width)
        return kops.logical_and(
            closer, kops.logical_and(not_a[:, :, None], not_a[:, None, :]))

    return chunked_triplet_hinge(dist, [dy], valid_fn, margin, block_size)


@keras.saving.register_keras_serializable(package="keras_dml")
class DenseTripletLoss(MetricLoss):
    """Dense triplet rank loss (the paper's L(Triplet) + M(Dense) baseline).

    ``y_pred``: embeddings [B, D]; ``y_true``: continuous labels read by
    ``label_distance`` (as in ``LogRatioLoss``), or a [B, B] matrix with
    ``label_distance="precomputed"``. See ``dense_triplet_loss``: mean over
    every (a, i, j) with D_y(a, i) < D_y(a, j) of
    ``max(0, D(a,i) - D(a,j) + margin)``. Defaults are the authors'
    (margin 0.03, squared distance, unit-normalised embeddings); with
    ``anchors="first"`` only row 0 is an anchor, as in their code.
    """

    short_name = "dense_triplet"
    continuous_labels = True

    def __init__(self, margin=0.03, squared=True, normalize=True,
                 anchors="all", label_distance="squared_l2",
                 label_distance_kwargs=None, block_size=None,
                 name="dense_triplet_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        _check_anchors(anchors)
        _check_label_distance(label_distance)
        if block_size is not None and int(block_size) < 1:
            raise ValueError(f"block_size must be >= 1; got {block_size}.")
        self.margin = margin
        self.squared = squared
        self.normalize = normalize
        self.anchors = anchors
        self.label_distance = label_distance
        self.label_distance_kwargs = label_distance_kwargs
        self.block_size = block_size

    def call(self, y_true, y_pred):
        embeddings, dy = continuous_inputs(
            y_true, y_pred, self.label_distance, self.label_distance_kwargs,
            first_row_only=self.anchors == "first", name=type(self).__name__)
        return dense_triplet_loss(embeddings, dy, self.margin, self.squared,
                                  self.normalize, self.anchors, self.block_size)

    def get_config(self):
        return serialize_label_distance(super().get_config())

    @classmethod
    def from_config(cls, config):
        return cls(**deserialize_label_distance(config))
