"""kd.data.load_glyphs on two or three small Debian CJK fonts and a few
characters: coverage selection, merging of duplicate designs, the disjoint
split, the images, and the on-disk cache (hit, truncated, corrupted)."""

import os

import numpy as np
import pytest

from keras_dml.data import glyphs
from references import unavailable

# Small fonts of scripts/setup.sh's packages: IPAGothic and its proportional
# variant IPAPGothic (the same kanji outlines), Sawarabi Gothic and Sawarabi
# Mincho (two other designs).
IPAG = "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf"
IPAPG = "/usr/share/fonts/opentype/ipafont-gothic/ipagp.ttf"
SAWARABI_G = "/usr/share/fonts/truetype/sawarabi-gothic/sawarabi-gothic-medium.ttf"
SAWARABI_M = "/usr/share/fonts/truetype/sawarabi-mincho/sawarabi-mincho-medium.ttf"
FONTS = (IPAG, IPAPG, SAWARABI_G, SAWARABI_M)


@pytest.fixture(scope="module")
def fonts():
    missing = [p for p in FONTS if not os.path.exists(p)]
    if missing:
        unavailable(f"CJK test fonts missing: {missing}; scripts/setup.sh installs "
                    "fonts-ipafont-gothic fonts-sawarabi-gothic fonts-sawarabi-mincho.")
    return FONTS


def cjk_cmap(path):
    from fontTools.ttLib import TTFont
    cmap = TTFont(path, lazy=True).getBestCmap()
    return {c for c in cmap if 0x4E00 <= c <= 0x9FFF}


def test_merge_designs_rules():
    names = ["Foo Sans", "Foo Sans Bold", "Foo P Sans", "Bar Serif", "Bar Serif Light", "Baz"]
    d = np.full((6, 6), 0.3)
    np.fill_diagonal(d, 0.0)
    d[0, 1] = d[1, 0] = 0.10          # a weight of the same family: within 0.15
    d[0, 2] = d[2, 0] = 0.01          # a proportional variant: identical outlines
    d[3, 4] = d[4, 3] = 0.20          # same family name, but too different: kept apart
    d[5, :] = d[:, 5] = np.nan        # not comparable: never merged
    d[5, 5] = 0.0
    groups = glyphs.merge_designs(d, names, threshold=0.045, weight_threshold=0.15)
    assert groups == [[0, 1, 2], [3], [4], [5]]
    # Without names only the pixel rule links.
    assert glyphs.merge_designs(d, None) == [[0, 2], [1], [3], [4], [5]]
    assert glyphs.family_stem("Noto Sans CJK JP Bold") == "noto sans cjk jp"
    assert glyphs.family_stem("kiloji - B") == "kiloji"


def test_a_face_and_its_proportional_variant_merge_two_designs_do_not(fonts, tmp_path):
    cat = glyphs.build_catalogue(sorted(fonts), cache_dir=str(tmp_path))
    names = [f.name for f in cat.faces]
    assert sorted(names) == ["IPAGothic", "IPAPGothic", "Sawarabi Gothic",
                             "Sawarabi Mincho Medium"]
    i, j = names.index("IPAGothic"), names.index("IPAPGothic")
    g, m = names.index("Sawarabi Gothic"), names.index("Sawarabi Mincho Medium")
    d = cat.distances
    assert d[i, i] == 0.0 and d[i, j] < 0.01            # same kanji outlines
    assert d[g, m] > 2 * glyphs.MERGE_THRESHOLD and d[i, g] > glyphs.MERGE_THRESHOLD
    designs = sorted(sorted(names[f] for f in group) for group in cat.designs)
    assert designs == [["IPAGothic", "IPAPGothic"], ["Sawarabi Gothic"],
                       ["Sawarabi Mincho Medium"]]
    # A face listed twice is one design too.
    renders, have = glyphs.probe_renders([cat.faces[g], cat.faces[g]])
    assert glyphs.design_distances(renders, have)[0, 1] == 0.0


