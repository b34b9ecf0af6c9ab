"""The table of apps: name -> what it loads and which recipe it starts from.

An app's training recipe is its packaged flagfile (``keras_dml/flags/``),
never written here; an app only says how to load its data (from its flags)
and which extra flags that needs.
"""

import dataclasses
import os
from typing import Callable, Optional

from absl import flags


@dataclasses.dataclass(frozen=True)
class App:
    """One command-line app.

    Attributes:
      summary: one line for ``keras-dml --help``.
      recipe: its default packaged recipe, without the app prefix.
      load: ``FLAGS -> kd.data.RetrievalData``.
      data_dir: what ``--data_dir`` must point to when it is required (None:
        optional, e.g. a TFDS data_dir).
      define_flags: defines the app's own data flags (or None).
      data_dir_help: the help of an optional ``--data_dir`` (default: a TFDS
        data_dir).
    """

    summary: str
    recipe: str
    load: Callable
    data_dir: Optional[str] = None
    define_flags: Optional[Callable] = None
    data_dir_help: str = "TFDS data_dir."


def _download_flag():
    flags.DEFINE_boolean("download", False, "Let TFDS download and prepare the data.")


def _fashion_flags():
    from keras_dml.data.fashion_mnist import DEBIAN_DIR
    flags.DEFINE_string("fashion_mnist_dir", DEBIAN_DIR,
                        "Folder of the idx .gz files (Debian dataset-fashion-mnist); "
                        "--data_dir sets it too.")
    flags.DEFINE_enum("source", "auto", ["auto", "files", "tfds"],
                      "Read the idx files, TFDS, or whichever is available.")
    _download_flag()


def _caption_flags():
    flags.DEFINE_integer("max_train_images", None, "Subset of train2014 images.")
    flags.DEFINE_integer("max_test_images", 2000, "Subset of val2014 images (test).")


def _glyph_flags():
    flags.DEFINE_integer("glyph_classes", 2400, "Characters (classes) of the glyph benchmark: "
                         "half train (10% of those held out for validation), half unseen test.")
    flags.DEFINE_integer("glyph_min_designs", 15, "Distinct font designs every character needs.")
    flags.DEFINE_list("glyph_fonts", None, "Font files to draw with (default: every CJK font "
                      "under /usr/share/fonts).")


def _glyphs(F):
    from absl import app as absl_app

    import keras_dml as kd
    try:
        # Rendered at the training size: no resampling in the pipeline.
        return kd.data.load_glyphs(image_size=F.image_size, seed=F.seed,
                                   num_classes=F.glyph_classes,
                                   min_designs=F.glyph_min_designs, fonts=F.glyph_fonts,
                                   min_train_classes=0, min_test_classes=0, verbose=True)
    except kd.data.DataNotFoundError as err:   # no fonts: say which packages, no traceback
        raise absl_app.UsageError(str(err)) from None


def _tfds(loader):
    def load(F):
        import keras_dml as kd
        return getattr(kd.data, loader)(data_dir=F.data_dir, download=F.download)
    return load


def _folder(loader):
    def load(F):
        import keras_dml as kd
        return getattr(kd.data, loader)(F.data_dir)
    return load


def fashion_mnist_sources(F):
    """``load_fashion_mnist``'s (root, source, TFDS data_dir) from the flags.

    ``--data_dir`` is honoured, never ignored: with ``--source=tfds`` it is
    TFDS's data_dir; otherwise it is the folder of the idx files, and a
    folder without them is refused (DataNotFoundError) rather than silently
    replaced by the Debian copy.
    """
    from keras_dml.data.core import DataNotFoundError
    from keras_dml.data.fashion_mnist import DEBIAN_DIR, FILES
    if F.source == "tfds" or not F.data_dir:
        return F.fashion_mnist_dir, F.source, F.data_dir
    if F.fashion_mnist_dir not in (DEBIAN_DIR, F.data_dir):
        raise DataNotFoundError(
            f"--data_dir={F.data_dir} and --fashion_mnist_dir={F.fashion_mnist_dir} "
            "name two different folders; give one.")
    wanted = [f for pair in FILES.values() for f in pair]
    missing = [f for f in wanted if not os.path.isfile(os.path.join(F.data_dir, f))]
    if missing:
        raise DataNotFoundError(
            f"--data_dir={F.data_dir} has no Fashion-MNIST idx files ({', '.join(missing)} "
            f"missing). Point it at a folder holding {', '.join(wanted)} (the Debian copy: "
            f"{DEBIAN_DIR}), or pass --source=tfds to use it as a TFDS data_dir.")
    return F.data_dir, "files", None


def _fashion_mnist(F):
    import keras_dml as kd
    root, source, data_dir = fashion_mnist_sources(F)
    return kd.data.load_fashion_mnist(root=root, source=source, data_dir=data_dir,
                                      download=F.download)


