"""Label sets the offline tools slice in chunks, and the chunk-pair callable.

A label set is an array [N, ...], a list (caption sets for WMD), or a tuple
``(values, mask)`` of such, sliced together. Shared by ``offline.py`` and
``neighbours.py``; private to the package.
"""

import functools

import numpy as np
from keras import ops

from keras_dml import _backend
from keras_dml.label_distances.registry import get


def _slice(labels, start, stop):
    """Rows [start, stop) of a label set (both parts of a tuple together)."""
    if isinstance(labels, tuple):
        return tuple(_slice(p, start, stop) for p in labels)
    return labels[start:stop]


def _length(labels):
    """Number of labels N in a label set."""
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
            # The named distances are keras.ops code: float64 chunks stay
            # float64 under JAX too, and the result comes back as numpy.
            with _backend.full_precision():
                d = base(a[0], b[0], a[1], b[1]) if isinstance(a, tuple) else base(a, b)
                return d if isinstance(d, np.ndarray) else ops.convert_to_numpy(d)
        return call
    if fn_kwargs:
        return functools.partial(fn, **fn_kwargs)
    return fn
