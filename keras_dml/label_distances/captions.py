"""Caption-set label distance: images compared through their sets of captions.

    D_y(A, B) = sum_{a in A} min_{b in B} d(a, b) + sum_{b in B} min_{a in A} d(b, a)

with d the cosine distance of sentence embeddings (in-batch, TensorFlow) or
the word mover's distance of token sequences (offline, numpy; ``wmd.py``).
"""

import numpy as np
import tensorflow as tf

from keras_dml import ops
from keras_dml.label_distances._tensors import _float_tensor, _nonzero
from keras_dml.label_distances.wmd import word_movers_distance

__all__ = ["caption_set_distance"]


def _set_distance_from_matrix(c):
    """sum_a min_b c[a, b] + sum_b min_a c[a, b] for a caption-pair matrix."""
    return float(c.min(axis=1).sum() + c.min(axis=0).sum())


def _caption_set_wmd(captions1, captions2, word_vectors):
    """Offline path: lists of caption sets, captions as token sequences."""
    self_distances = captions2 is None
    captions2 = captions1 if self_distances else captions2
    for name, sets in (("captions1", captions1), ("captions2", captions2)):
        for i, s in enumerate(sets):
            if len(s) == 0:
                raise ValueError(f"caption_set_distance: {name}[{i}] has no caption.")
    cache = {}

    def wmd(c1, c2):
        key = (tuple(c1), tuple(c2))
        if key not in cache:
            cache[key] = cache[key[::-1]] = word_movers_distance(c1, c2, word_vectors)
        return cache[key]

    out = np.zeros((len(captions1), len(captions2)), np.float64)
    for i, s1 in enumerate(captions1):
        for j, s2 in enumerate(captions2):
            if self_distances and j < i:
                out[i, j] = out[j, i]
                continue
            if self_distances and j == i:
                continue
            c = np.array([[wmd(a, b) for b in s2] for a in s1])
            out[i, j] = _set_distance_from_matrix(c)
    return out


def caption_set_distance(captions1, captions2=None, mask1=None, mask2=None,
                         word_vectors=None):
    """Distance between the caption sets of images, [N1, N2].

    For two images with caption sets A and B (the paper, COCO: 5 captions
    each):

        D_y(A, B) = sum_{a in A} min_{b in B} d(a, b) + sum_{b in B} min_{a in A} d(b, a)

    Caption-to-caption distance d:

    * default: cosine distance ``1 - cos(e_a, e_b)`` between sentence
      embeddings. ``captions`` are float tensors [N, K, E] (K caption slots,
      E the embedding size), computed in-batch with TensorFlow. Missing
      captions: pass a [N, K] mask (nonzero = present); with no mask, caption
      slots whose embedding is all zeros are treated as padding.
    * ``word_vectors`` given: the exact word mover's distance
      (``word_movers_distance``, as in the paper) on the offline path.
      ``captions`` are then Python lists (one per image) of captions, each a
      sequence of tokens; returns numpy float64. Cost: one small linear
      program per pair of distinct captions (cached) -- meant for building
      label distances offline, on modest sets.

    Every image must have at least one caption. The diagonal of a
    within-set matrix is 0.
    """
    if word_vectors is not None:
        if mask1 is not None or mask2 is not None:
            raise ValueError("masks are for embedded captions; with word_vectors "
                             "pass caption lists of varying length instead.")
        return _caption_set_wmd(captions1, captions2, word_vectors)

    self_distances = captions2 is None
    c1 = _float_tensor(captions1, "captions1")
    if c1.shape.rank != 3:
        raise ValueError(
            f"embedded captions must have shape [N, K, E]; got {c1.shape}.")
    c2 = c1 if self_distances else tf.cast(_float_tensor(captions2, "captions2"), c1.dtype)
    if c2.shape.rank != 3:
        raise ValueError(
            f"embedded captions must have shape [N, K, E]; got {c2.shape}.")

    def present(c, mask):
        if mask is None:
            return tf.reduce_any(tf.not_equal(c, 0), axis=-1)
        return _nonzero(mask)

    p1 = present(c1, mask1)
    p2 = p1 if self_distances else present(c2, mask2)
    tf.debugging.assert_equal(
        tf.reduce_all(tf.reduce_any(p1, axis=1)), True,
        message="caption_set_distance: an image has no caption")
    tf.debugging.assert_equal(
        tf.reduce_all(tf.reduce_any(p2, axis=1)), True,
        message="caption_set_distance: an image has no caption")

    n1, k1 = tf.shape(c1)[0], tf.shape(c1)[1]
    n2, k2 = tf.shape(c2)[0], tf.shape(c2)[1]
    e = tf.shape(c1)[2]
    cos = ops.cosine_similarity(tf.reshape(c1, [n1 * k1, e]),
                                tf.reshape(c2, [n2 * k2, e]))
    d = tf.reshape(1.0 - cos, [n1, k1, n2, k2])
    big = tf.constant(np.inf, d.dtype)
    valid = tf.logical_and(p1[:, :, None, None], p2[None, None, :, :])
    dm = tf.where(valid, d, big)
    min12 = tf.reduce_min(dm, axis=3)                      # [N1, K1, N2]
    min21 = tf.reduce_min(dm, axis=1)                      # [N1, N2, K2]
    zeros = tf.zeros_like(min12)
    s12 = tf.reduce_sum(tf.where(p1[:, :, None], min12, zeros), axis=1)
    s21 = tf.reduce_sum(tf.where(p2[None, :, :], min21, tf.zeros_like(min21)), axis=2)
    out = tf.maximum(s12 + s21, 0.0)
    if self_distances:
        out = tf.linalg.set_diag(out, tf.zeros(tf.shape(out)[:1], out.dtype))
    return out