def _captions(F):
    import keras_dml as kd
    return kd.data.load_coco_captions(F.data_dir, max_train_images=F.max_train_images,
                                      max_test_images=F.max_test_images, seed=F.seed)


def _own_images_flags():
    flags.DEFINE_float("test_classes", 0.5, "Root/<class> layout: fraction of the classes "
                       "held out as the class-disjoint test split.")
    flags.DEFINE_enum("split", "classes", ["classes", "examples"],
                      "Test split of a root/<class> layout: whole classes (the "
                      "metric-learning protocol) or a fraction of every class's images.")
    flags.DEFINE_float("test_examples", 0.5, "--split=examples: fraction of each class's "
                       "images in test.")
    flags.DEFINE_enum("on_corrupt", "pipeline", ["pipeline", "skip", "raise"],
                      "Unreadable images: stop when training meets one (pipeline), or decode "
                      "every image before training and drop (skip) or refuse (raise) them.")
    flags.DEFINE_string("root", None, "CSV: folder relative paths are relative to "
                        "(default the CSV's folder).")
    flags.DEFINE_string("image_column", "path", "CSV column of the image paths.")
    flags.DEFINE_string("label_column", "label", "CSV column of the class names.")
    flags.DEFINE_string("split_column", None, "CSV column of train/test/val (optional).")


def _own_images(F):
    import os

    import keras_dml as kd
    common = dict(test_classes=F.test_classes, seed=F.seed, split=F.split,
                  test_examples=F.test_examples,
                  on_corrupt=None if F.on_corrupt == "pipeline" else F.on_corrupt)
    if os.path.isfile(F.data_dir):
        return kd.data.load_image_csv(F.data_dir, root=F.root, image_column=F.image_column,
                                      label_column=F.label_column,
                                      split_column=F.split_column, **common)
    return kd.data.load_image_folder(F.data_dir, **common)


APPS = {
    "train": App(
        "Your own images: train on a folder (ROOT/<class>/<images>, or ROOT/train|test/...) "
        "or a CSV (path,label[,split]); writes metrics, plots, saved_model/ and index/.",
        "proxy_anchor", _own_images,
        data_dir="a folder of class folders (ROOT/<class>/<images> or "
                 "ROOT/train|test/<class>/...) or a CSV file (path,label[,split] columns)",
        define_flags=_own_images_flags),
    "fashion_mnist": App(
        "Offline demo: Proxy Anchor on Fashion-MNIST, train on classes 0-4, test on the "
        "unseen 5-9 (Debian dataset-fashion-mnist, or TFDS).",
        "proxy_anchor", _fashion_mnist, define_flags=_fashion_flags,
        data_dir_help="Folder of the Fashion-MNIST idx .gz files (default: the Debian "
                      "copy); with --source=tfds, a TFDS data_dir."),
    "glyphs": App(
        "Offline many-class benchmark: CJK characters drawn in ~40 font designs (Debian font "
        "packages, scripts/setup.sh); 1,200 training and 1,200 unseen test characters.",
        "proxy_anchor", _glyphs, define_flags=_glyph_flags),
    "cub200": App("CUB-200-2011 (TFDS caltech_birds2011): train on classes 1-100, test on "
                  "101-200.", "proxy_anchor", _tfds("load_cub200"),
                  define_flags=_download_flag),
    "cars196": App("Cars-196 (TFDS cars196): train on classes 1-98, test on 99-196.",
                   "proxy_anchor", _tfds("load_cars196"), define_flags=_download_flag),
    "sop": App("Stanford Online Products (TFDS stanford_online_products): 11,318 train / "
               "11,316 test classes.", "proxy_anchor", _tfds("load_sop"),
               define_flags=_download_flag),
    "inshop": App("In-Shop Clothes Retrieval: 3,997 training items; query vs gallery.",
                  "proxy_anchor", _folder("load_inshop"),
                  data_dir="the In-Shop folder (Eval/list_eval_partition.txt, img/)"),
    "pose": App("Human pose retrieval on MPII (continuous labels: squared L2 between "
                "normalised poses).", "log_ratio", _folder("load_mpii"),
                data_dir="the MPII folder (annotation .mat, images/)"),
    "layout": App("Room layout retrieval on LSUN (continuous labels: 1 - mIoU of the "
                  "layout maps).", "log_ratio", _folder("load_lsun_layout"),
                  data_dir="the LSUN room layout folder (training.mat, images/, "
                  "layout_seg/)"),
    "captions": App("Caption-aware image retrieval on MS-COCO 2014 (continuous labels: "
                    "caption-set distance).", "log_ratio", _captions,
                    data_dir="the COCO 2014 folder (annotations/, train2014/, val2014/)",
                    define_flags=_caption_flags),
}
