"""Label distances by name: ``get("squared_l2")`` -> the function, kwargs bound."""

import functools
from typing import Callable, List, Union

from keras_dml.label_distances.captions import caption_set_distance
from keras_dml.label_distances.l1 import l1
from keras_dml.label_distances.layout import one_minus_miou
from keras_dml.label_distances.pose import squared_l2
from keras_dml.registry import Registry

__all__ = ["LABEL_DISTANCES", "available", "get"]

LABEL_DISTANCES = Registry("label distance", {
    "squared_l2": squared_l2,
    "l1": l1,
    "one_minus_miou": one_minus_miou,
    "caption_set": caption_set_distance,
}, aliases={"caption_set_distance": "caption_set"},
    hint=", 'precomputed' (in a loss) or a callable")


def available() -> List[str]:
    """The names ``get`` takes (aliases excluded)."""
    return LABEL_DISTANCES.available()


def get(name: Union[str, Callable], **kwargs) -> Callable:
    """The label distance called ``name`` (kwargs bound), or a callable as is.

    Names: "squared_l2", "l1", "one_minus_miou" (needs ``num_classes``),
    "caption_set" (cosine over embedded captions, or WMD with
    ``word_vectors``).
    """
    if callable(name):
        return functools.partial(name, **kwargs) if kwargs else name
    fn = LABEL_DISTANCES.get(name)
    return functools.partial(fn, **kwargs) if kwargs else fn