def test_coverage_selection(fonts, tmp_path):
    cat = glyphs.build_catalogue(sorted(fonts), cache_dir=str(tmp_path))
    chars, counts = glyphs.select_characters(cat, min_designs=3)
    # Covered by all three designs (IPA: either face) = the cmaps' intersection.
    expected = cjk_cmap(IPAG) & cjk_cmap(SAWARABI_G) & cjk_cmap(SAWARABI_M)
    assert {ord(c) for c in chars} == expected and (counts == 3).all()
    two, counts2 = glyphs.select_characters(cat, min_designs=2)
    union2 = ((cjk_cmap(IPAG) | cjk_cmap(IPAPG)) & (cjk_cmap(SAWARABI_G) | cjk_cmap(SAWARABI_M))) \
        | (cjk_cmap(SAWARABI_G) & cjk_cmap(SAWARABI_M))
    assert {ord(c) for c in two} == union2
    # Most covered first, then by code point; num_classes keeps the first ones.
    assert list(counts2) == sorted(counts2, reverse=True)
    first, _ = glyphs.select_characters(cat, min_designs=2, num_classes=5)
    assert first == two[:5] and [ord(c) for c in first] == sorted(expected)[:5]


def load(fonts, tmp_path, **kwargs):
    args = dict(image_size=24, seed=0, fonts=fonts, num_classes=12, min_designs=3,
                test_fraction=0.5, min_train_classes=0, min_test_classes=0,
                cache_dir=str(tmp_path))
    args.update(kwargs)
    return glyphs.load_glyphs(**args)


def test_disjoint_split_images_and_info(fonts, tmp_path):
    data = load(fonts, tmp_path)
    train, test = data.train, data.test
    assert data.info["num_designs"] == 3 and data.info["num_faces"] == 4
    tr, te = set(train.info["class_names"]), set(test.info["class_names"])
    assert len(tr) == len(te) == 6 and not tr & te
    chars, _ = glyphs.select_characters(glyphs.build_catalogue(
        sorted(fonts), cache_dir=str(tmp_path)), 3, 12)
    assert tr | te == set(chars)
    for split in (train, test):
        # Labels 0..C-1, one example per design per class, the font named.
        assert sorted(np.unique(split.labels)) == list(range(6))
        assert (np.bincount(split.labels) == 3).all()
        assert len(split.info["font"]) == len(split)
        fonts_of = split.info["font"]
        for y in range(6):
            designs = set(split.info["design"][split.labels == y])
            assert len(designs) == 3
            assert set(fonts_of[split.labels == y]) <= {
                "IPAGothic", "IPAPGothic", "Sawarabi Gothic", "Sawarabi Mincho Medium"}
        assert split.names[0].startswith(split.info["class_names"][split.labels[0]])
    images = np.stack([x for x, _ in train.dataset().as_numpy_iterator()])
    assert images.dtype == np.uint8 and images.shape == (18, 24, 24, 1)
    # Centred and size-normalised: the ink's box is centred and its longer side
    # is 0.875 x 24 = 21 pixels (give or take the resampling's faint edge).
    for img in images[..., 0]:
        rows, cols = np.flatnonzero(img.max(1) > 32), np.flatnonzero(img.max(0) > 32)
        height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert 19 <= max(height, width) <= 22
        assert abs((rows[0] + rows[-1]) / 2 - 11.5) <= 1.5
        assert abs((cols[0] + cols[-1]) / 2 - 11.5) <= 1.5
    # The split is seeded: same seed, same classes; another seed, others.
    again = load(fonts, tmp_path)
    assert again.train.info["class_names"] == train.info["class_names"]
    other = load(fonts, tmp_path, seed=1)
    assert other.train.info["class_names"] != train.info["class_names"]
    assert set(other.train.info["class_names"]) | set(other.test.info["class_names"]) \
        == set(chars)


def test_glyph_data_train_with_the_glyph_task(fonts, tmp_path):
    import keras_dml as kd
    data = load(fonts, tmp_path)
    task = kd.training.task_for(data)
    assert data.label_type == "glyph" and not task.continuous
    train_tf, eval_tf = task.transforms(kd.training.Recipe(image_size=32, seed=1))
    from keras_dml.data import augment
    assert any(isinstance(s, augment.StrokeWidthJitter) for s in train_tf.steps)
    assert not any(isinstance(s, augment.RandomResizedCrop) for s in train_tf.steps)
    x, _ = next(data.train.dataset().as_numpy_iterator())
    assert train_tf(x).shape == (32, 32, 3) and eval_tf(x).shape == (32, 32, 3)


