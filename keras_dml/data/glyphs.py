"""A many-class offline benchmark: CJK ideographs drawn in many font designs.

    data = kd.data.load_glyphs(image_size=64, seed=0)
    data.train.info["class_names"][label]      # the character of a class
    data.train.info["font"][i]                 # the font of example i

Class = a CJK unified ideograph (U+4E00-U+9FFF); example = that character
drawn in one font design. Like Omniglot, it has many classes and few, varied
examples per class, which is the regime of the Proxy Anchor paper (SOP:
11,318 training classes, a batch sees few of them), unlike Fashion-MNIST.

Fonts. The CJK fonts that Debian packages install (:data:`PACKAGES`,
installed by ``scripts/setup.sh``) under ``/usr/share/fonts``: Gothic,
Mincho, Song, Kai, brush and handwriting designs. A font file may hold
several faces (``.ttc`` collections); each face's character map is read
with fontTools.

Distinct designs. Many faces are one design: weights, proportional
variants (IPAGothic / IPAPGothic), region variants of a collection, the
Ume Gothic series. Every CJK face is drawn on a fixed probe set of common
ideographs (:data:`PROBE`) at 32 px, centred and size-normalised, and two
faces are compared by the mean absolute pixel difference of their probe
glyphs (0 = identical, 1 = disjoint ink), after a 3x3 box blur so that
anti-aliasing and one-pixel shifts do not count::

    d(f, g) = mean over shared probe characters c, pixels p of
              |blur(f_c)[p] - blur(g_c)[p]| / 255

Faces are taken in order of decreasing coverage; each joins the first
design whose representative (its first face) is within ``merge_threshold``,
or starts a new design (no chaining: every member is close to its
representative). A character is covered by a design when any of its faces
maps it; each (character, design) pair gives one example, drawn with the
design's first face that covers the character, so that near-duplicate
faces never give near-duplicate examples.

Characters. Those covered by at least ``min_designs`` (15) designs; the
``num_classes`` with the most designs are kept (ties: lowest code point),
independent of the seed, so every seed shares one rendered cache.

Split. The classes are split at random (``seed``) into disjoint train and
test classes (``test_fraction``); validation classes are held out of train
by the runner (``val_split="classes"``), as for the other benchmarks.

Images. uint8 [size, size, 1], white ink on black, each glyph cropped to
its ink, scaled so that its longer side is ``0.875 * size`` (aspect kept)
and centred. A glyph that draws no ink (a face mapping a character to an
empty outline) is dropped.

Cache. Rendered arrays are cached on disk (``cache_dir``, default
``$KERAS_DML_CACHE/glyphs`` or ``~/.cache/keras_dml/glyphs``) in a
``.npz`` keyed by a hash of the font files (path, size, mtime), the
characters and the size; the font catalogue (faces, coverage, designs) is
cached the same way. Files are written atomically (temporary file, then
rename); a truncated or corrupt cache file (zip CRC, missing arrays,
a key that does not match) is reported and rebuilt.
"""

import dataclasses
import hashlib
import json
import os
import sys
import time
import warnings
import zipfile
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from keras_dml._types import TensorLike
from keras_dml.data.core import DataNotFoundError, RetrievalData, Split

if TYPE_CHECKING:
    from keras_dml.image_layers import Compose

