"""Index-batch samplers, tf.data-ready, seeded.

* ``LabelSpaceBatchSampler``: the batches of Kim et al. (CVPR 2019) for
  continuous labels: an anchor, its k nearest neighbours in label space, and
  random others, from a precomputed neighbour list.
* ``nearest_neighbours``: that neighbour list, for N up to 100k+ labels,
  computed in chunks (never an N x N matrix); it lives in
  ``keras_dml.label_distances`` and is re-exported here.
* ``MPerClassSampler``: P classes x M samples per batch, for class labels
  (pair losses).

A sampler yields int64 index arrays of shape [batch_size]; ``as_dataset()``
turns it into a ``tf.data.Dataset`` of index batches, to be mapped to
examples, e.g.::

    ds = sampler.as_dataset().map(lambda idx: (tf.gather(x, idx), tf.gather(y, idx)))

Every epoch draws from ``np.random.default_rng([seed, epoch])``: the same
seed gives the same batches, and each new pass over the sampler (each Keras
epoch re-iterates the dataset) is the next epoch.
"""

import numpy as np
import tensorflow as tf

# The neighbour search is label-space work, so it lives with the label
# distances; re-exported so that samplers.nearest_neighbours keeps working.
from keras_dml.label_distances import nearest_neighbours

__all__ = ["nearest_neighbours", "LabelSpaceBatchSampler", "MPerClassSampler"]


# --------------------------------------------------------------------------
# Samplers
# --------------------------------------------------------------------------

