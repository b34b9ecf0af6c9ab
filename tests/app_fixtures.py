"""Fixture data for the app smoke runs (tests/apps/test_apps.py), in the real
on-disk formats, bigger than the loader tests' ones: enough classes for a
class hold-out, enough examples for a label-space sampler with 5
neighbours and for the apps' largest K in validation and test.

Used by the test process (to write the data) and by tests/app_runner.py
(the TFDS apps: ``tfds_as_dataset_fn`` feeds ``tfds.testing.mock_data``;
captions: ``BagOfWordsEncoder`` replaces the MiniLM encoder). Everything is
deterministic in its seed. Writers of the loader tests are reused where
they fit (MPII structs, LSUN layout maps, idx files, the toy encoder).
"""

import io
import json
import os

import numpy as np
import scipy.io
from PIL import Image

from data_fixtures import (
    LSUN_FIELDS,
    BagOfWordsEncoder,  # noqa: F401  (used by the runner)
    layout_map,
    person,
    rects,
    write_idx,
)
from keras_dml.data import mpii
from keras_dml.data.fashion_mnist import FILES as FASHION_FILES


def class_image(rng, label, h, w):
    """uint8 [h, w, 3]: a class colour plus noise (learnable, not trivial)."""
    colour = np.array([(37 * label) % 256, (91 * label) % 256,
                       (151 * label) % 256], np.float64)
    noise = rng.normal(0, 40, (h, w, 3))
    return np.clip(colour + noise, 0, 255).astype(np.uint8)


def encode(image, fmt="JPEG"):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


# ------------------------------------------------------------------ TFDS
# benchmark -> (TFDS builder, label key, name key, {TFDS split: class ids
# with their image counts}). CUB / Cars pool both TFDS splits and split by
# class; SOP's TFDS splits are its class split.
def _tfds_classes(train_lo, test_lo, n_train, n_test, per_class):
    """Each train / test class's images spread over TFDS train and test."""
    ids = np.r_[np.repeat(np.arange(train_lo, train_lo + n_train), per_class),
                np.repeat(np.arange(test_lo, test_lo + n_test), per_class)]
    return {"train": ids[0::2], "test": ids[1::2]}


TFDS_SPECS = {
    "cub200": dict(builder="caltech_birds2011", label="label", name="image/filename",
                   ids=lambda: _tfds_classes(0, 100, 10, 6, 4)),
    "cars196": dict(builder="cars196", label="label", name="id",
                    ids=lambda: _tfds_classes(0, 98, 10, 6, 4)),
    "sop": dict(builder="stanford_online_products", label="class_id", name=None,
                ids=lambda: {"train": np.repeat(np.arange(10), 3),
                             "test": np.repeat(np.arange(11318, 11318 + 8), 3)}),
}


def tfds_examples(benchmark, seed=0):
    """{TFDS split: {"image": [JPEG bytes], label: ids, (name: [str])}}:
    images of varying size, class-coloured."""
    spec = TFDS_SPECS[benchmark]
    rng = np.random.default_rng(seed)
    out = {}
    for split, ids in spec["ids"]().items():
        images = [encode(class_image(rng, int(y), int(rng.integers(36, 56)),
                                     int(rng.integers(36, 56)))) for y in ids]
        d = {"image": images, spec["label"]: np.asarray(ids, np.int64)}
        if spec["name"]:
            d[spec["name"]] = [f"{split}_{i:04d}.jpg" for i in range(len(ids))]
        out[split] = d
    return out


def tfds_as_dataset_fn(benchmark, seed=0):
    """An ``as_dataset_fn`` for ``tfds.testing.mock_data`` serving
    :func:`tfds_examples` (undecoded images, as the loader asks)."""
    import tensorflow as tf
    examples = tfds_examples(benchmark, seed)

    def as_dataset(self, split, **kwargs):
        return tf.data.Dataset.from_tensor_slices(examples[str(split)])
    return as_dataset