# The Debian packages of CJK fonts that scripts/setup.sh installs (the
# benchmark's font set; see BUILD_NOTES.md for the measured designs).
PACKAGES = (
    "fonts-ipafont-gothic", "fonts-ipafont-mincho", "fonts-ipaexfont-gothic",
    "fonts-ipaexfont-mincho", "fonts-arphic-ukai", "fonts-arphic-uming",
    "fonts-arphic-gkai00mp", "fonts-arphic-bsmi00lp", "fonts-kouzan-mouhitsu",
    "fonts-aoyagi-soseki", "fonts-aoyagi-kouzan-t", "fonts-seto", "fonts-klee",
    "fonts-lxgw-wenkai", "fonts-sawarabi-gothic", "fonts-sawarabi-mincho",
    "fonts-horai-umefont", "fonts-cwtex-kai", "fonts-cwtex-ming", "fonts-cwtex-fs",
    "fonts-cwtex-heib", "fonts-cwtex-yen", "fonts-hanazono", "fonts-kiloji",
    "fonts-noto-cjk", "fonts-wqy-zenhei", "fonts-wqy-microhei", "fonts-motoya-l-cedar",
    "fonts-motoya-l-maruberi", "fonts-dejima-mincho", "fonts-vlgothic", "fonts-mona",
    "fonts-misaki", "fonts-morisawa-bizud-gothic", "fonts-morisawa-bizud-mincho",
    "fonts-oradano-mincho-gsrr", "fonts-smiley-sans", "fonts-unfonts-core",
    "fonts-baekmuk", "fonts-mplus", "fonts-konatu",
)
FONT_DIRS = ("/usr/share/fonts",)
FONT_EXTENSIONS = (".ttf", ".otf", ".ttc", ".otc")
# CJK Unified Ideographs (the basic block).
CJK_FIRST, CJK_LAST = 0x4E00, 0x9FFF
# Common ideographs with one code point in Japanese, traditional and
# simplified Chinese: the probe set of the design comparison.
PROBE = "永人大中日本山川水火木金土月天心手目口田力文字子女花草雨雪春夏秋冬明年上下左右石竹米糸虫貝"
PROBE_SIZE = 32
MIN_SHARED_PROBES = 8
# Mean absolute probe-pixel difference below which two faces are one design
# (measured: see BUILD_NOTES.md "The glyph benchmark").
MERGE_THRESHOLD = 0.045
WEIGHT_THRESHOLD = 0.15
# A face must draw at least this fraction of the probe characters it maps.
MIN_DRAWN = 0.5
MIN_IDEOGRAPHS = 1000
INK_FRACTION = 0.875
_FORMAT = 1                      # bump when the cached arrays change meaning


# ------------------------------------------------------------------ fonts
@dataclasses.dataclass(frozen=True)
class Face:
    """One face of a font file (``index`` within a .ttc collection).

    Attributes:
      path, index: where it is (Pillow: ``ImageFont.truetype(path, size,
        index=index)``).
      name: its full name (name table), e.g. "IPAPGothic".
      codepoints: sorted uint32 CJK unified ideographs its cmap maps.
    """

    path: str
    index: int
    name: str
    codepoints: np.ndarray = dataclasses.field(compare=False, repr=False)

    def covers(self, chars: Sequence[str]) -> np.ndarray:
        """Boolean [len(chars)]: which characters the face maps."""
        cps = np.asarray([ord(c) for c in chars], np.uint32)
        return np.isin(cps, self.codepoints)


def font_files(font_dirs: Sequence[str] = FONT_DIRS) -> List[str]:
    """Sorted font file paths (.ttf/.otf/.ttc/.otc) under ``font_dirs``."""
    out = []
    for root in font_dirs:
        if os.path.isfile(root):
            out.append(os.path.abspath(root))
            continue
        for dirpath, _, names in os.walk(root):
            out += [os.path.join(dirpath, n) for n in names
                    if n.lower().endswith(FONT_EXTENSIONS)]
    return sorted(set(out))


def _files_key(paths):
    rows = []
    for p in paths:
        st = os.stat(p)
        rows.append([p, st.st_size, int(st.st_mtime)])
    return rows


def _face_name(font):
    name = font["name"]
    full = name.getDebugName(4) or ""
    if not full:
        family = name.getDebugName(16) or name.getDebugName(1) or "?"
        style = name.getDebugName(17) or name.getDebugName(2) or ""
        full = f"{family} {style}".strip()
    return full


