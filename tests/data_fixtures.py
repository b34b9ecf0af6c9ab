"""Writers of the data sets' real file formats, shared by the data tests
(tests/data/) and the app smoke runs (app_fixtures.py, run in the test process
and in tests/app_runner.py's subprocess): a helper module, not a test module,
so that neither imports a test module.
"""

import gzip
import struct

import numpy as np

# COCO captions (tests/data/test_coco.py) -----------------------------------

class BagOfWordsEncoder:
    """Deterministic toy sentence encoder that counts its calls."""

    name = "bow-test"

    def __init__(self, dim=8):
        self.dim = dim
        self.calls = 0
        self.vectors = {}

    def vector(self, word):
        if word not in self.vectors:
            seed = sum(ord(c) * 31 ** i for i, c in enumerate(word)) % 2**32
            self.vectors[word] = np.random.default_rng(seed).normal(
                size=self.dim)
        return self.vectors[word]

    def __call__(self, sentences):
        self.calls += 1
        out = np.stack([sum(self.vector(w) for w in s.lower().split())
                        for s in sentences]).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


# Fashion-MNIST idx files (tests/data/test_fashion_mnist.py) ------------------

TYPE_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
              np.float32: 0x0D, np.float64: 0x0E}


def write_idx(path, array, gz=True):
    """idx: 0, 0, type byte, ndim byte, big-endian uint32 dims, BE data."""
    array = np.asarray(array)
    header = bytes([0, 0, TYPE_CODES[array.dtype.type], array.ndim])
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(data)


# LSUN room layout .mat (tests/data/test_lsun.py) ------------------------------

LSUN_FIELDS = [("image", "O"), ("scene", "O"), ("type", "O"), ("point", "O"),
          ("resolution", "O")]


def layout_map(h, w, rng):
    """A room-like layout: ceiling, left/front/right walls, floor (1-5)."""
    m = np.full((h, w), 1, np.uint8)
    top, bottom = rng.integers(2, h // 3), rng.integers(2 * h // 3, h - 2)
    left, right = rng.integers(2, w // 3), rng.integers(2 * w // 3, w - 2)
    m[:, :left] = 2
    m[:, right:] = 3
    m[bottom:, :] = 4
    m[:top, :] = 5
    return m


# MPII annotation structs (tests/data/test_mpii.py) ----------------------------

RECT_FIELDS = [("x1", "O"), ("y1", "O"), ("x2", "O"), ("y2", "O"),
               ("annopoints", "O"), ("scale", "O"), ("objpos", "O")]
POINT_FIELDS = [("x", "O"), ("y", "O"), ("id", "O"), ("is_visible", "O")]


def person(joints, scale, objpos, visible=None, skip=()):
    """An annorect entry; joints [16, 2] (1-based MATLAB pixels)."""
    ids = [j for j in range(16) if j not in skip]
    points = np.zeros((1, len(ids)), POINT_FIELDS)
    for k, j in enumerate(ids):
        vis = 1 if visible is None else visible[j]
        points[0, k] = (float(joints[j, 0]), float(joints[j, 1]), j, vis)
    return (10.0, 10.0, 20.0, 20.0, {"point": points},
            np.empty((0, 0)) if scale is None else float(scale),
            np.empty((0, 0)) if objpos is None
            else {"x": float(objpos[0]), "y": float(objpos[1])})


def rects(*persons):
    out = np.zeros((1, len(persons)), RECT_FIELDS)
    for k, p in enumerate(persons):
        out[0, k] = p
    return out