# ---------------------------------------------------------------- In-Shop
def write_inshop(root, n_train_items=10, n_test_items=6, seed=0):
    """Eval/list_eval_partition.txt + img/<cat>/id_XXXXXXXX/*.jpg: 3 train
    images per train item, 2 query + 2 gallery images per test item."""
    rng = np.random.default_rng(seed)
    rows = []
    for item in range(1, n_train_items + 1):
        rows += [(item, f"{v:02d}_1_front", "train") for v in range(1, 4)]
    for item in range(100, 100 + n_test_items):
        rows += [(item, "01_1_front", "query"), (item, "02_1_front", "query"),
                 (item, "01_2_side", "gallery"), (item, "02_2_side", "gallery")]
    lines = [str(len(rows)), "image_name item_id evaluation_status"]
    for item, stem, status in rows:
        cat = "WOMEN/Dresses" if item % 2 else "MEN/Denim"
        rel = f"img/{cat}/id_{item:08d}/{stem}.jpg"
        lines.append(f"{rel:<70}id_{item:08d} {status}")
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(class_image(rng, item, int(rng.integers(40, 60)), 36)).save(
            path, quality=90)
    os.makedirs(os.path.join(root, "Eval"), exist_ok=True)
    with open(os.path.join(root, "Eval", "list_eval_partition.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return rows


# ------------------------------------------------------------------- MPII
def write_mpii(root, n_images=90, seed=0):
    """mpii_human_pose_v1_u12_1.mat (RELEASE struct) + images/: one fully
    annotated person per image (two in every fifth), plus a released test
    image (objpos/scale only) that the loader must skip."""
    rng = np.random.default_rng(seed)
    h, w = 80, 96
    os.makedirs(os.path.join(root, "images"))
    annolist = np.zeros((1, n_images + 1), [("image", "O"), ("annorect", "O"),
                                            ("frame_sec", "O"), ("vididx", "O")])
    for i in range(n_images):
        persons = []
        for _ in range(2 if i % 5 == 0 else 1):
            s = rng.uniform(0.15, 0.25)
            ox, oy = rng.uniform(30, 66), rng.uniform(30, 50)
            joints = np.stack([ox + rng.uniform(-40, 40, 16) * s,
                               oy + rng.uniform(-50, 50, 16) * s], 1)
            persons.append(person(joints, s, (ox, oy)))
        name = f"{i:09d}.jpg"
        annolist[0, i] = ({"name": name}, rects(*persons), np.empty((0, 0)),
                          np.empty((0, 0)))
        Image.fromarray(class_image(rng, i, h, w)).save(
            os.path.join(root, "images", name), quality=90)
    test_rect = np.zeros((1, 1), [("scale", "O"), ("objpos", "O")])
    test_rect[0, 0] = (0.3, {"x": 40.0, "y": 40.0})
    annolist[0, n_images] = ({"name": "test.jpg"}, test_rect, np.empty((0, 0)),
                             np.empty((0, 0)))
    release = {"annolist": annolist,
               "img_train": np.array([[1] * n_images + [0]], np.uint8),
               "version": "12"}
    scipy.io.savemat(os.path.join(root, mpii.ANNOTATION_FILE), {"RELEASE": release})


# ------------------------------------------------------------------- LSUN
def write_lsun(root, n_train=60, n_val=26, seed=0):
    """training.mat / validation.mat (1 x N structs), images/*.jpg and
    layout_seg/*.mat (``layout``, ids 1-5) of varying sizes."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "layout_seg"))
    for var, n in (("training", n_train), ("validation", n_val)):
        recs = np.zeros((1, n), LSUN_FIELDS)
        for i in range(n):
            name = f"sun_{var[:3]}{i:04d}"
            hh, ww = int(rng.integers(30, 48)), int(rng.integers(40, 56))
            recs[0, i] = (name, "bedroom", i % 11, rng.uniform(0, 40, (4, 2)),
                          np.array([[hh, ww]], np.float64))
            Image.fromarray(class_image(rng, i, hh, ww)).save(
                os.path.join(root, "images", f"{name}.jpg"), quality=90)
            scipy.io.savemat(os.path.join(root, "layout_seg", f"{name}.mat"),
                             {"layout": layout_map(hh, ww, rng)})
        scipy.io.savemat(os.path.join(root, f"{var}.mat"), {var: recs})


# ------------------------------------------------------------------- COCO
WORDS = ("dog cat bus man woman surfer wave plate food street grass sofa "
         "red big small running sleeping riding eating city beach table").split()


def write_coco(root, n_train=60, n_val=26, seed=0):
    """annotations/captions_{train,val}2014.json + train2014/ val2014/ JPEGs;
    5-6 captions per image drawn from a small vocabulary (so that the
    caption-set distances vary), annotations listed out of order."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "annotations"))
    ann_id = 1
    for part, n, folder in (("train", n_train, "train2014"), ("val", n_val, "val2014")):
        os.makedirs(os.path.join(root, folder))
        images, anns = [], []
        for k in range(n):
            image_id = 1000 * (part == "val") + 3 * k + 1
            name = f"COCO_{folder}_{image_id:012d}.jpg"
            hh, ww = int(rng.integers(36, 52)), int(rng.integers(40, 60))
            images.append({"id": image_id, "file_name": name, "height": hh, "width": ww})
            Image.fromarray(class_image(rng, image_id, hh, ww)).save(
                os.path.join(root, folder, name), quality=90)
            topic = rng.choice(len(WORDS), 4, replace=False)
            for _ in range(int(rng.integers(5, 7))):
                words = [WORDS[j] for j in rng.choice(topic, 3)]
                anns.append({"id": ann_id, "image_id": image_id,
                             "caption": "a " + " ".join(words)})
                ann_id += 1
        doc = {"info": {}, "licenses": [], "images": images,
               "annotations": anns[::-1]}
        with open(os.path.join(root, "annotations", f"captions_{part}2014.json"),
                  "w") as f:
            json.dump(doc, f)


# ---------------------------------------------------------- Fashion-MNIST
def write_fashion_mnist(root, n_train=200, n_test=100, seed=0):
    """The four idx .gz files; every class has n/10 images, class-coloured
    grey levels plus noise. Returns {part: (images [n, 28, 28], labels)}."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    out = {}
    for part, n in (("train", n_train), ("test", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = np.clip(25.0 * labels[:, None, None] + 10
                         + rng.normal(0, 30, (n, 28, 28)), 0, 255).astype(np.uint8)
        write_idx(os.path.join(root, FASHION_FILES[part][0]), images)
        write_idx(os.path.join(root, FASHION_FILES[part][1]), labels)
        out[part] = (images, labels)
    return out
