"""MS-COCO 2014 captions for caption-aware image retrieval.

Release layout::

    ROOT/annotations/captions_train2014.json
    ROOT/annotations/captions_val2014.json
    ROOT/train2014/COCO_train2014_000000000009.jpg ...
    ROOT/val2014/...

Caption JSON: ``{"images": [{"id", "file_name", ...}], "annotations":
[{"id", "image_id", "caption"}, ...]}`` (5-7 captions per image).

Labels: each image's first ``captions_per_image`` (5, as the paper) captions,
ordered by annotation id, embedded by a sentence encoder: float32
[K, E] per image, zero rows where an image has fewer than K captions (the
label distance treats all-zero rows as missing). The label distance is
``keras_dml.label_distances.caption_set_distance`` (sum over each image's
captions of the minimum cosine distance to the other image's captions, both
ways); the paper uses the word mover's distance between captions instead
(see BUILD_NOTES). Train on ``captions_train2014``, test on
``captions_val2014``; ``max_train_images`` / ``max_test_images`` take
seeded random subsets (the test-set distance matrix is N x N).

Caching: caption embeddings and the test split's caption-set distance
matrix are computed once and stored as ``.npy`` in ``cache_dir`` (default
``ROOT/keras_dml_cache``), named by a SHA-256 of their inputs (encoder
name, captions; embeddings and distance definition), so a change of any
input computes a new file and an unchanged one is never recomputed.
"""

import hashlib
import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from keras_dml.data.core import RetrievalData, Split, require_file

CACHE_VERSION = "1"


def read_captions(path: Union[str, os.PathLike]) -> Tuple[np.ndarray, List[str], List[List[str]]]:
    """Parse a COCO captions JSON -> (image ids, file names, captions).

    Returns ``(ids [N] int64 sorted, file_names [N], captions: list of N
    lists of str ordered by annotation id)``; images without captions are
    left out.
    """
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    for key in ("images", "annotations"):
        if key not in data:
            raise ValueError(f"{path}: no {key!r} list (is this a COCO "
                             "captions file?).")
    files = {}
    for image in data["images"]:
        files[int(image["id"])] = image["file_name"]
    by_image: Dict[int, List[str]] = {}
    anns = sorted(data["annotations"],
                  key=lambda a: (int(a["image_id"]), int(a.get("id", 0))))
    for a in anns:
        image_id = int(a["image_id"])
        if image_id not in files:
            raise ValueError(f"{path}: caption {a.get('id')} refers to "
                             f"unknown image {image_id}.")
        by_image.setdefault(image_id, []).append(str(a["caption"]).strip())
    ids = np.array(sorted(by_image), np.int64)
    return ids, [files[i] for i in ids], [by_image[i] for i in ids]


def _sha(*parts):
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str((p.dtype.str, p.shape)).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, ensure_ascii=False).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:24]


def cached_array(cache_dir: str, stem: str, key: str,
                 compute: Callable[[], Any]) -> Tuple[np.ndarray, str]:
    """``compute()`` saved as ``cache_dir/stem-key.npy``, or loaded if there.

    Written to a temporary file and renamed, so an interrupted run never
    leaves a truncated cache behind.
    """
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"{stem}-{key}.npy")
    if os.path.exists(path):
        return np.load(path, mmap_mode="r"), path
    value = np.asarray(compute())
    tmp = f"{path}.tmp-{os.getpid()}.npy"
    np.save(tmp, value)
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r"), path


def embed_captions(captions: Sequence[Sequence[str]], encoder: Callable[[List[str]], Any],
                   captions_per_image: int = 5, cache_dir: Optional[str] = None) -> np.ndarray:
    """Caption sets -> float32 [N, K, E] (zero rows for missing captions).

    ``encoder(list_of_str) -> [n, E]``; its ``name`` attribute (or class
    name) is part of the cache key.
    """
    k = int(captions_per_image)
    if k < 1:
        raise ValueError("captions_per_image must be >= 1.")
    sets = [list(c[:k]) for c in captions]
    if any(not s for s in sets):
        raise ValueError("every image needs at least one caption.")
    name = getattr(encoder, "name", type(encoder).__name__)

    def compute():
        flat = [c for s in sets for c in s]
        emb = np.asarray(encoder(flat), np.float32)
        if emb.ndim != 2 or len(emb) != len(flat):
            raise ValueError(f"the encoder returned shape {emb.shape} for "
                             f"{len(flat)} captions; expected [n, E].")
        if not np.isfinite(emb).all():
            raise ValueError("the encoder returned NaN or Inf.")
        if (np.abs(emb).sum(1) == 0).any():
            raise ValueError("the encoder returned an all-zero embedding "
                             "(reserved for missing captions).")
        out = np.zeros((len(sets), k, emb.shape[1]), np.float32)
        pos = 0
        for i, s in enumerate(sets):
            out[i, :len(s)] = emb[pos:pos + len(s)]
            pos += len(s)
        return out

    if cache_dir is None:
        return compute()
    key = _sha(CACHE_VERSION, "embeddings", name, k, sets)
    return cached_array(cache_dir, "caption_embeddings", key, compute)[0]


