"""Shared pieces of the triplet losses: the anchor-blocked hinge with its
custom gradient (``chunked_triplet_hinge``), the anchor mask, the triplet
baselines' distances and the ``block_size`` check.

Used by the class-label ``TripletLoss`` and the continuous-label
``DenseTripletLoss`` / ``BinaryTripletLoss``; it depends on neither kind of
label.
"""

from typing import Callable, Optional, Sequence, Union

from keras import ops as kops

from keras_dml import ops
from keras_dml._types import Tensor, TensorLike

#: Floats of one [block, B, B] triplet block (1M floats = 4 MB in float32;
#: about ten such temporaries live at once: B = 150 runs in 4 blocks of 46
#: anchors).
DEFAULT_TRIPLET_BUDGET = 1 << 20


def static_dim(x: Tensor, axis: int) -> Union[int, Tensor]:
    """Static size of ``x`` along ``axis`` if known, else a scalar tensor
    (only in a TensorFlow graph with an unknown batch size)."""
    static = x.shape[axis]
    return static if static is not None else kops.shape(x)[axis]


def block_anchors(num_anchors: Union[int, Tensor], width: Union[int, Tensor],
                  block_size: Optional[int]) -> Union[int, Tensor]:
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


def chunked_triplet_hinge(dist: TensorLike, row_data: Sequence[TensorLike],
                          valid_fn: Callable[..., Tensor], margin: float,
                          block_size: Optional[int] = None, nonzero: bool = False) -> Tensor:
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
    num_anchors, width = static_dim(dist, 0), static_dim(dist, 1)
    if 0 in [n for n in (num_anchors, width) if isinstance(n, int)]:
        # No triplet; keeps the loop away from empty blocks.
        return kops.sum(dist) * ops.constant(0.0, dtype)
    block = block_anchors(num_anchors, width, block_size)
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


def not_anchor(anchors: TensorLike, width: Union[int, Tensor]) -> Tensor:
    """[b, B] bool: column i is not the anchor ``anchors[r]`` of row r."""
    columns = kops.arange(width, dtype="int32")
    return kops.not_equal(kops.expand_dims(columns, 0),
                          kops.expand_dims(kops.cast(anchors, "int32"), 1))


def triplet_distances(embeddings: Tensor, squared: bool = True, normalize: bool = True,
                      first_only: bool = False) -> Tensor:
    """D(a, i) of the triplet baselines: [B, B] or [1, B] for anchor 0 only."""
    f = ops.l2_normalize(embeddings) if normalize else embeddings
    if first_only:
        return ops.pairwise_distances(f[:1], f, squared=squared)
    return ops.pairwise_distances(f, squared=squared)


def check_block_size(block_size: Optional[int]) -> None:
    """``block_size`` (anchors per block) is None or an integer >= 1."""
    if block_size is not None and int(block_size) < 1:
        raise ValueError(f"block_size must be None or >= 1; got {block_size}.")
