"""What a data set's labels need beyond the recipe: a :class:`Task`.

    task = kd.training.task_for(data)          # from data.label_type
    task = kd.training.Task(continuous=True, label_distance="squared_l2")
"""

import dataclasses
from typing import TYPE_CHECKING, Callable, Dict, Optional

import numpy as np

from keras_dml._types import TensorLike
from keras_dml.registry import Registry

if TYPE_CHECKING:    # kd.data imports TensorFlow; a task needs only its name here
    from keras_dml.data.core import RetrievalData


def _pose_transforms(recipe):
    from keras_dml.data import mpii
    return (mpii.pose_train_transform(recipe.image_size, seed=recipe.seed),
            mpii.pose_eval_transform(recipe.image_size))


def _whole_frame(recipe):
    # A room layout is tied to the whole frame: resize, no crop or flip.
    from keras_dml.data import augment
    whole = augment.resize_transform(recipe.image_size)
    return whole, whole


def _glyph_transforms(recipe):
    # Drawn characters: stroke-width jitter and a small affine map; no flip or
    # crop (a mirrored or cut character can be another one).
    from keras_dml.data import glyphs
    return glyphs.transforms(recipe.image_size, seed=recipe.seed)


@dataclasses.dataclass(frozen=True)
class Task:
    """What a data set's labels need beyond the recipe.

    Attributes:
      continuous: float label vectors (continuous losses, nDCG metrics)
        rather than class ids.
      label_distance, label_distance_kwargs: a ``kd.label_distances`` name
        and its arguments (continuous tasks).
      metric: how embeddings are compared, "euclidean" or "cosine"
        (continuous metrics and the retrieval grid).
      transforms: ``recipe -> (train transform, eval transform)``; None for
        the default random-resized-crop / centre-crop pair.
    """

    continuous: bool = False
    label_distance: Optional[str] = None
    label_distance_kwargs: Optional[dict] = None
    metric: str = "euclidean"
    transforms: Optional[Callable] = None

    def label_distance_args(self) -> Dict[str, object]:
        """``label_distance=`` and ``label_distance_kwargs=`` as the
        continuous losses, metrics and callbacks take them."""
        return {"label_distance": self.label_distance,
                "label_distance_kwargs": self.label_distance_kwargs or None}

    def label_neighbours(self, labels: TensorLike, k: int) -> np.ndarray:
        """[N, k] nearest in label space of every item (itself excluded)."""
        from keras_dml import label_distances
        neighbours, _ = label_distances.nearest_neighbours(
            labels, k=k, distance=self.label_distance, chunk_size=2048,
            **(self.label_distance_kwargs or {}))
        return neighbours


# By ``data.label_type``.
TASKS: Registry[Task] = Registry("task (label_type)", {
    "class": Task(),
    # Class labels (CJK characters, kd.data.load_glyphs) with the glyph transforms.
    "glyph": Task(transforms=_glyph_transforms),
    "pose": Task(True, "squared_l2", transforms=_pose_transforms),
    "layout": Task(True, "one_minus_miou", {"num_classes": 5}, transforms=_whole_frame),
    "caption": Task(True, "caption_set"),
}, hint="; pass task=Task(...) for another")


def task_for(data: "RetrievalData") -> Task:
    """The :class:`Task` of ``data.label_type`` (see ``TASKS``)."""
    return TASKS.get(data.label_type)
