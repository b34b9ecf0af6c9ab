"""tf.data pipelines for the benchmarks and tasks, and index-batch samplers.

Loaders (each returns a ``RetrievalData`` of ``Split`` objects whose
``dataset()`` yields ``(uint8 image [H, W, C], label)``):
``load_cub200``, ``load_cars196``, ``load_sop`` (TFDS), ``load_inshop``,
``load_mpii``, ``load_lsun_layout``, ``load_coco_captions``,
``load_fashion_mnist``, ``load_glyphs`` (CJK characters x fonts); the user's own
images: ``load_image_folder`` (``root/<class>/<images>``) and
``load_image_csv``; ``load(name, ...)`` by name. Pipelines:
``make_train_pipeline`` / ``make_eval_pipeline``; transforms in
``keras_dml.data.augment``. Splitting (``keras_dml.data.splits``):
``hold_out_classes``, ``hold_out_examples``, ``random_subset``,
``random_indices``, ``relabel``.

``keras_dml.data.samplers``: label-space batches for continuous labels (an
anchor, its nearest neighbours in label space and random others), the
chunked nearest-neighbour builder, and an M-per-class sampler.
"""

try:
    import tensorflow  # noqa: F401
except ImportError as error:  # tf.data is the whole of this package
    raise ImportError(
        "keras_dml.data builds tf.data pipelines and needs TensorFlow: pip "
        "install tensorflow (the losses, layers, ops and metrics do not)."
    ) from error

from keras_dml.data import (
    augment,  # noqa: F401,E402
    samplers,  # noqa: F401,E402
)
from keras_dml.data.augment import eval_transform, resize_transform, train_transform  # noqa: F401,E402
from keras_dml.data.coco import load_coco_captions  # noqa: F401,E402
from keras_dml.data.core import (  # noqa: F401,E402
    DataNotFoundError,
    RetrievalData,
    Split,
    make_eval_pipeline,
    make_train_pipeline,
)
from keras_dml.data.fashion_mnist import load_fashion_mnist  # noqa: F401,E402
from keras_dml.data.folders import load_image_csv, load_image_folder  # noqa: F401,E402
from keras_dml.data.glyphs import load_glyphs  # noqa: F401,E402
from keras_dml.data.inshop import load_inshop  # noqa: F401,E402
from keras_dml.data.lsun import load_lsun_layout  # noqa: F401,E402
from keras_dml.data.mpii import load_mpii  # noqa: F401,E402
from keras_dml.data.splits import (  # noqa: F401,E402
    hold_out_classes,
    hold_out_examples,
    random_indices,
    random_subset,
    relabel,
)
from keras_dml.data.tfds_benchmarks import load_cars196, load_cub200, load_sop, load_tfds_benchmark  # noqa: F401,E402
from keras_dml.registry import Registry  # noqa: E402

LOADERS = Registry("data set", {
    "cub200": load_cub200, "cars196": load_cars196, "sop": load_sop,
    "inshop": load_inshop, "fashion_mnist": load_fashion_mnist,
    "mpii": load_mpii, "lsun_layout": load_lsun_layout,
    "coco_captions": load_coco_captions, "glyphs": load_glyphs,
}, aliases={"pose": "mpii", "layout": "lsun_layout", "captions": "coco_captions"})


def available():
    """The data set names ``load`` takes (aliases excluded)."""
    return LOADERS.available()


def load(name, *args, **kwargs) -> RetrievalData:
    """The loader called ``name`` (see ``LOADERS``) applied to the args."""
    return LOADERS.get(name)(*args, **kwargs)
