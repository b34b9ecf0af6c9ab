"""Label distances D_y for continuous labels (Kim et al., CVPR 2019).

Each distance ``fn(x1, x2=None, mask1=None, mask2=None, **kwargs)`` takes two
batches of labels and returns the [N1, N2] matrix of distances (within ``x1``
when ``x2`` is None, with an exactly zero diagonal). They work

* **in-batch**, on the Keras backend's tensors (``keras.ops``), inside a loss (``LogRatioLoss`` and the
  triplet losses call them on ``y_true`` through ``batch_label_distances``),
  vectorised, no Python loops;
* **offline**, over a whole data set, through ``pairwise_label_distances``
  (a chunked builder that returns numpy) and ``nearest_neighbours`` (the
  label-space neighbour lists of ``keras_dml.data.samplers``).

Modules, one concept each:

``pose``       ``squared_l2``: pose vectors (joint coordinates), optional
               visibility mask
``l1``         ``l1``: label vectors (ages, angles, ...), the sum of absolute
               differences (Rank-N-Contrast's label distance)
``layout``     ``one_minus_miou``: room layouts, integer segmentation maps
               [N, H, W]
``captions``   ``caption_set_distance``: caption sets, the symmetric sum of
               minimum caption-to-caption distances, over cosine distances of
               sentence embeddings or over the word mover's distance
``wmd``        ``word_movers_distance``: the exact WMD (a small linear
               program), for the caption sets when word vectors are given
``registry``   ``get``: a distance by name, kwargs bound
``batch``      ``batch_label_distances``: the checked [B, B] matrix of a loss'
               ``y_true`` (labels or precomputed)
``offline``    ``pairwise_label_distances``: the chunked [N1, N2] builder
``neighbours`` ``nearest_neighbours``: the k nearest labels of every label,
               chunked, never an N x N matrix

All pairwise Euclidean / cosine work goes through ``keras_dml.ops``.
"""

from keras_dml.label_distances.batch import batch_label_distances
from keras_dml.label_distances.captions import caption_set_distance
from keras_dml.label_distances.l1 import l1
from keras_dml.label_distances.layout import one_minus_miou
from keras_dml.label_distances.neighbours import nearest_neighbours
from keras_dml.label_distances.offline import pairwise_label_distances
from keras_dml.label_distances.pose import squared_l2
from keras_dml.label_distances.registry import LABEL_DISTANCES, available, get
from keras_dml.label_distances.wmd import word_movers_distance

__all__ = [
    "squared_l2", "l1", "one_minus_miou", "caption_set_distance",
    "word_movers_distance", "pairwise_label_distances", "LABEL_DISTANCES", "available", "get",
    "batch_label_distances", "nearest_neighbours",
]