def test_explicit_characters_need_enough_designs(fonts, tmp_path):
    data = load(fonts, tmp_path, characters="永東京語書道", test_fraction=0.5)
    assert set(data.train.info["class_names"]) | set(data.test.info["class_names"]) \
        == set("永東京語書道")
    cat = glyphs.build_catalogue(sorted(fonts), cache_dir=str(tmp_path))
    rare = next(chr(c) for c in sorted(cjk_cmap(IPAG) - cjk_cmap(SAWARABI_M)))
    with pytest.raises(ValueError, match="fewer than 3 designs"):
        load(fonts, tmp_path, characters="永" + rare)
    assert len(cat.designs) == 3
    with pytest.raises(glyphs.DataNotFoundError, match="fonts-noto-cjk"):
        load(fonts, tmp_path, min_designs=15)
    with pytest.raises(glyphs.DataNotFoundError, match="train / .* test classes"):
        load(fonts, tmp_path, min_train_classes=100)


def test_cache_hit_and_corrupt_cache_rebuilt(fonts, tmp_path, capfd):
    first = load(fonts, tmp_path)
    path = first.info["cache"]
    assert not first.info["cache_hit"] and os.path.exists(path)
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]      # atomic write
    reference = np.stack([x for x, _ in first.train.dataset().as_numpy_iterator()])
    second = load(fonts, tmp_path)
    assert second.info["cache_hit"] and second.info["cache"] == path
    np.testing.assert_array_equal(
        np.stack([x for x, _ in second.train.dataset().as_numpy_iterator()]), reference)
    # Another image size is another cache file.
    assert load(fonts, tmp_path, image_size=16).info["cache"] != path
    size = os.path.getsize(path)
    for damage in ("truncate", "flip"):
        with open(path, "r+b") as f:
            if damage == "truncate":
                f.truncate(size // 2)
            else:                     # one byte inside the images array
                f.seek(size // 2)
                byte = f.read(1)
                f.seek(size // 2)
                f.write(bytes([byte[0] ^ 0xFF]))
        capfd.readouterr()
        rebuilt = load(fonts, tmp_path)
        err = capfd.readouterr().err
        assert not rebuilt.info["cache_hit"] and "rebuilding" in err and path in err
        np.testing.assert_array_equal(
            np.stack([x for x, _ in rebuilt.train.dataset().as_numpy_iterator()]), reference)
        assert load(fonts, tmp_path).info["cache_hit"]


def test_setup_installs_the_listed_packages():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    text = open(os.path.join(root, "scripts", "setup.sh")).read()
    block = text.split('GLYPH_FONTS="', 1)[1].split('"', 1)[0]
    assert block.split() == list(glyphs.PACKAGES)


def test_missing_fonts_name_the_packages(tmp_path):
    with pytest.raises(glyphs.DataNotFoundError, match="apt-get install -y fonts-ipafont"):
        glyphs.load_glyphs(font_dirs=[str(tmp_path)], cache_dir=str(tmp_path))


def test_stroke_width_jitter_and_glyph_transform():
    import tensorflow as tf

    from keras_dml.data import augment
    rng = np.random.default_rng(0)
    x = (rng.random((4, 20, 20, 1)) > 0.8).astype(np.float32) * 255
    layer = augment.StrokeWidthJitter(1.0, seed=1)
    out = layer(x, training=True).numpy()
    dilated = tf.nn.max_pool2d(x, 3, 1, "SAME").numpy()
    eroded = -tf.nn.max_pool2d(-x, 3, 1, "SAME").numpy()
    assert (out >= eroded - 1e-4).all() and (out <= dilated + 1e-4).all()
    assert not np.allclose(out, x)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x)
    one = layer(x[0], training=True).numpy()          # one image [H, W, C]
    assert one.shape == (20, 20, 1)
    with pytest.raises(ValueError, match="strength"):
        augment.StrokeWidthJitter(2.0)
    image = np.zeros((24, 24, 1), np.uint8)
    image[6:18, 11:13] = 255                           # a vertical stroke
    transform = augment.glyph_train_transform(32, rgb=True, seed=3)
    outs = np.stack([transform(tf.constant(image)).numpy() for _ in range(4)])
    assert outs.shape == (4, 32, 32, 3) and outs.dtype == np.float32
    assert 0 <= outs.min() and outs.max() <= 255.001
    assert outs[..., 0].sum() > 0 and not np.allclose(outs[0], outs[1])
    # Light: the ink stays near the centre (no flip or crop takes it away).
    cols = np.flatnonzero(outs[0, ..., 0].max(0) > 64)
    assert 10 <= cols.mean() <= 22
