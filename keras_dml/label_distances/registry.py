"""Label distances by name: ``get("squared_l2")`` -> the function, kwargs bound."""

import functools

from keras_dml.label_distances.captions import caption_set_distance
from keras_dml.label_distances.l1 import l1
from keras_dml.label_distances.layout import one_minus_miou
from keras_dml.label_distances.pose import squared_l2

__all__ = ["get"]

_REGISTRY = {
    "squared_l2": squared_l2,
    "l1": l1,
    "one_minus_miou": one_minus_miou,
    "caption_set": caption_set_distance,
    "caption_set_distance": caption_set_distance,
}


def get(name, **kwargs):
    """The label distance called ``name`` (kwargs bound), or a callable as is.

    Names: "squared_l2", "l1", "one_minus_miou" (needs ``num_classes``),
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
