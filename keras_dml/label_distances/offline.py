"""The offline [N1, N2] label-distance matrix of a data set, built in chunks.

    out[i, j] = D_y(labels[i], labels2[j])

computed chunk_size x chunk_size at a time (numpy out, or into a memmap).
"""

import numpy as np

from keras_dml.label_distances._label_sets import _as_compute, _length, _resolve_offline, _slice

__all__ = ["pairwise_label_distances"]


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
