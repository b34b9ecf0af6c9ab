"""MPII Human Pose for pose retrieval (continuous labels: pose vectors).

Release layout::

    ROOT/mpii_human_pose_v1_u12_1.mat      (annotations, MATLAB struct RELEASE)
    ROOT/images/<image name>.jpg

``RELEASE`` fields used: ``annolist(i).image.name``; ``annolist(i).annorect(r)``
with ``scale`` (person height / 200 px), ``objpos.x/.y`` (rough person
centre), ``annopoints.point(k)`` with ``x``, ``y``, ``id`` (0-15) and
``is_visible``; ``img_train(i)`` (1 = annotated training image; the
released test images have no joints). Joint ids: 0 r-ankle, 1 r-knee,
2 r-hip, 3 l-hip, 4 l-knee, 5 l-ankle, 6 pelvis, 7 thorax, 8 upper neck,
9 head top, 10 r-wrist, 11 r-elbow, 12 r-shoulder, 13 l-shoulder,
14 l-elbow, 15 l-wrist.

What the Beyond-Binary authors do and what we do. Their repository
(tjddus9597/Beyond-Binary-Supervision-CVPR19) ships no MPII preprocessing:
it reads pre-cropped 288x288 full-body person images, 12,366 for training
and 9,919 for testing, with precomputed pose distances, from a Google Drive
archive; training crops 224 pixels at a random position (+-3%) and scale
(+-5%) from the 288 crop, testing takes the centre 224. We rebuild that from
the official annotation:

* persons of ``img_train == 1`` images whose 16 joints are all annotated
  (the "full body" subset) and that have a scale and an objpos;
* coordinates: MATLAB's 1-based pixel coordinates become 0-based (minus 1,
  as the usual MPII converters do); pixel j is centred at coordinate j;
* a square crop of side ``crop_scale * 200 * scale`` (default 1.25 person
  heights) centred on ``objpos``, resized to ``crop_size`` (288), zero
  padding outside the image;
* the label: the 16 joints as a 32-vector ``(x_0, y_0, ..., x_15, y_15)``,
  centred on ``objpos`` (or the pelvis, ``center="pelvis"``) and divided by
  the person height ``200 * scale``. So a joint's pixel position in the crop
  is ``crop_size/2 + label * crop_size / crop_scale`` (for center=objpos),
  and pose distances are in units of person height, independent of the
  image resolution;
* train/test: a seeded split by image (persons of one image never straddle
  it) with ``test_fraction`` 0.445 (= 9,919 / 22,285, the authors'
  proportion); their exact lists are not published in the repository.

The label distance (squared L2 between pose vectors) lives in
``keras_dml.label_distances``. Flipping a person image horizontally changes
its pose label (left/right), so :func:`pose_train_transform` does not flip.
"""

import os
from typing import TYPE_CHECKING, Dict, Optional, Union

import keras
import numpy as np
import tensorflow as tf

from keras_dml.data.core import RetrievalData, Split, array_lookup, decode_image, require_file

if TYPE_CHECKING:
    from keras_dml.image_layers import Compose

ANNOTATION_FILE = "mpii_human_pose_v1_u12_1.mat"
NUM_JOINTS = 16
JOINT_NAMES = ("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle",
               "pelvis", "thorax", "upper_neck", "head_top", "r_wrist",
               "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist")
PELVIS = 6
CROP_SIZE = 288      # the authors' person crops
INPUT_SIZE = 224     # the network input cropped from them
AUTHORS_TEST_FRACTION = 9919 / (12366 + 9919)


def _items(x):
    """A MATLAB struct array / cell as a Python list (after squeeze_me)."""
    if x is None:
        return []
    if isinstance(x, np.ndarray):
        return list(x.ravel())
    return [x]


def _get(struct, name):
    """Field ``name`` of a mat_struct, None if absent or empty."""
    value = getattr(struct, name, None)
    if isinstance(value, np.ndarray) and value.size == 0:
        return None
    if isinstance(value, str) and value == "":
        return None
    return value