class _IndexBatchSampler:
    """Epoch bookkeeping and tf.data conversion shared by the samplers."""

    batch_size = None

    def __init__(self, seed):
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch):
        """The epoch the next iteration draws (advanced by each iteration)."""
        self.epoch = int(epoch)

    def epoch_batches(self, epoch):
        """All index batches of ``epoch``, [len(self), batch_size] int64."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        return self._draw(rng)

    def __iter__(self):
        batches = self.epoch_batches(self.epoch)
        self.epoch += 1
        return iter(batches)

    def as_dataset(self):
        """A ``tf.data.Dataset`` of int64 index batches [batch_size].

        Each iteration of the dataset (each Keras epoch) is the sampler's next
        epoch. The cardinality is declared (``len(self)`` batches), so Keras
        knows the steps per epoch.
        """
        ds = tf.data.Dataset.from_generator(
            self.__iter__,
            output_signature=tf.TensorSpec([self.batch_size], tf.int64))
        return ds.apply(tf.data.experimental.assert_cardinality(len(self)))

    def _draw(self, rng):
        raise NotImplementedError


def _sample_excluding(rng, n, excluded, size):
    """``size`` distinct ints from [0, n) minus ``excluded`` (distinct ints)."""
    excluded = np.unique(excluded)
    positions = rng.choice(n - excluded.size, size=size, replace=False)
    # The p-th allowed value is p + #{excluded e : e - rank(e) <= p}.
    shifted = excluded - np.arange(excluded.size)
    return positions + np.searchsorted(shifted, positions, side="right")


class LabelSpaceBatchSampler(_IndexBatchSampler):
    """Batches built around an anchor in label space (the authors' sampler).

    One batch per anchor; every sample is an anchor once per epoch (in a
    random order when ``shuffle``). A batch is

        [anchor, its num_neighbours nearest neighbours (nearest first),
         batch_size - 1 - num_neighbours others drawn uniformly without
         replacement from the rest of the data set]

    as in the authors' ``Dense_PairDataset`` (k = 5, batch 150). The anchor is
    at position 0, which is what ``LogRatioLoss(anchors="first")`` and the
    triplet losses' ``anchors="first"`` expect; with ``anchors="all"`` every
    sample of the batch is an anchor anyway. (The authors also sort the
    random others by label distance; the losses here read the label
    distances, not the batch order, so that is not needed.)

    Args:
      neighbours: int [N, K] neighbour list, nearest first, K >=
        num_neighbours, not containing the row's own index (from
        ``nearest_neighbours``).
      batch_size: samples per batch (<= N).
      num_neighbours: k nearest neighbours in each batch.
      shuffle: visit the anchors in a random order each epoch.
      batches_per_epoch: anchors per epoch (default N); fewer draws a random
        subset of anchors each epoch.
      seed: random seed.
    """

    def __init__(self, neighbours, batch_size=150, num_neighbours=5,
                 shuffle=True, batches_per_epoch=None, seed=0):
        super().__init__(seed)
        neighbours = np.asarray(neighbours)
        if neighbours.ndim != 2 or not np.issubdtype(neighbours.dtype, np.integer):
            raise ValueError("neighbours must be an int array [N, K].")
        n = neighbours.shape[0]
        if num_neighbours < 0 or num_neighbours > neighbours.shape[1]:
            raise ValueError(
                f"num_neighbours={num_neighbours} but the neighbour list has "
                f"{neighbours.shape[1]} columns.")
        if not num_neighbours + 1 <= batch_size <= n:
            raise ValueError(
                f"batch_size must be in [num_neighbours + 1, N] = "
                f"[{num_neighbours + 1}, {n}]; got {batch_size}.")
        nn = neighbours[:, :num_neighbours].astype(np.int64)
        if nn.size and (nn.min() < 0 or nn.max() >= n):
            raise ValueError("neighbour indices must be in [0, N).")
        if (nn == np.arange(n)[:, None]).any():
            raise ValueError("a neighbour list contains the anchor itself.")
        if num_neighbours > 1:
            s = np.sort(nn, axis=1)
            if (s[:, 1:] == s[:, :-1]).any():
                raise ValueError("a neighbour list repeats an index.")
        self.neighbours = nn
        self.num_samples = n
        self.batch_size = int(batch_size)
        self.num_neighbours = int(num_neighbours)
        self.shuffle = bool(shuffle)
        self.batches_per_epoch = n if batches_per_epoch is None else int(batches_per_epoch)
        if not 1 <= self.batches_per_epoch:
            raise ValueError("batches_per_epoch must be >= 1.")

    def __len__(self):
        return self.batches_per_epoch

    def _draw(self, rng):
        n, k = self.num_samples, self.num_neighbours
        if self.batches_per_epoch <= n:
            anchors = (rng.permutation(n)[:self.batches_per_epoch] if self.shuffle
                       else np.arange(self.batches_per_epoch))
        else:
            reps = -(-self.batches_per_epoch // n)
            anchors = np.concatenate(
                [rng.permutation(n) if self.shuffle else np.arange(n)
                 for _ in range(reps)])[:self.batches_per_epoch]
        num_random = self.batch_size - 1 - k
        out = np.empty((len(anchors), self.batch_size), np.int64)
        for row, a in enumerate(anchors):
            fixed = np.concatenate([[a], self.neighbours[a]])
            out[row, :k + 1] = fixed
            out[row, k + 1:] = _sample_excluding(rng, n, fixed, num_random)
        return out


class MPerClassSampler(_IndexBatchSampler):
    """Batches of P classes x M samples (for pair/triplet losses on classes).

    Each batch draws ``classes_per_batch = batch_size // m`` distinct classes
    uniformly, then M samples of each (without replacement; with replacement
    for a class with fewer than M samples). Batches are class-major: M
    samples of the first class, then M of the second, ...

    Args:
      labels: int class ids [N].
      m: samples per class in a batch.
      batch_size: a multiple of m, at most m * number of classes.
      batches_per_epoch: default N // batch_size (at least 1).
      seed: random seed.
    """

    def __init__(self, labels, m=4, batch_size=32, batches_per_epoch=None, seed=0):
        super().__init__(seed)
        labels = np.asarray(labels).reshape(-1)
        if labels.size == 0:
            raise ValueError("labels is empty.")
        if m < 1 or batch_size % m:
            raise ValueError(f"batch_size ({batch_size}) must be a positive multiple of m ({m}).")
        classes, inverse = np.unique(labels, return_inverse=True)
        per_batch = batch_size // m
        if per_batch > classes.size:
            raise ValueError(
                f"batch_size / m = {per_batch} classes per batch, but there are "
                f"only {classes.size} classes.")
        order = np.argsort(inverse, kind="stable")
        counts = np.bincount(inverse, minlength=classes.size)
        self.class_indices = np.split(order.astype(np.int64), np.cumsum(counts)[:-1])
        self.classes = classes
        self.m = int(m)
        self.batch_size = int(batch_size)
        self.classes_per_batch = per_batch
        self.batches_per_epoch = (max(1, labels.size // batch_size)
                                  if batches_per_epoch is None else int(batches_per_epoch))

    def __len__(self):
        return self.batches_per_epoch

    def _draw(self, rng):
        out = np.empty((self.batches_per_epoch, self.batch_size), np.int64)
        for row in range(self.batches_per_epoch):
            chosen = rng.choice(self.classes.size, self.classes_per_batch, replace=False)
            for slot, c in enumerate(chosen):
                idx = self.class_indices[c]
                out[row, slot * self.m:(slot + 1) * self.m] = rng.choice(
                    idx, self.m, replace=idx.size < self.m)
        return out