def caption_distance_matrix(embeddings: Any, cache_dir: Optional[str] = None,
                            chunk_size: int = 512) -> np.ndarray:
    """The [N, N] caption-set distance matrix of one split, cached.

    Uses ``keras_dml.label_distances.pairwise_label_distances`` with
    ``caption_set_distance`` (chunked).
    """
    from keras_dml import label_distances
    embeddings = np.asarray(embeddings, np.float32)

    def compute():
        return label_distances.pairwise_label_distances(
            embeddings, fn="caption_set", chunk_size=chunk_size)

    if cache_dir is None:
        return compute()
    key = _sha(CACHE_VERSION, "caption_set_distance", embeddings)
    return cached_array(cache_dir, "caption_set_distances", key, compute)[0]


def _subset(n, limit, seed):
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ValueError(f"max images must be >= 1; got {limit}.")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=int(limit), replace=False))


def load_coco_captions(root: Union[str, os.PathLike],
                       encoder: Optional[Callable[[List[str]], Any]] = None,
                       captions_per_image: int = 5, max_train_images: Optional[int] = None,
                       max_test_images: Optional[int] = None, seed: int = 0,
                       cache_dir: Optional[str] = None, test_distances: bool = True,
                       train_annotations: str = "annotations/captions_train2014.json",
                       test_annotations: str = "annotations/captions_val2014.json",
                       train_images: str = "train2014",
                       test_images: str = "val2014") -> RetrievalData:
    """COCO 2014 captions as :class:`RetrievalData` (``label_type="caption"``).

    Args:
      root: COCO folder (see the module docstring).
      encoder: sentence encoder ``list_of_str -> [n, E]``; default the
        offline :class:`keras_dml.data.text_encoders.MiniLMEncoder`.
      captions_per_image: K caption slots per image.
      max_train_images, max_test_images, seed: seeded random subsets.
      cache_dir: where embeddings and distances are cached (default
        ``ROOT/keras_dml_cache``); ``False`` disables caching.
      test_distances: precompute the test split's [N, N] caption-set
        distance matrix (``test.info["label_distances"]``, memory-mapped).

    Splits yield ``(uint8 [H, W, 3], float32 [K, E] caption embeddings)``.
    """
    root = os.fspath(root)
    if cache_dir is None:
        cache_dir = os.path.join(root, "keras_dml_cache")
    elif cache_dir is False:
        cache_dir = None
    if encoder is None:
        from keras_dml.data.text_encoders import MiniLMEncoder
        encoder = MiniLMEncoder()
    splits = {}
    for part, ann, image_dir, limit in (
            ("train", train_annotations, train_images, max_train_images),
            ("test", test_annotations, test_images, max_test_images)):
        path = require_file(
            os.path.join(root, ann), f"COCO captions ({part})",
            "Download annotations_trainval2014.zip and the train2014/val2014 "
            "images from https://cocodataset.org and pass their folder.")
        ids, files, captions = read_captions(path)
        keep = _subset(len(ids), limit, seed)
        ids = ids[keep]
        files = [files[i] for i in keep]
        captions = [captions[i] for i in keep]
        labels = embed_captions(captions, encoder, captions_per_image,
                                cache_dir)
        info = {"image_ids": ids, "captions": captions}
        if part == "test" and test_distances:
            info["label_distances"] = caption_distance_matrix(labels,
                                                              cache_dir)
        paths = [os.path.join(root, image_dir, f) for f in files]
        splits[part] = Split.from_files(part, paths, np.asarray(labels),
                                        channels=3, info=info)
    return RetrievalData(
        name="coco_captions", train=splits["train"], test=splits["test"],
        num_train_classes=None, image_shape=(None, None, 3),
        label_type="caption",
        info={"encoder": getattr(encoder, "name", type(encoder).__name__),
              "captions_per_image": captions_per_image,
              "cache_dir": cache_dir, "root": root})


__all__ = ["load_coco_captions", "read_captions", "embed_captions",
           "caption_distance_matrix", "cached_array"]