def _number(x):
    if x is None:
        return None
    if isinstance(x, np.ndarray):
        if x.size != 1:
            return None
        x = x.ravel()[0]
    if isinstance(x, (bytes, str)):
        x = x.strip()
        if not x:
            return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def read_annotations(path: Union[str, os.PathLike]) -> Dict[str, np.ndarray]:
    """Every annotated person of the MPII .mat, as a dict of numpy arrays.

    Returns ``{"image": [P] str, "image_index": [P] int, "rect_index": [P]
    int, "train": [P] bool, "joints": [P, 16, 3] float32 (x, y, visible;
    NaN x/y where a joint is not annotated), "annotated": [P, 16] bool,
    "scale": [P] float32, "objpos": [P, 2] float32 (x, y)}`` for persons
    with a scale and an objpos. Coordinates are 0-based (the file's
    1-based MATLAB coordinates minus 1).
    """
    import scipy.io
    mat = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
    if "RELEASE" not in mat:
        raise ValueError(f"{path}: no RELEASE struct (is this the MPII human "
                         "pose annotation file?).")
    release = mat["RELEASE"]
    annolist = _items(_get(release, "annolist"))
    img_train = np.atleast_1d(np.asarray(_get(release, "img_train"))).ravel()
    if len(img_train) != len(annolist):
        raise ValueError(f"{path}: {len(annolist)} annolist entries but "
                         f"{len(img_train)} img_train flags.")
    out: Dict[str, list] = {k: [] for k in ("image", "image_index", "rect_index", "train",
                           "joints", "annotated", "scale", "objpos")}
    for i, anno in enumerate(annolist):
        image = _get(anno, "image")
        name = _get(image, "name") if image is not None else None
        if name is None:
            continue
        for r, rect in enumerate(_items(_get(anno, "annorect"))):
            scale = _number(_get(rect, "scale"))
            objpos = _get(rect, "objpos")
            ox = _number(_get(objpos, "x")) if objpos is not None else None
            oy = _number(_get(objpos, "y")) if objpos is not None else None
            if scale is None or ox is None or oy is None or scale <= 0:
                continue
            joints = np.full((NUM_JOINTS, 3), np.nan, np.float32)
            joints[:, 2] = 0
            annotated = np.zeros(NUM_JOINTS, bool)
            points = _get(rect, "annopoints")
            for p in _items(_get(points, "point") if points is not None
                            else None):
                jid, x, y = (_number(_get(p, k)) for k in ("id", "x", "y"))
                if jid is None or x is None or y is None:
                    continue
                jid = int(jid)
                if not 0 <= jid < NUM_JOINTS:
                    raise ValueError(f"{path}: image {name}: joint id {jid} "
                                     "outside 0-15.")
                visible = _number(_get(p, "is_visible"))
                # is_visible is sometimes missing; treat it as visible.
                joints[jid] = (x - 1.0, y - 1.0,
                               1.0 if visible is None else visible)
                annotated[jid] = True
            out["image"].append(str(name))
            out["image_index"].append(i)
            out["rect_index"].append(r)
            out["train"].append(bool(img_train[i]))
            out["joints"].append(joints)
            out["annotated"].append(annotated)
            out["scale"].append(scale)
            out["objpos"].append((ox - 1.0, oy - 1.0))
    n = len(out["image"])
    return {
        "image": np.asarray(out["image"], dtype=object),
        "image_index": np.asarray(out["image_index"], np.int64),
        "rect_index": np.asarray(out["rect_index"], np.int64),
        "train": np.asarray(out["train"], bool),
        "joints": np.asarray(out["joints"], np.float32).reshape(
            n, NUM_JOINTS, 3),
        "annotated": np.asarray(out["annotated"], bool).reshape(n, NUM_JOINTS),
        "scale": np.asarray(out["scale"], np.float32),
        "objpos": np.asarray(out["objpos"], np.float32).reshape(n, 2),
    }


def pose_vectors(joints: np.ndarray, objpos: np.ndarray, scale: np.ndarray,
                 center: str = "objpos") -> np.ndarray:
    """Normalised pose labels [P, 32]: ``(joint_xy - centre) / (200 scale)``.

    ``center``: ``"objpos"`` (the annotated person centre, which the crop is
    centred on) or ``"pelvis"`` (joint 6). Output order x0, y0, x1, y1, ...
    """
    joints = np.asarray(joints, np.float64)[..., :2]
    if center == "objpos":
        c = np.asarray(objpos, np.float64)[:, None, :]
    elif center == "pelvis":
        c = joints[:, PELVIS:PELVIS + 1, :]
    else:
        raise ValueError(f"center must be 'objpos' or 'pelvis'; got "
                         f"{center!r}.")
    scale = np.asarray(scale, np.float64)[:, None, None]
    return ((joints - c) / (200.0 * scale)).reshape(len(joints), -1).astype(
        np.float32)


def _crop_boxes(objpos, scale, crop_scale):
    """Square boxes (x1, y1, x2, y2) in pixels around objpos."""
    half = 0.5 * crop_scale * 200.0 * np.asarray(scale, np.float64)
    ox, oy = np.asarray(objpos, np.float64).T
    return np.stack([ox - half, oy - half, ox + half, oy + half], 1).astype(
        np.float32)