def read_faces(path: str, min_ideographs: int = MIN_IDEOGRAPHS) -> List[Face]:
    """The faces of one font file that map at least ``min_ideographs`` CJK
    unified ideographs (fontTools; unreadable files give no faces)."""
    import logging

    from fontTools.ttLib import TTCollection, TTFont, TTLibError
    # fontTools logs harmless repairs ("Not enough names in the 'post' table").
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    try:
        if path.lower().endswith((".ttc", ".otc")):
            collection = TTCollection(path, lazy=True)
            fonts = list(collection.fonts)
        else:
            fonts = [TTFont(path, lazy=True)]
    except (TTLibError, OSError, ValueError, AssertionError) as err:
        warnings.warn(f"keras_dml.data.glyphs: skipping unreadable font {path}: {err}",
                      stacklevel=2)
        return []
    faces = []
    for index, font in enumerate(fonts):
        try:
            cmap = font.getBestCmap() or {}
            name = _face_name(font)
        except Exception as err:  # a broken table in one face: skip that face
            warnings.warn(f"keras_dml.data.glyphs: skipping face {index} of {path}: {err}",
                          stacklevel=2)
            continue
        cps = np.fromiter((c for c in cmap if CJK_FIRST <= c <= CJK_LAST), np.uint32)
        if len(cps) >= min_ideographs:
            faces.append(Face(path, index, name, np.sort(cps)))
    return faces


# --------------------------------------------------------------- rendering
def _pil_font(face, size):
    from PIL import ImageFont
    return ImageFont.truetype(face.path, size=size, index=face.index,
                              layout_engine=ImageFont.Layout.BASIC)


