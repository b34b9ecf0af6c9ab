"""Label distances D_y for continuous labels (Kim et al., CVPR 2019).

Each distance ``fn(x1, x2=None, mask1=None, mask2=None, **kwargs)`` takes two
batches of labels and returns the [N1, N2] matrix of distances (within ``x1``
when ``x2`` is None, with an exactly zero diagonal). They work

* **in-batch**, on TensorFlow tensors, inside a loss (``LogRatioLoss`` and the
  triplet losses call them on ``y_true``), vectorised, no Python loops;
* **offline**, over a whole data set, through ``pairwise_label_distances``
  (a chunked builder that returns numpy) and
  ``keras_dml.data.samplers.nearest_neighbours``.

Distances provided:

``squared_l2``      pose vectors (joint coordinates), optional visibility mask
``one_minus_miou``  room layouts: integer segmentation maps [N, H, W]
``caption_set_distance``
                    caption sets: the symmetric sum of minimum caption-to-
                    caption distances, over cosine distances of sentence
                    embeddings, or over the exact word mover's distance
                    (``word_movers_distance``, a small linear program) when
                    word vectors are given.

All pairwise Euclidean / cosine work goes through ``keras_dml.ops``.
"""

import functools
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from keras_dml import ops

__all__ = [
    "squared_l2", "one_minus_miou", "caption_set_distance",
    "word_movers_distance", "pairwise_label_distances", "get",
    "batch_label_distances",
]


def _nonzero(x):
    """Boolean ``x != 0`` for bool, int or float masks."""
    x = tf.convert_to_tensor(x)
    if x.dtype == tf.bool:
        return x
    return tf.not_equal(x, tf.zeros_like(x))


def _float_tensor(x, name):
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    return x


# --------------------------------------------------------------------------
# Pose: squared L2 with optional visibility
# --------------------------------------------------------------------------

