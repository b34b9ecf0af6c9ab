"""Label distances vs numpy references and hand-checked cases."""

import math

import numpy as np
import pytest
import tensorflow as tf

from keras_dml import label_distances as ld


# ---------------------------------------------------------------- squared L2

def ref_masked_sq_l2(y1, y2, v1, v2):
    out = np.zeros((len(y1), len(y2)))
    num = y1.shape[1]
    for i in range(len(y1)):
        for j in range(len(y2)):
            s, n = 0.0, 0
            for k in range(num):
                if v1[i, k] and v2[j, k]:
                    s += (y1[i, k] - y2[j, k]) ** 2
                    n += 1
            out[i, j] = num * s / n if n else np.nan
    return out


def test_squared_l2_plain(rng):
    y1 = rng.normal(size=(6, 4))
    y2 = rng.normal(size=(3, 4))
    ones1, ones2 = np.ones_like(y1), np.ones_like(y2)
    np.testing.assert_allclose(ld.squared_l2(y1, y2).numpy(),
                               ref_masked_sq_l2(y1, y2, ones1, ones2), rtol=1e-10)
    within = ld.squared_l2(y1).numpy()
    np.testing.assert_allclose(within, ref_masked_sq_l2(y1, y1, ones1, ones1), atol=1e-12)
    assert np.all(np.diag(within) == 0)
    # Scalar labels [N] are [N, 1].
    np.testing.assert_allclose(ld.squared_l2(y1[:, 0]).numpy(),
                               (y1[:, :1] - y1[:, 0]) ** 2, atol=1e-12)


def test_squared_l2_float32_far_from_origin(rng):
    y = rng.normal(size=(20, 32)) * 3 + 250.0      # pixel coordinates
    got = ld.squared_l2(y.astype("float32")).numpy()
    ref = ((y[:, None] - y[None]) ** 2).sum(-1)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("per_joint", [True, False])
def test_squared_l2_visibility(rng, per_joint):
    n1, n2, joints = 5, 4, 6
    y1 = rng.normal(size=(n1, 2 * joints))
    y2 = rng.normal(size=(n2, 2 * joints))
    if per_joint:
        vj1 = rng.uniform(size=(n1, joints)) > 0.3
        vj2 = rng.uniform(size=(n2, joints)) > 0.3
        vj1[:, 0] = vj2[:, 0] = True                 # every pair overlaps
        v1, v2 = np.repeat(vj1, 2, axis=1), np.repeat(vj2, 2, axis=1)
        arg1, arg2 = vj1, vj2
    else:
        v1 = rng.uniform(size=y1.shape) > 0.3
        v2 = rng.uniform(size=y2.shape) > 0.3
        v1[:, 0] = v2[:, 0] = True
        arg1, arg2 = v1.astype("float32"), v2.astype("int32")
    ref = ref_masked_sq_l2(y1, y2, v1, v2)
    # Invisible coordinates may hold garbage: they must not be read.
    y1_bad = np.where(v1, y1, np.nan)
    got = ld.squared_l2(y1_bad, y2, visibility=arg1, visibility2=arg2).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    within = ld.squared_l2(y1_bad, visibility=arg1).numpy()
    np.testing.assert_allclose(within, ref_masked_sq_l2(y1, y1, v1, v1), rtol=1e-10, atol=1e-12)
    # All visible == plain.
    np.testing.assert_allclose(
        ld.squared_l2(y1, y2, visibility=np.ones_like(y1)).numpy(),
        ld.squared_l2(y1, y2).numpy(), rtol=1e-10)


