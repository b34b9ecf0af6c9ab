"""Caption-set label distance: images compared through their sets of captions.

    D_y(A, B) = sum_{a in A} min_{b in B} d(a, b) + sum_{b in B} min_{a in A} d(b, a)

with d the cosine distance of sentence embeddings (in-batch, ``keras.ops``) or
the word mover's distance of token sequences (offline, numpy; ``wmd.py``).
"""

import numpy as np
from keras import ops

from keras_dml import _backend
from keras_dml import ops as kd_ops
from keras_dml.label_distances._tensors import _float_tensor, _nonzero, _rank, _set_zero_diagonal
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
      E the embedding size), computed in-batch with ``keras.ops`` (any
      backend). Missing
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
    if _rank(c1) != 3:
        raise ValueError(
            f"embedded captions must have shape [N, K, E]; got {tuple(c1.shape)}.")
    c2 = c1 if self_distances else ops.cast(_float_tensor(captions2, "captions2"), c1.dtype)
    if _rank(c2) != 3:
        raise ValueError(
            f"embedded captions must have shape [N, K, E]; got {tuple(c2.shape)}.")

    def present(c, mask):
        if mask is None:
            return ops.any(ops.not_equal(c, ops.zeros_like(c)), axis=-1)
        return _nonzero(mask)

    p1 = present(c1, mask1)
    p2 = p1 if self_distances else present(c2, mask2)
    ok1 = _backend.check(ops.any(p1, axis=1), "caption_set_distance: an image has no caption")
    ok2 = _backend.check(ops.any(p2, axis=1), "caption_set_distance: an image has no caption")

    n1, k1, e = ops.shape(c1)
    n2, k2 = ops.shape(c2)[0], ops.shape(c2)[1]
    cos = kd_ops.cosine_similarity(ops.reshape(c1, (n1 * k1, e)),
                                   ops.reshape(c2, (n2 * k2, e)))
    d = ops.reshape(1.0 - cos, (n1, k1, n2, k2))
    valid = ops.logical_and(p1[:, :, None, None], p2[None, None, :, :])
    dm = ops.where(valid, d, ops.full_like(d, float("inf")))
    min12 = ops.min(dm, axis=3)                      # [N1, K1, N2]
    min21 = ops.min(dm, axis=1)                      # [N1, N2, K2]
    s12 = ops.sum(ops.where(p1[:, :, None], min12, ops.zeros_like(min12)), axis=1)
    s21 = ops.sum(ops.where(p2[None, :, :], min21, ops.zeros_like(min21)), axis=2)
    out = ops.maximum(s12 + s21, ops.zeros_like(s12))
    if self_distances:
        out = _set_zero_diagonal(out)
    # Where the checks cannot raise (jit), an image without caption gives
    # NaN distances, never a silent number.
    return _backend.nan_unless(ops.logical_and(ok1, ok2), out)
