"""Triplet rank loss over dense in-batch triplets ordered by label distance.

The "L(Triplet) + M(Dense)" baseline of Kim et al., CVPR 2019: every triplet
(a, i, j) of the batch with D_y(a, i) < D_y(a, j) asks f_i to be closer to
f_a than f_j is, by a margin.
"""

import keras
import tensorflow as tf

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
    """Static size of ``x`` along ``axis`` if known, else a scalar tensor."""
    static = x.shape[axis]
    return static if static is not None else tf.shape(x)[axis]


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

    (active = valid and hinge > 0) and returned by a custom gradient, instead
    of letting autodiff keep every block of the loop for backprop.

    XLA: with a static batch size every block has a static shape (the anchors
    are padded to a whole number of blocks; padded anchors have no triplet),
    so the loop compiles with ``jit_compile=True``.

    Args:
      dist: [A, B] embedding distances, row r = anchor r.
      row_data: list of [A, B] tensors (e.g. label distances) sliced into the
        same anchor blocks as ``dist`` and handed to ``valid_fn``.
      valid_fn: callable (anchors, rows) -> [b, B, B] bool, the triplets T
        of the block: ``anchors`` int32 [b] are the rows' anchor indices,
        ``rows`` the blocks of ``row_data``.
      margin: float.
      block_size: anchors per block (None: from the budget).
      nonzero: divide by the number of active triplets, not of valid ones.
    Returns:
      A scalar; 0 with a zero gradient if T is empty.
    """
    dist = tf.convert_to_tensor(dist)
    dtype = dist.dtype
    acc = ops.accumulation_dtype(dtype)   # sums and counts of many triplets
    margin = tf.constant(margin, dtype)
    row_data = [tf.convert_to_tensor(x) for x in row_data]

    @tf.custom_gradient
    def hinge(d):
        num_anchors, width = _dim(d, 0), _dim(d, 1)
        static = isinstance(num_anchors, int) and isinstance(width, int)
        if block_size is not None:
            block = int(block_size)
        elif isinstance(width, int):
            block = max(1, DEFAULT_TRIPLET_BUDGET // max(width * width, 1))
        else:
            block = tf.maximum(1, DEFAULT_TRIPLET_BUDGET // tf.maximum(width * width, 1))
        if isinstance(num_anchors, int) and isinstance(block, int):
            block = max(1, min(block, num_anchors))
        num_blocks = (num_anchors + block - 1) // block
        pad = num_blocks * block - num_anchors
        padded = [tf.pad(x, [[0, pad], [0, 0]]) for x in [d] + row_data]

        def body(step, total, count, grads):
            start = step * block
            blocks = [tf.slice(x, tf.stack([start, 0]), tf.stack([block, _dim(x, 1)]))
                      for x in padded]
            rows = blocks[0]
            if static:
                rows = tf.ensure_shape(rows, [block, width])
            anchors = start + tf.range(block)
            real = anchors < num_anchors                          # padding rows: none
            h = rows[:, :, None] - rows[:, None, :] + margin        # [b, B, B]
            valid = tf.logical_and(valid_fn(anchors, blocks[1:]), real[:, None, None])
            active = tf.logical_and(valid, h > 0)
            total += tf.reduce_sum(tf.cast(tf.where(active, h, tf.zeros_like(h)), acc))
            act = tf.cast(active, dtype)
            count += tf.reduce_sum(tf.cast(active if nonzero else valid, acc))
            grads = grads.write(step, tf.reduce_sum(act, axis=2) - tf.reduce_sum(act, axis=1))
            return step + 1, total, count, grads

        zero = tf.zeros([], acc)
        if isinstance(num_blocks, int) and num_blocks == 0:
            total, count, g = zero, zero, tf.zeros_like(d)
        else:
            shape = tf.TensorShape([block if isinstance(block, int) else None,
                                    width if isinstance(width, int) else None])
            grads = tf.TensorArray(dtype, size=num_blocks, element_shape=shape)
            _, total, count, grads = tf.while_loop(
                lambda step, *_: step < num_blocks, body,
                (tf.constant(0, tf.int32), zero, zero, grads))
            if static:
                g = grads.stack()
            else:
                g = tf.cond(num_blocks > 0, grads.stack,
                            lambda: tf.zeros([0, block, width], dtype))
            g = tf.reshape(g, tf.stack([num_blocks * block, width]))[:num_anchors]
        loss = tf.cast(tf.math.divide_no_nan(total, count), dtype)

        def grad(upstream):
            return upstream * tf.cast(tf.math.divide_no_nan(tf.cast(g, acc), count), dtype)

        return loss, grad

    return hinge(dist)


def _not_anchor(anchors, width):
    """[b, B] bool: column i is not the anchor ``anchors[r]`` of row r."""
    return tf.not_equal(tf.range(width)[None, :], anchors[:, None])


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
    embeddings = tf.convert_to_tensor(embeddings)
    first = anchors == "first"
    dist = triplet_distances(embeddings, squared, normalize, first)
    dy = tf.cast(label_dist, dist.dtype)
    if first:
        dy = dy[:1]
    width = _dim(dist, 1)

    def valid_fn(anchor_ids, rows):
        closer = rows[0][:, :, None] < rows[0][:, None, :]
        not_a = _not_anchor(anchor_ids, width)
        return tf.logical_and(
            closer, tf.logical_and(not_a[:, :, None], not_a[:, None, :]))

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