def test_squared_l2_no_overlap():
    y = np.arange(8, dtype="float64").reshape(2, 4)
    vis = np.array([[1, 1, 0, 0], [0, 0, 1, 1]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="jointly visible"):
        ld.squared_l2(y, visibility=vis)
    d = ld.squared_l2(y, visibility=vis, no_overlap_value=7.0).numpy()
    assert d[0, 1] == d[1, 0] == 7.0
    assert d[0, 0] == d[1, 1] == 0.0
    with pytest.raises(ValueError, match="per joint"):
        ld.squared_l2(y, visibility=np.ones((2, 3)))


# ---------------------------------------------------------------- 1 - mIoU

def ref_one_minus_miou(a, b, num_classes):
    ious = []
    for c in range(num_classes):
        inter = np.logical_and(a == c, b == c).sum()
        union = np.logical_or(a == c, b == c).sum()
        if union > 0:
            ious.append(inter / union)
    return 1.0 - np.mean(ious) if ious else 0.0


def test_miou_hand_made_layouts():
    left_right = np.array([[0, 0, 1, 1]] * 4)
    all_zero = np.zeros((4, 4), int)
    # A three-wall layout: ceiling row, two walls, floor row.
    room = np.array([[0, 0, 0, 0],
                     [1, 1, 2, 2],
                     [1, 1, 2, 2],
                     [3, 3, 3, 3]])
    shifted = np.array([[0, 0, 0, 0],
                        [1, 2, 2, 2],
                        [1, 2, 2, 2],
                        [3, 3, 3, 3]])
    maps = np.stack([left_right, all_zero, room, shifted])
    d = ld.one_minus_miou(maps, num_classes=4).numpy()
    # left_right vs all_zero: classes {0, 1}: IoU_0 = 8/16, IoU_1 = 0 -> 0.75.
    assert d[0, 1] == pytest.approx(0.75)
    # room vs shifted: IoU_0 = 1, IoU_1 = 2/4, IoU_2 = 4/6, IoU_3 = 1.
    assert d[2, 3] == pytest.approx(1 - (1 + 0.5 + 4 / 6 + 1) / 4)
    # left_right vs room: classes 0..3 all present: IoU_0 = 2/(8+4-2) = 0.2
    # (row 0, columns 0-1); class 1 is the right half in one map and the
    # left wall in the other: IoU_1 = 0; IoU_2 = IoU_3 = 0.
    assert d[0, 2] == pytest.approx(1 - 0.2 / 4)
    assert np.all(np.diag(d) == 0)
    np.testing.assert_allclose(d, d.T)


def test_miou_random_vs_reference_and_ignore(rng):
    a = rng.integers(0, 5, size=(6, 7, 5))
    b = rng.integers(0, 5, size=(4, 7, 5))
    a[0, :2] = 255                            # ignore label: no class
    b[1, 3:] = -1
    got = ld.one_minus_miou(a, b, num_classes=5).numpy()
    ref = np.array([[ref_one_minus_miou(x, y, 5) for y in b] for x in a])
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
    # Keras hands y_true over as float: whole-number floats are accepted.
    got_f = ld.one_minus_miou(a.astype("float32"), b.astype("float32"), num_classes=5).numpy()
    np.testing.assert_allclose(got_f, got)
    # Pixel masks act like the ignore label.
    mask = np.ones_like(a)
    mask[0, :2] = 0
    a2 = a.copy()
    a2[0, :2] = 3
    np.testing.assert_allclose(
        ld.one_minus_miou(a2, b, num_classes=5, mask1=mask).numpy(), got, atol=1e-7)


def test_miou_errors():
    with pytest.raises(ValueError, match="num_classes"):
        ld.one_minus_miou(np.zeros((2, 3, 3), int))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        ld.one_minus_miou(np.zeros((3, 3), int), num_classes=2)


# ---------------------------------------------------------------- caption sets

def ref_caption_set(c1, c2, m1, m2):
    def cos_dist(u, v):
        nu, nv = math.sqrt((u * u).sum()), math.sqrt((v * v).sum())
        return 1.0 - float((u * v).sum()) / (nu * nv)

    out = np.zeros((len(c1), len(c2)))
    for i in range(len(c1)):
        for j in range(len(c2)):
            a_set = [c1[i, k] for k in range(c1.shape[1]) if m1[i, k]]
            b_set = [c2[j, k] for k in range(c2.shape[1]) if m2[j, k]]
            out[i, j] = (sum(min(cos_dist(a, b) for b in b_set) for a in a_set)
                         + sum(min(cos_dist(b, a) for a in a_set) for b in b_set))
    return out


def test_caption_set_cosine(rng):
    c1 = rng.normal(size=(4, 5, 6))
    c2 = rng.normal(size=(3, 5, 6))
    m1 = rng.uniform(size=(4, 5)) > 0.3
    m2 = rng.uniform(size=(3, 5)) > 0.3
    m1[:, 0] = m2[:, 0] = True
    ref = ref_caption_set(c1, c2, m1, m2)
    got = ld.caption_set_distance(c1, c2, m1, m2).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    # Default mask: all-zero caption slots are padding.
    got_pad = ld.caption_set_distance(c1 * m1[..., None], c2 * m2[..., None]).numpy()
    np.testing.assert_allclose(got_pad, ref, rtol=1e-10)
    within = ld.caption_set_distance(c1, mask1=m1).numpy()
    np.testing.assert_allclose(within, ref_caption_set(c1, c1, m1, m1), atol=1e-10)
    assert np.all(np.diag(within) == 0)


def test_caption_set_hand_checked():
    e = np.eye(3)
    a = np.stack([e[0], e[1]])        # captions along x and y
    b = np.stack([e[0], e[2]])        # x and z
    # a->b: x->x 0, y->min(1, 1) = 1; b->a: x 0, z 1 -> total 2.
    got = ld.caption_set_distance(a[None], b[None]).numpy()
    assert got[0, 0] == pytest.approx(2.0)


def test_caption_set_needs_a_caption():
    c = np.zeros((2, 3, 4))
    c[0, 0] = 1.0
    with pytest.raises(tf.errors.InvalidArgumentError, match="no caption"):
        ld.caption_set_distance(c)


# ---------------------------------------------------------------- WMD

def test_wmd_hand_checked():
    vecs = {"a": [0.0], "b": [1.0], "c": [0.5], "d": [3.0]}
    # One word each: the distance between the two words.
    assert ld.word_movers_distance(["a"], ["d"], vecs) == pytest.approx(3.0)
    # Half the mass each: a->c (0.5) and b->d (2) beat a->d, b->c: 0.5*0.5 + 0.5*2.
    assert ld.word_movers_distance(["a", "b"], ["c", "d"], vecs) == pytest.approx(1.25)
    # Repeated words weigh more: 2/3 |a - c| + 1/3 |b - c|.
    assert ld.word_movers_distance(["a", "a", "b"], ["c"], vecs) == pytest.approx(0.5)
    # Same bag of words -> 0; words without a vector are dropped.
    assert ld.word_movers_distance(["a", "b", "zzz"], ["b", "a"], vecs) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="no token"):
        ld.word_movers_distance(["zzz"], ["a"], vecs)