def _person_split(name, paths, labels, boxes, crop_size, info):
    path_of = array_lookup(np.asarray(paths, dtype=object), f"{name}_paths")
    box_of = array_lookup(boxes, f"{name}_boxes")

    def load_image(i):
        image = decode_image(tf.io.read_file(path_of(i)), 3)
        shape = tf.cast(tf.shape(image), tf.float32)
        x1, y1, x2, y2 = tf.unstack(box_of(i))
        # Output pixel k (k = 0..S-1) samples the image at x1 + (k + 0.5) *
        # (x2 - x1) / S, image pixel j being centred at coordinate j.
        # crop_and_resize samples a + k (b - a) / (S - 1) with a, b given as
        # fractions of (W - 1), hence the half-step inset of the box.
        half_x = 0.5 * (x2 - x1) / crop_size
        half_y = 0.5 * (y2 - y1) / crop_size
        h1 = tf.maximum(shape[0] - 1.0, 1.0)
        w1 = tf.maximum(shape[1] - 1.0, 1.0)
        box = tf.stack([(y1 + half_y) / h1, (x1 + half_x) / w1,
                        (y2 - half_y) / h1, (x2 - half_x) / w1])
        crop = tf.image.crop_and_resize(
            tf.cast(image[None], tf.float32), box[None], [0],
            [crop_size, crop_size], method="bilinear", extrapolation_value=0)
        return tf.cast(tf.clip_by_value(tf.round(crop[0]), 0, 255), tf.uint8)

    return Split(name, labels, load_image, paths, channels=3,
                 image_shape=(crop_size, crop_size, 3), info=info)


def load_mpii(root: Union[str, os.PathLike], annotation_file: Optional[str] = None,
              image_dir: Optional[str] = None, test_fraction: float = AUTHORS_TEST_FRACTION,
              seed: int = 0, center: str = "objpos", crop_scale: float = 1.25,
              crop_size: int = CROP_SIZE) -> RetrievalData:
    """MPII persons as :class:`RetrievalData` (``label_type="pose"``).

    ``train`` / ``test`` yield ``(uint8 [crop_size, crop_size, 3] person
    crop, float32 [32] pose vector)``; each split's ``info`` holds the
    person's image, joints [16, 3], scale and objpos. See the module
    docstring for the choices.
    """
    root = os.fspath(root)
    ann_path = require_file(
        annotation_file or os.path.join(root, ANNOTATION_FILE),
        "MPII annotation file",
        "Download mpii_human_pose_v1_u12_2.zip (annotations) and "
        "mpii_human_pose_v1.tar.gz (images) from "
        "http://human-pose.mpi-inf.mpg.de/ and pass the folder holding "
        f"{ANNOTATION_FILE} and images/.")
    image_dir = image_dir or os.path.join(root, "images")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got "
                         f"{test_fraction}.")
    ann = read_annotations(ann_path)
    keep = ann["train"] & ann["annotated"].all(axis=1)
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        raise ValueError(f"{ann_path}: no training person with all 16 joints.")
    images = np.unique(ann["image_index"][idx])
    rng = np.random.default_rng(seed)
    perm = rng.permutation(images)
    n_test = int(round(test_fraction * len(images)))
    if len(images) >= 2:
        n_test = min(max(n_test, 1), len(images) - 1)
    test_images = set(perm[:n_test].tolist())

    labels = pose_vectors(ann["joints"], ann["objpos"], ann["scale"], center)
    boxes = _crop_boxes(ann["objpos"], ann["scale"], crop_scale)
    splits = {}
    for part in ("train", "test"):
        in_test = np.array([ann["image_index"][i] in test_images for i in idx],
                           bool)
        sel = idx[in_test] if part == "test" else idx[~in_test]
        paths = [os.path.join(image_dir, ann["image"][i]) for i in sel]
        info = {k: ann[k][sel] for k in ("image", "joints", "scale",
                                         "objpos", "image_index",
                                         "rect_index")}
        info["crop_boxes"] = boxes[sel]
        splits[part] = _person_split(part, paths, labels[sel], boxes[sel],
                                     crop_size, info)
    return RetrievalData(
        name="mpii_pose", train=splits["train"], test=splits["test"],
        num_train_classes=None, image_shape=(crop_size, crop_size, 3),
        label_type="pose",
        info={"center": center, "crop_scale": crop_scale,
              "crop_size": crop_size, "seed": seed,
              "test_fraction": test_fraction, "root": root})


def pose_train_transform(size: int = INPUT_SIZE, seed: Optional[int] = None) -> "Compose":
    """Random ``size`` crop from the person crop (the authors' random
    translation/scale jitter becomes a random translation), no flip."""
    from keras_dml.data.augment import Compose
    return Compose([keras.layers.RandomCrop(size, size, seed=seed)],
                   training=True)


def pose_eval_transform(size: int = INPUT_SIZE) -> "Compose":
    """Centre ``size`` crop of the person crop (the authors' test crop)."""
    from keras_dml.data.augment import Compose
    return Compose([keras.layers.CenterCrop(size, size)], training=False)


__all__ = ["load_mpii", "read_annotations", "pose_vectors",
           "pose_train_transform", "pose_eval_transform", "JOINT_NAMES",
           "NUM_JOINTS"]