def _expand_visibility(visibility, num_coords, dtype, name):
    """Per-joint [N, J] or per-coordinate [N, L] visibility -> [N, L] in dtype."""
    v = tf.convert_to_tensor(visibility)
    if v.shape.rank != 2:
        raise ValueError(f"{name} must have shape [N, J] or [N, L]; got {v.shape}.")
    v = tf.cast(_nonzero(v), dtype)
    width = v.shape[1]
    if width is None:
        raise ValueError(f"The width of {name} must be known.")
    if width != num_coords:
        if width == 0 or num_coords % width:
            raise ValueError(
                f"{name} has {width} columns; it must have one per coordinate "
                f"({num_coords}) or one per joint (a divisor of {num_coords}).")
        v = tf.repeat(v, num_coords // width, axis=1)   # joint-major layout
    return v


def squared_l2(y1, y2=None, visibility=None, visibility2=None,
               no_overlap_value=None):
    """Squared Euclidean distances between label vectors, [N1, N2].

        D_y(i, j) = sum_k (y_ik - y_jk)^2

    With a visibility mask (missing joints), only the coordinates visible in
    *both* labels count, and the sum is rescaled to the full length L:

        D_y(i, j) = L / n_ij * sum_k v_ik v_jk (y_ik - y_jk)^2,
        n_ij = sum_k v_ik v_jk   (number of jointly visible coordinates)

    so that a pair seen through fewer joints is not made artificially close;
    with every coordinate visible it is the plain squared L2. Coordinates of
    invisible joints are never read (they may be garbage or NaN).

    Args:
      y1: [N1, L] (or [N1] for scalar labels) float labels.
      y2: [N2, L] labels, or None for distances within ``y1``.
      visibility: [N1, L] per-coordinate or [N1, J] per-joint mask (nonzero =
        visible), with L a multiple of J and coordinates laid out joint-major
        (x_1, y_1, x_2, y_2, ...). Only with ``visibility``: ``visibility2``
        for ``y2`` (defaults to ``visibility`` when ``y2`` is None, to all
        visible otherwise).
      no_overlap_value: distance given to a pair with no jointly visible
        coordinate. None (default): such a pair is an error.
    Returns:
      [N1, N2] tensor, in the float dtype of ``y1`` (float32 for int input).
    """
    self_distances = y2 is None
    y1 = _float_tensor(y1, "y1")
    if y1.shape.rank == 1:
        y1 = y1[:, None]
    if y1.shape.rank != 2:
        raise ValueError(f"pose labels must have shape [N, L]; got {y1.shape}.")
    if self_distances:
        y2 = y1
    else:
        y2 = tf.cast(_float_tensor(y2, "y2"), y1.dtype)
        if y2.shape.rank == 1:
            y2 = y2[:, None]
    if visibility is None and visibility2 is None:
        # Distances are translation invariant: centring first keeps the
        # |y1|^2 + |y2|^2 - 2 y1.y2 form from cancelling catastrophically.
        center = tf.reduce_mean(y1, axis=0, keepdims=True)
        if self_distances:
            return ops.pairwise_squared_distances(y1 - center)
        return ops.pairwise_squared_distances(y1 - center, y2 - center)

    num_coords = y1.shape[1]
    v1 = (tf.ones_like(y1) if visibility is None else
          _expand_visibility(visibility, num_coords, y1.dtype, "visibility"))
    if self_distances:
        v2 = v1
    elif visibility2 is None:
        v2 = tf.ones_like(y2)
    else:
        v2 = _expand_visibility(visibility2, num_coords, y1.dtype, "visibility2")
    # Zero the invisible coordinates (tf.where also drops NaN placeholders).
    y1m = tf.where(v1 > 0, y1, tf.zeros_like(y1))
    y2m = tf.where(v2 > 0, y2, tf.zeros_like(y2))
    count1 = tf.reduce_sum(v1, axis=0, keepdims=True)
    center = tf.math.divide_no_nan(tf.reduce_sum(y1m, axis=0, keepdims=True), count1)
    y1m = (y1m - center) * v1
    y2m = (y2m - center) * v2
    # sum_k v1 v2 (y1 - y2)^2 = (v1 y1^2) v2^T + v1 (v2 y2^2)^T - 2 (v1 y1)(v2 y2)^T
    s = (tf.matmul(tf.square(y1m), v2, transpose_b=True)
         + tf.matmul(v1, tf.square(y2m), transpose_b=True)
         - 2.0 * tf.matmul(y1m, y2m, transpose_b=True))
    s = tf.maximum(s, 0.0)
    n = tf.matmul(v1, v2, transpose_b=True)
    has_overlap = n > 0
    if no_overlap_value is None:
        tf.debugging.assert_equal(
            tf.reduce_all(has_overlap), True,
            message="squared_l2: a pair of labels has no jointly visible "
                    "coordinate; pass no_overlap_value= to give such pairs a "
                    "distance")
        fill = tf.zeros_like(s)
    else:
        fill = tf.fill(tf.shape(s), tf.cast(no_overlap_value, s.dtype))
    d = tf.where(has_overlap,
                 tf.cast(num_coords, s.dtype) * tf.math.divide_no_nan(s, n), fill)
    if self_distances:
        d = tf.linalg.set_diag(d, tf.where(tf.linalg.diag_part(has_overlap),
                                           tf.zeros_like(tf.linalg.diag_part(d)),
                                           tf.linalg.diag_part(d)))
    return d


# --------------------------------------------------------------------------
# Layout: 1 - mIoU of segmentation maps
# --------------------------------------------------------------------------

def one_minus_miou(maps1, maps2=None, num_classes=None, mask1=None, mask2=None):
    """``1 - mIoU`` between integer segmentation maps, [N1, N2].

        IoU_c(A, B) = |{A = c} & {B = c}| / |{A = c} | {B = c}|
        mIoU(A, B)  = mean of IoU_c over the classes c present in A or in B
        D_y(A, B)   = 1 - mIoU(A, B)

    Pixels whose value is outside [0, num_classes) (e.g. an ignore label 255
    or -1), or where a mask is 0, belong to no class and are ignored. Two maps
    with no class present at all are at distance 0.

    Args:
      maps1: [N1, H, W] integer class maps (floats holding whole numbers are
        accepted: Keras casts ``y_true`` to float).
      maps2: [N2, H, W] maps or None (within ``maps1``).
      num_classes: the number of layout classes (required).
      mask1, mask2: optional [N, H, W] pixel masks (nonzero = used).
    Returns:
      [N1, N2] float32 tensor in [0, 1].
    """
    if num_classes is None or int(num_classes) < 1:
        raise ValueError("one_minus_miou needs num_classes >= 1.")
    num_classes = int(num_classes)

    def one_hot(maps, mask, name):
        maps = tf.convert_to_tensor(maps)
        if maps.shape.rank == 2:           # a single map [H, W] is refused
            raise ValueError(f"{name} must be a batch of maps [N, H, W]; got {maps.shape}.")
        if maps.shape.rank != 3:
            raise ValueError(f"{name} must have shape [N, H, W]; got {maps.shape}.")
        if maps.dtype.is_floating:
            maps = tf.cast(tf.round(maps), tf.int32)
        else:
            maps = tf.cast(maps, tf.int32)
        flat = tf.reshape(maps, [tf.shape(maps)[0], -1])
        oh = tf.one_hot(flat, num_classes, dtype=tf.float32)    # [N, P, C]; out of range -> 0
        if mask is not None:
            m = tf.reshape(tf.cast(_nonzero(mask), tf.float32),
                           [tf.shape(maps)[0], -1])
            oh = oh * m[:, :, None]
        return oh

    self_distances = maps2 is None
    a = one_hot(maps1, mask1, "maps1")
    b = a if self_distances else one_hot(maps2, mask2, "maps2")
    # Per-class intersections as a batched matmul over classes: [C, N1, N2].
    at = tf.transpose(a, [2, 0, 1])
    bt = tf.transpose(b, [2, 0, 1])
    inter = tf.matmul(at, bt, transpose_b=True)
    area1 = tf.reduce_sum(at, axis=2)                    # [C, N1]
    area2 = tf.reduce_sum(bt, axis=2)                    # [C, N2]
    union = area1[:, :, None] + area2[:, None, :] - inter
    present = tf.cast(union > 0, tf.float32)
    iou = tf.math.divide_no_nan(inter, union)
    n_present = tf.reduce_sum(present, axis=0)
    miou = tf.math.divide_no_nan(tf.reduce_sum(iou * present, axis=0), n_present)
    d = tf.where(n_present > 0, 1.0 - miou, tf.zeros_like(miou))
    if self_distances:
        d = tf.linalg.set_diag(d, tf.zeros(tf.shape(d)[:1], d.dtype))
    return d


# --------------------------------------------------------------------------
# Captions: set distance over cosine distances or word mover's distance
# --------------------------------------------------------------------------

def _word_vector(word_vectors, token):
    if isinstance(word_vectors, Mapping):
        return word_vectors.get(token)
    if isinstance(token, (int, np.integer)) and 0 <= token < len(word_vectors):
        return word_vectors[token]
    return None


def word_movers_distance(doc1, doc2, word_vectors, return_flow=False):
    """Exact word mover's distance (Kusner et al., 2015) by linear programming.

        WMD(d, d') = min_{T >= 0} sum_{u, v} T_uv ||x_u - x_v||
                     s.t. sum_v T_uv = w_u,  sum_u T_uv = w'_v

    where w, w' are the normalised bag-of-words weights (word counts / number
    of words) of the two documents and x_u the word vectors. Solved exactly
    with ``scipy.optimize.linprog`` (HiGHS). Tokens with no vector are
    dropped, as in gensim; a document left empty is an error.

    Args:
      doc1, doc2: sequences of tokens (strings, or ints indexing an array).
      word_vectors: a mapping token -> vector, or an array [V, E] indexed by
        integer tokens.
      return_flow: also return (tokens1, tokens2, T).
    Returns:
      The distance (float), or (distance, (tokens1, tokens2, T)).
    """
    from scipy.optimize import linprog

    def bow(doc, name):
        counts = {}
        for tok in doc:
            if _word_vector(word_vectors, tok) is not None:
                counts[tok] = counts.get(tok, 0) + 1
        if not counts:
            raise ValueError(f"word_movers_distance: {name} has no token with a word vector.")
        toks = list(counts)
        w = np.array([counts[t] for t in toks], np.float64)
        vecs = np.stack([np.asarray(_word_vector(word_vectors, t), np.float64) for t in toks])
        return toks, w / w.sum(), vecs

    t1, w1, x1 = bow(doc1, "doc1")
    t2, w2, x2 = bow(doc2, "doc2")
    cost = np.sqrt(np.maximum(
        ((x1[:, None, :] - x2[None, :, :]) ** 2).sum(-1), 0.0))
    n1, n2 = len(t1), len(t2)
    a_eq = np.zeros((n1 + n2, n1 * n2))
    for u in range(n1):
        a_eq[u, u * n2:(u + 1) * n2] = 1.0          # row sums: T[u, :] = w1[u]
    for v in range(n2):
        a_eq[n1 + v, v::n2] = 1.0                   # column sums: T[:, v] = w2[v]
    b_eq = np.concatenate([w1, w2])
    res = linprog(cost.ravel(), A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    if res.status != 0:
        raise RuntimeError(f"word_movers_distance: linear program failed: {res.message}")
    dist = max(float(res.fun), 0.0)
    if return_flow:
        return dist, (t1, t2, res.x.reshape(n1, n2))
    return dist


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


# --------------------------------------------------------------------------
# Registry, in-batch helper for the losses, offline builder
# --------------------------------------------------------------------------

_REGISTRY = {
    "squared_l2": squared_l2,
    "one_minus_miou": one_minus_miou,
    "caption_set": caption_set_distance,
    "caption_set_distance": caption_set_distance,
}


def get(name, **kwargs):
    """The label distance called ``name`` (kwargs bound), or a callable as is.

    Names: "squared_l2", "one_minus_miou" (needs ``num_classes``),
    "caption_set" (cosine over embedded captions, or WMD with
    ``word_vectors``).
    """
    if callable(name):
        return functools.partial(name, **kwargs) if kwargs else name
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown label distance {name!r}; expected one of "
            f"{sorted(_REGISTRY)}, 'precomputed' (in a loss) or a callable.")
    fn = _REGISTRY[name]
    return functools.partial(fn, **kwargs) if kwargs else fn


def batch_label_distances(y_true, label_distance="squared_l2", batch_size=None,
                          first_row_only=False, label_distance_kwargs=None,
                          name="loss"):
    """Label distances of a batch for a continuous-label loss.

    Args:
      y_true: the loss' ``y_true``: labels [B, ...] for a named/callable
        distance, or with ``label_distance="precomputed"`` a [B, B] matrix
        (with ``first_row_only`` also a [B] vector of D_y(0, i)).
      label_distance: a name (see ``get``), "precomputed" or a callable
        ``fn(y1, y2=None) -> [N1, N2]``.
      batch_size: B as a scalar tensor/int (from the embeddings), to check.
      first_row_only: return only the anchor row 0, shape [1, B].
    Returns:
      [B, B] (or [1, B]) float tensor, checked finite and non-negative.
    """
    kwargs = dict(label_distance_kwargs or {})
    if label_distance == "precomputed":
        dy = tf.convert_to_tensor(y_true)
        if first_row_only and dy.shape.rank == 1:
            dy = dy[None, :]
        elif first_row_only and dy.shape.rank == 2 and dy.shape[1] == 1:
            dy = tf.transpose(dy)
        elif dy.shape.rank != 2:
            raise ValueError(
                f"{name}: with label_distance='precomputed', y_true must be a "
                f"[B, B] label-distance matrix; got shape {dy.shape}.")
        else:
            if dy.shape[0] is not None and dy.shape[1] is not None and dy.shape[0] != dy.shape[1]:
                raise ValueError(
                    f"{name}: precomputed label distances must be square [B, B]; "
                    f"got shape {dy.shape}.")
            if batch_size is not None:
                tf.debugging.assert_equal(
                    tf.shape(dy), tf.fill([2], tf.cast(batch_size, tf.int32)),
                    message=f"{name}: the precomputed label-distance matrix "
                            "does not match the batch size of y_pred")
            if first_row_only:
                dy = dy[:1]
    else:
        fn = get(label_distance, **kwargs)
        y = tf.convert_to_tensor(y_true)
        if y.dtype.is_floating:
            tf.debugging.assert_all_finite(
                y, message=f"{name}: y_true (labels) contains NaN or Inf")
        if batch_size is not None:
            tf.debugging.assert_equal(
                tf.shape(y)[0], tf.cast(batch_size, tf.int32),
                message=f"{name}: labels and embeddings have different batch sizes")
        dy = fn(y[:1], y) if first_row_only else fn(y)
        dy = tf.convert_to_tensor(dy)
    if not dy.dtype.is_floating:
        dy = tf.cast(dy, tf.float32)
    tf.debugging.assert_all_finite(
        dy, message=f"{name}: label distances contain NaN or Inf")
    tf.debugging.assert_non_negative(
        dy, message=f"{name}: label distances must be >= 0")
    return dy


def _slice(labels, start, stop):
    if isinstance(labels, tuple):
        return tuple(_slice(p, start, stop) for p in labels)
    return labels[start:stop]


def _length(labels):
    if isinstance(labels, tuple):
        return len(labels[0])
    return len(labels)


def _as_compute(labels, compute_dtype):
    """numpy float arrays -> compute_dtype (float64 for exact offline work)."""
    if isinstance(labels, tuple):
        return tuple(_as_compute(p, compute_dtype) for p in labels)
    if isinstance(labels, np.ndarray) and np.issubdtype(labels.dtype, np.floating):
        return labels.astype(compute_dtype, copy=False)
    return labels


def _resolve_offline(fn, fn_kwargs):
    """A callable (a, b) -> [na, nb] array for the offline builders.

    Named distances take tuple labels as (values, mask): ``fn(x1, x2, mask1,
    mask2)``; user callables get the two chunks as they are.
    """
    if isinstance(fn, str):
        base = get(fn, **fn_kwargs)

        def call(a, b):
            if isinstance(a, tuple):
                return base(a[0], b[0], a[1], b[1])
            return base(a, b)
        return call
    if fn_kwargs:
        return functools.partial(fn, **fn_kwargs)
    return fn


def pairwise_label_distances(labels, fn="squared_l2", chunk_size=1024,
                             labels2=None, out=None, dtype=np.float32,
                             compute_dtype=np.float64, **fn_kwargs):
    """Offline [N1, N2] label-distance matrix, computed in chunks (numpy out).

    Only ``chunk_size x chunk_size`` distances are computed at a time; write
    into ``out`` (e.g. an ``np.memmap``) to keep even the result out of RAM.
    Float labels are computed in ``compute_dtype`` (float64) and stored as
    ``dtype``. With ``labels2=None`` the matrix is within ``labels``: it is
    assumed symmetric (every distance here is), only the upper blocks are
    computed, and the diagonal is set to 0.

    Args:
      labels: [N1, ...] array, a list (caption sets for WMD), or a tuple
        ``(values, mask)`` of arrays sliced together (e.g. poses and
        visibility for ``squared_l2``).
      fn: a name from ``get`` or a callable ``fn(a, b) -> [na, nb]``.
      **fn_kwargs: bound into ``fn`` (e.g. ``num_classes=5``,
        ``word_vectors=...``).
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1.")
    call = _resolve_offline(fn, fn_kwargs)
    symmetric = labels2 is None
    labels = _as_compute(labels, compute_dtype)
    labels2 = labels if symmetric else _as_compute(labels2, compute_dtype)
    n1, n2 = _length(labels), _length(labels2)
    if out is None:
        out = np.empty((n1, n2), dtype)
    elif out.shape != (n1, n2):
        raise ValueError(f"out has shape {out.shape}; expected {(n1, n2)}.")
    for i0 in range(0, n1, chunk_size):
        i1 = min(i0 + chunk_size, n1)
        a = _slice(labels, i0, i1)
        for j0 in range(i0 if symmetric else 0, n2, chunk_size):
            j1 = min(j0 + chunk_size, n2)
            block = np.asarray(call(a, _slice(labels2, j0, j1)))
            if block.shape != (i1 - i0, j1 - j0):
                raise ValueError(
                    f"label distance returned shape {block.shape} for chunks of "
                    f"{i1 - i0} and {j1 - j0} labels.")
            out[i0:i1, j0:j1] = block
            if symmetric and j0 != i0:
                out[j0:j1, i0:i1] = block.T
    if symmetric:
        np.fill_diagonal(out, 0)
    return out