def test_wmd_2d_hand_checked():
    # Unit square corners: doc1 = {(0,0), (1,1)}, doc2 = {(1,0), (0,1)}:
    # every assignment moves half the mass a distance 1 -> 1.0.
    vecs = np.array([[0, 0], [1, 1], [1, 0], [0, 1], [5, 5]], float)
    assert ld.word_movers_distance([0, 1], [2, 3], vecs) == pytest.approx(1.0)
    # {(0,0)} to {(1,1), (5,5)}: half to each: 0.5*sqrt(2) + 0.5*sqrt(50).
    d, (_, _, flow) = ld.word_movers_distance([0], [1, 4], vecs, return_flow=True)
    assert d == pytest.approx(0.5 * math.sqrt(2) + 0.5 * math.sqrt(50))
    np.testing.assert_allclose(flow, [[0.5, 0.5]], atol=1e-9)


def test_wmd_equals_1d_wasserstein(rng):
    from scipy.stats import wasserstein_distance
    vocab = rng.normal(size=(12, 1))
    doc1 = list(rng.integers(0, 12, size=7))
    doc2 = list(rng.integers(0, 12, size=5))
    ref = wasserstein_distance(vocab[doc1, 0], vocab[doc2, 0])
    assert ld.word_movers_distance(doc1, doc2, vocab) == pytest.approx(ref, abs=1e-9)