def render(font: Any, char: str, size: int, canvas: Any = None) -> Optional[np.ndarray]:
    """One glyph: uint8 [size, size], ink 255 on 0, cropped to its ink,
    longer side ``INK_FRACTION * size`` (aspect kept), centred; None when
    the glyph draws no ink.

    ``font`` is a Pillow FreeType font drawn at about ``size`` pixels.
    """
    from PIL import Image
    try:
        mask = font.getmask(char, mode="L")
    except OSError:       # FreeType cannot draw it (e.g. a broken hinting program)
        return None
    w, h = mask.size
    if w == 0 or h == 0:
        return None
    glyph = Image.frombytes("L", (w, h), bytes(mask))
    box = glyph.getbbox()
    if box is None:
        return None
    glyph = glyph.crop(box)
    w, h = glyph.size
    target = max(1, int(round(INK_FRACTION * size)))
    scale = target / max(w, h)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    glyph = glyph.resize((nw, nh), Image.Resampling.BILINEAR if scale >= 1
                         else Image.Resampling.BOX)
    out = Image.new("L", (size, size), 0)
    out.paste(glyph, ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(out, np.uint8)


def _render_size(size):
    # Draw a little larger than the target: downscaling keeps thin strokes
    # smooth; the font size is the em, and glyphs fill ~0.9 of it.
    return max(16, int(round(size * 1.25)))


def render_face(face: Face, chars: Sequence[str], size: int) -> Tuple[np.ndarray, np.ndarray]:
    """[len(chars), size, size] uint8 and a bool [len(chars)] of drawn
    glyphs (False: no ink)."""
    font = _pil_font(face, _render_size(size))
    images = np.zeros((len(chars), size, size), np.uint8)
    ok = np.zeros(len(chars), bool)
    for i, c in enumerate(chars):
        img = render(font, c, size)
        if img is not None:
            images[i], ok[i] = img, True
    return images, ok


# ---------------------------------------------------------------- designs
def _blur(images):
    """3x3 box blur of uint8 [..., H, W] -> float32 (edges replicated)."""
    x = np.asarray(images, np.float32)
    pad = [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)]
    p = np.pad(x, pad, mode="edge")
    h, w = x.shape[-2:]
    return sum(p[..., i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def probe_renders(faces: Sequence[Face], probe: Sequence[str] = PROBE,
                  size: int = PROBE_SIZE) -> Tuple[np.ndarray, np.ndarray]:
    """Blurred probe glyphs [faces, len(probe), size, size] (float32 0-255)
    and which each face draws [faces, len(probe)]."""
    probe = list(probe)
    out = np.zeros((len(faces), len(probe), size, size), np.float32)
    have = np.zeros((len(faces), len(probe)), bool)
    for f, face in enumerate(faces):
        cover = face.covers(probe)
        chars = [c for c, k in zip(probe, cover) if k]
        images, ok = render_face(face, chars, size)
        idx = np.flatnonzero(cover)
        out[f, idx] = _blur(images)
        have[f, idx] = ok
    return out, have


def design_distances(renders: np.ndarray, have: np.ndarray,
                     min_shared: int = MIN_SHARED_PROBES) -> np.ndarray:
    """[F, F] mean absolute blurred-pixel difference / 255 over the probe
    characters both faces draw; NaN where they share fewer than
    ``min_shared``."""
    n = len(renders)
    dist = np.full((n, n), np.nan, np.float64)
    for i in range(n):
        shared = have[i][None, :] & have                       # [F, P]
        diff = np.abs(renders[i][None] - renders).mean(axis=(2, 3)) / 255.0   # [F, P]
        count = shared.sum(1)
        total = np.where(shared, diff, 0.0).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            dist[i] = np.where(count >= min_shared, total / np.maximum(count, 1), np.nan)
    return dist


# Weight and style words dropped from a face's name to get its family stem.
WEIGHT_WORDS = frozenset((
    "thin", "hairline", "extralight", "ultralight", "light", "demilight", "semilight",
    "regular", "normal", "book", "roman", "medium", "semibold", "demibold", "bold",
    "extrabold", "ultrabold", "black", "heavy", "w1", "w2", "w3", "w4", "w5", "w6", "w7",
    "w8", "w9"))


def family_stem(name: str) -> str:
    """A face name without weight words and without a " - X" suffix
    ("Noto Sans CJK JP Bold" -> "noto sans cjk jp", "kiloji - B" -> "kiloji")."""
    words = name.split(" - ")[0].lower().replace("_", " ").split()
    return " ".join(w for w in words if w not in WEIGHT_WORDS)


class _UnionFind:
    def __init__(self, n):
        self.parent = list(range(n))

    def find(self, i):
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i, j):
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def merge_designs(dist: np.ndarray, names: Optional[Sequence[str]] = None,
                  threshold: float = MERGE_THRESHOLD,
                  weight_threshold: float = WEIGHT_THRESHOLD) -> List[List[int]]:
    """Design groups (lists of face indices in order, the first one the
    representative) from the probe distances ``dist`` [F, F].

    Two faces are linked when they draw the probe set (nearly) alike,
    ``dist < threshold`` (proportional, monospaced and region variants, the
    Ume series, derived fonts), or when they are weights of one family
    (same :func:`family_stem` of ``names``) and ``dist < weight_threshold``
    (the pixel check that a shared name is one design drawn bolder or
    lighter). Designs are the connected components; NaN (fewer than
    ``MIN_SHARED_PROBES`` shared probes) never links.
    """
    dist = np.asarray(dist, float)
    n = len(dist)
    stems: List[Optional[str]] = ([family_stem(x) for x in names] if names is not None
                                  else [None] * n)
    uf = _UnionFind(n)
    with np.errstate(invalid="ignore"):
        close = np.isfinite(dist) & (dist < threshold)
        weights = np.isfinite(dist) & (dist < weight_threshold)
    for i in range(n):
        for j in range(i + 1, n):
            if close[i, j] or (weights[i, j] and stems[i] is not None
                               and stems[i] == stems[j]):
                uf.union(i, j)
    groups: Dict[int, List[int]] = {}
    for i in range(n):
        groups.setdefault(uf.find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


@dataclasses.dataclass
class Catalogue:
    """The CJK faces found, their pairwise design distances and the designs.

    Attributes:
      faces: the faces (in coverage order, largest first).
      distances: [F, F] probe distances (:func:`design_distances`).
      designs: face-index groups, representative first.
    """

    faces: list
    distances: np.ndarray
    designs: list
    threshold: float

    def design_names(self) -> List[str]:
        return [self.faces[g[0]].name for g in self.designs]

    def coverage(self, codepoints: TensorLike) -> np.ndarray:
        """Bool [designs, len(codepoints)]: which designs cover each
        code point (any face of the design)."""
        cps = np.asarray(codepoints, np.uint32)
        out = np.zeros((len(self.designs), len(cps)), bool)
        for d, group in enumerate(self.designs):
            for f in group:
                out[d] |= np.isin(cps, self.faces[f].codepoints)
        return out

    def face_for(self, design: int, char: str) -> Optional[int]:
        """The first face of ``design`` that maps ``char`` (or None)."""
        for f in self.designs[design]:
            if self.faces[f].covers(char)[0]:
                return f
        return None


def default_cache_dir() -> str:
    root = os.environ.get("KERAS_DML_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "keras_dml")
    return os.path.join(root, "glyphs")


def _hash(obj):
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:20]


def _save_npz(path, **arrays):
    """np.savez to ``path`` atomically (temporary file + rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load_npz(path, key, names):
    """The arrays ``names`` of a cache file whose stored key is ``key``, or
    None if it is absent; a corrupt or mismatched file is reported, removed
    and None returned (the caller rebuilds it)."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = json.loads(str(z["key"]))
            if stored != key:
                raise ValueError("its key does not match the request")
            out = {n: z[n] for n in names}   # reading checks each member's CRC
        return out
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError) as err:
        print(f"keras_dml.data.glyphs: cache file {path} is unreadable or stale "
              f"({type(err).__name__}: {err}); rebuilding it.", file=sys.stderr)
        try:
            os.remove(path)
        except OSError:
            pass
        return None


def build_catalogue(paths: Sequence[str], min_ideographs: int = MIN_IDEOGRAPHS,
                    threshold: float = MERGE_THRESHOLD,
                    cache_dir: Optional[str] = None) -> Catalogue:
    """The :class:`Catalogue` of the CJK faces in font files ``paths``
    (cached on disk, keyed by the files' paths, sizes and mtimes)."""
    key = {"format": _FORMAT, "what": "catalogue", "files": _files_key(paths),
           "min_ideographs": min_ideographs, "probe": PROBE, "probe_size": PROBE_SIZE}
    path = os.path.join(cache_dir or default_cache_dir(), f"fonts-{_hash(key)}.npz")
    cached = _load_npz(path, key, ["faces", "cps", "offsets", "distances"])
    if cached is not None:
        meta = json.loads(str(cached["faces"]))
        cps, off = cached["cps"], cached["offsets"]
        faces = [Face(p, i, n, cps[off[k]:off[k + 1]]) for k, (p, i, n) in enumerate(meta)]
        dist = cached["distances"]
    else:
        faces = [face for p in paths for face in read_faces(p, min_ideographs)]
        # Largest coverage first (representatives cover the most), then by name.
        faces.sort(key=lambda f: (-len(f.codepoints), f.name, f.path, f.index))
        renders, have = probe_renders(faces)
        # Faces that map the probes but draw too few of them (empty outlines,
        # outlines FreeType refuses) cannot be compared or trusted: dropped.
        mapped = np.stack([f.covers(PROBE) for f in faces]) if faces else np.zeros((0, 1))
        drawn = (have.sum(1) >= MIN_SHARED_PROBES) & (
            have.sum(1) >= MIN_DRAWN * mapped.sum(1))
        for f in np.flatnonzero(~drawn):
            warnings.warn(f"keras_dml.data.glyphs: ignoring face {faces[f].name!r} "
                          f"({faces[f].path}): it draws {have[f].sum()} of the "
                          f"{mapped[f].sum()} probe characters it maps.", stacklevel=2)
        faces = [f for f, k in zip(faces, drawn) if k]
        dist = design_distances(renders[drawn], have[drawn])
        off = np.cumsum([0] + [len(f.codepoints) for f in faces])
        _save_npz(path, key=np.asarray(json.dumps(key)),
                  faces=np.asarray(json.dumps([[f.path, f.index, f.name] for f in faces])),
                  cps=np.concatenate([f.codepoints for f in faces] or [np.zeros(0, np.uint32)]),
                  offsets=off, distances=dist)
    designs = merge_designs(dist, [f.name for f in faces], threshold)
    return Catalogue(faces, dist, designs, threshold)


def select_characters(catalogue: Catalogue, min_designs: int = 15,
                      num_classes: Optional[int] = None) -> Tuple[List[str], np.ndarray]:
    """Characters covered by at least ``min_designs`` designs, most covered
    first (ties: lowest code point), at most ``num_classes``; and their
    design counts."""
    cps = np.arange(CJK_FIRST, CJK_LAST + 1, dtype=np.uint32)
    counts = catalogue.coverage(cps).sum(0)
    keep = np.flatnonzero(counts >= min_designs)
    order = keep[np.lexsort((cps[keep], -counts[keep]))]
    if num_classes is not None:
        order = order[:num_classes]
    return [chr(int(c)) for c in cps[order]], counts[order]


# ------------------------------------------------------------------ loading
def render_examples(catalogue: Catalogue, chars: Sequence[str], size: int,
                    log: Optional[Callable[[str], Any]] = None
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every (character, design) glyph: images uint8 [N, size, size],
    char index [N], design index [N], face index [N] (no-ink glyphs
    dropped)."""
    cover = catalogue.coverage([ord(c) for c in chars])         # [D, C]
    images, char_ids, design_ids, face_ids = [], [], [], []
    started = time.monotonic()
    for d, group in enumerate(catalogue.designs):
        todo = np.flatnonzero(cover[d])
        # The first face of the design that maps each character.
        assigned = np.full(len(todo), -1)
        for f in group:
            free = assigned < 0
            if not free.any():
                break
            hit = catalogue.faces[f].covers([chars[i] for i in todo[free]])
            assigned[np.flatnonzero(free)[hit]] = f
        for f in np.unique(assigned):
            idx = todo[assigned == f]
            imgs, ok = render_face(catalogue.faces[f], [chars[i] for i in idx], size)
            images.append(imgs[ok])
            char_ids.append(idx[ok])
            design_ids.append(np.full(ok.sum(), d))
            face_ids.append(np.full(ok.sum(), f))
        if log:
            log(f"  design {d + 1}/{len(catalogue.designs)} "
                f"{catalogue.faces[group[0]].name}: {len(todo)} glyphs "
                f"({time.monotonic() - started:.0f} s)")
    cat = np.concatenate
    return (cat(images) if images else np.zeros((0, size, size), np.uint8),
            cat(char_ids).astype(np.int32), cat(design_ids).astype(np.int32),
            cat(face_ids).astype(np.int32))


def load_glyphs(image_size: int = 64, seed: int = 0, num_classes: Optional[int] = 2400,
                test_fraction: float = 0.5, min_designs: int = 15,
                min_train_classes: int = 1000, min_test_classes: int = 1000,
                fonts: Optional[Sequence[str]] = None, characters: Optional[str] = None,
                font_dirs: Sequence[str] = FONT_DIRS, merge_threshold: float = MERGE_THRESHOLD,
                min_ideographs: int = MIN_IDEOGRAPHS, cache_dir: Optional[str] = None,
                verbose: bool = False) -> RetrievalData:
    """CJK ideographs x font designs, class-disjoint train / test splits.

    Args:
      image_size: side of the stored uint8 images [size, size, 1].
      seed: the class split (the characters and images do not depend on it).
      num_classes: how many characters to keep (the most covered; None: all
        with ``min_designs``).
      test_fraction: fraction of the classes in the test split.
      min_designs: distinct designs a character must have.
      min_train_classes, min_test_classes: the split sizes required (an
        error says what was found otherwise); 0 for tiny test sets.
      fonts: font files to use (default: every font under ``font_dirs``).
      characters: use exactly these characters (each still needs
        ``min_designs``) instead of selecting them.
      font_dirs: where to look for fonts.
      merge_threshold: probe distance below which two faces are one design.
      min_ideographs: faces mapping fewer CJK ideographs are ignored.
      cache_dir: where rendered arrays and the font catalogue are cached.
      verbose: print progress while rendering.

    Returns:
      ``RetrievalData("glyphs", label_type="glyph")`` (class labels; the
      runner's "glyph" task trains with :func:`transforms`): train / test
      :class:`Split` of uint8
      [size, size, 1] images, labels 0..C-1 per split; each split's info:
      ``class_names`` (label -> character), ``font`` (per example: the
      face's name), ``design`` (per example: the design's name).
      ``data.info`` holds the catalogue facts (faces, designs, counts), the
      cache file and ``cache_hit`` (whether the images came from it).
    """
    if int(image_size) < 8:
        raise ValueError(f"image_size must be >= 8; got {image_size}.")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}.")
    if min_designs < 2:
        raise ValueError(f"min_designs must be >= 2 (a class needs 2 examples); "
                         f"got {min_designs}.")
    image_size = int(image_size)
    log = print if verbose else None
    paths = sorted(os.path.abspath(p) for p in fonts) if fonts is not None \
        else font_files(font_dirs)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataNotFoundError(f"font file(s) not found: {missing}.")
    catalogue = build_catalogue(paths, min_ideographs, merge_threshold, cache_dir)
    if len(catalogue.designs) < min_designs:
        raise DataNotFoundError(
            f"the glyph benchmark needs CJK fonts of at least {min_designs} distinct "
            f"designs; found {len(catalogue.faces)} CJK face(s) in "
            f"{len(catalogue.designs)} design(s) in "
            f"{list(font_dirs) if fonts is None else 'the given fonts'}."
            " Install the Debian font packages (bash scripts/setup.sh, or apt-get install -y "
            + " ".join(PACKAGES) + ").")
    if characters is not None:
        chars = list(dict.fromkeys(characters))
        counts = catalogue.coverage([ord(c) for c in chars]).sum(0)
        short = [c for c, n in zip(chars, counts) if n < min_designs]
        if short:
            raise ValueError(f"character(s) {''.join(short)!r} have fewer than "
                             f"{min_designs} designs in these fonts.")
    else:
        chars, counts = select_characters(catalogue, min_designs, num_classes)
    key = {"format": _FORMAT, "what": "glyphs", "size": image_size,
           "faces": [[f.path, f.index, f.name] for f in catalogue.faces],
           "files": _files_key(paths), "designs": catalogue.designs,
           "chars": "".join(chars)}
    cache = os.path.join(cache_dir or default_cache_dir(),
                         f"glyphs-{image_size}-{_hash(key)}.npz")
    arrays = _load_npz(cache, key, ["images", "chars", "designs", "faces"])
    cache_hit = arrays is not None
    if arrays is None:
        started = time.monotonic()
        images, char_ids, design_ids, face_ids = render_examples(catalogue, chars,
                                                                 image_size, log)
        seconds = time.monotonic() - started
        _save_npz(cache, key=np.asarray(json.dumps(key)), images=images, chars=char_ids,
                  designs=design_ids, faces=face_ids, seconds=np.asarray(seconds))
        arrays = {"images": images, "chars": char_ids, "designs": design_ids,
                  "faces": face_ids}
        if log:
            log(f"keras_dml.data.glyphs: rendered {len(images)} glyphs in {seconds:.1f} s "
                f"-> {cache}")
    images, char_ids = arrays["images"], arrays["chars"]
    design_ids, face_ids = arrays["designs"], arrays["faces"]
    # Characters whose glyphs some designs drew empty may fall short.
    per_char = np.bincount(char_ids, minlength=len(chars))
    valid = np.flatnonzero(per_char >= min_designs)
    if num_classes is not None and characters is None and len(valid) < num_classes:
        raise DataNotFoundError(
            f"only {len(valid)} characters have {min_designs}+ drawable designs in these "
            f"fonts; {num_classes} were asked for. Install more CJK font packages "
            "(scripts/setup.sh: apt-get install -y " + " ".join(PACKAGES) + ") or lower "
            "num_classes.")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(valid)
    n_test = int(round(test_fraction * len(perm)))
    test_chars, train_chars = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    if len(train_chars) < min_train_classes or len(test_chars) < min_test_classes:
        raise DataNotFoundError(
            f"the glyph benchmark has {len(valid)} characters with {min_designs}+ designs "
            f"({len(train_chars)} train / {len(test_chars)} test classes); "
            f"{min_train_classes} / {min_test_classes} are required. Install more CJK font "
            "packages (scripts/setup.sh) or lower num_classes / min_*_classes.")
    face_names = np.asarray([f.name for f in catalogue.faces], dtype=object)
    design_names = np.asarray(catalogue.design_names(), dtype=object)
    splits = {}
    for part, class_ids in (("train", train_chars), ("test", test_chars)):
        lookup = np.full(len(chars), -1, np.int64)
        lookup[class_ids] = np.arange(len(class_ids))
        keep = np.flatnonzero(lookup[char_ids] >= 0)
        keep = keep[np.lexsort((design_ids[keep], lookup[char_ids[keep]]))]
        labels = lookup[char_ids[keep]].astype(np.int32)
        class_names = [chars[i] for i in class_ids]
        fonts_of = face_names[face_ids[keep]]
        names = [f"{class_names[y]} {f}" for y, f in zip(labels, fonts_of)]
        splits[part] = Split.from_arrays(
            part, images[keep][..., None], labels, names=names,
            info={"class_names": class_names, "font": fonts_of,
                  "design": design_names[design_ids[keep]],
                  "codepoints": [ord(c) for c in class_names]})
    info = {"recall_ks": (1, 2, 4, 8), "num_faces": len(catalogue.faces),
            "num_designs": len(catalogue.designs), "designs": list(design_names),
            "faces": list(face_names), "num_characters": len(valid),
            "min_designs": min_designs, "cache": cache, "cache_hit": cache_hit,
            "examples_per_class": float(len(images) / max(len(chars), 1))}
    return RetrievalData(name="glyphs", train=splits["train"], test=splits["test"],
                         num_train_classes=len(train_chars),
                         image_shape=(image_size, image_size, 1), label_type="glyph",
                         info=info)


def transforms(size: int, seed: Optional[int] = None) -> Tuple["Compose", "Compose"]:
    """(train, eval) transforms for glyph images at ``size`` (RGB for the
    ImageNet backbones): :func:`keras_dml.data.augment.glyph_train_transform`
    (stroke-width jitter, small affine; no flip or crop) and a plain resize."""
    from keras_dml.data import augment
    return (augment.glyph_train_transform(size, rgb=True, seed=seed),
            augment.resize_transform(size, rgb=True))


__all__ = ["load_glyphs", "transforms", "Face", "Catalogue", "build_catalogue", "font_files",
           "read_faces", "render", "render_face", "probe_renders", "design_distances",
           "merge_designs", "select_characters", "render_examples", "default_cache_dir",
           "PACKAGES", "PROBE", "MERGE_THRESHOLD"]