def test_caption_set_wmd():
    vecs = {"a": [0.0], "b": [1.0], "c": [4.0]}
    sets = [[["a"], ["b"]], [["c"]], [["a", "c"]]]
    got = ld.caption_set_distance(sets, word_vectors=vecs)
    wmd = lambda x, y: ld.word_movers_distance(x, y, vecs)   # noqa: E731
    ref = np.zeros((3, 3))
    for i, s1 in enumerate(sets):
        for j, s2 in enumerate(sets):
            if i != j:
                ref[i, j] = (sum(min(wmd(a, b) for b in s2) for a in s1)
                             + sum(min(wmd(b, a) for a in s1) for b in s2))
    np.testing.assert_allclose(got, ref, atol=1e-9)
    # Hand check: {a, b} vs {c}: a->c 4, b->c 3; c->min(4, 3) = 3 -> 10.
    assert got[0, 1] == pytest.approx(10.0)
    # {c} vs {"a c"}: c->"a c" = 0.5*4 = 2, and back 2 -> 4.
    assert got[1, 2] == pytest.approx(4.0)


# ---------------------------------------------------------------- offline builder

def test_pairwise_label_distances_chunked(rng, tmp_path):
    y = rng.normal(size=(11, 3))
    full = ld.squared_l2(y).numpy()
    for chunk in (1, 3, 4, 100):
        got = ld.pairwise_label_distances(y, "squared_l2", chunk_size=chunk)
        np.testing.assert_allclose(got, full, rtol=1e-6, atol=1e-6)
        assert got.dtype == np.float32 and np.all(np.diag(got) == 0)
    y2 = rng.normal(size=(5, 3))
    got = ld.pairwise_label_distances(y, chunk_size=4, labels2=y2)
    np.testing.assert_allclose(got, ld.squared_l2(y, y2).numpy(), rtol=1e-6)
    # Into a memmap on disk.
    out = np.lib.format.open_memmap(tmp_path / "dy.npy", mode="w+", dtype=np.float32,
                                    shape=(11, 11))
    ld.pairwise_label_distances(y, chunk_size=3, out=out)
    out.flush()
    np.testing.assert_allclose(np.load(tmp_path / "dy.npy"), full, rtol=1e-6, atol=1e-6)


def test_pairwise_label_distances_tuple_callable_and_kwargs(rng):
    y = rng.normal(size=(7, 6))
    vis = rng.uniform(size=(7, 3)) > 0.2
    vis[:, 0] = True
    got = ld.pairwise_label_distances((y, vis), "squared_l2", chunk_size=2)
    np.testing.assert_allclose(got, ld.squared_l2(y, visibility=vis).numpy(), rtol=1e-6, atol=1e-6)
    maps = rng.integers(0, 3, size=(6, 4, 4))
    got = ld.pairwise_label_distances(maps, "one_minus_miou", chunk_size=4, num_classes=3)
    np.testing.assert_allclose(got, ld.one_minus_miou(maps, num_classes=3).numpy(), atol=1e-7)
    manhattan = lambda a, b: np.abs(a[:, None] - b[None]).sum(-1)   # noqa: E731
    got = ld.pairwise_label_distances(y, manhattan, chunk_size=3)
    np.testing.assert_allclose(got, manhattan(y, y), rtol=1e-6)


def test_batch_label_distances_precomputed_checks():
    with pytest.raises(ValueError, match="square"):
        ld.batch_label_distances(np.zeros((3, 4)), "precomputed")
    with pytest.raises(ValueError, match=r"\[B, B\]"):
        ld.batch_label_distances(np.zeros((3,)), "precomputed")
    with pytest.raises(tf.errors.InvalidArgumentError, match="batch size"):
        ld.batch_label_distances(np.zeros((3, 3)), "precomputed", batch_size=4)
    row = ld.batch_label_distances(np.arange(4.0), "precomputed", first_row_only=True)
    assert row.shape == (1, 4)
