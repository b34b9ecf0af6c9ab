"""label_distances/captions.py: caption-set distances, cosine and WMD."""

import math

import numpy as np
import pytest

from backend_tools import to_numpy
from continuous_tools import assert_close
from keras_dml import label_distances as ld
from keras_dml._backend import full_precision

pytestmark = pytest.mark.backends


@pytest.fixture(autouse=True)
def _float64():
    # float64 inputs stay float64 under JAX too (x64 for each test; PyTorch
    # computes them in float32: Keras 3.15 maps 64-bit to 32-bit there).
    with full_precision():
        yield


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
    got = to_numpy(ld.caption_set_distance(c1, c2, m1, m2))
    assert_close(got, ref, rtol=1e-10)
    # Default mask: all-zero caption slots are padding.
    got_pad = to_numpy(ld.caption_set_distance(c1 * m1[..., None], c2 * m2[..., None]))
    assert_close(got_pad, ref, rtol=1e-10)
    within = to_numpy(ld.caption_set_distance(c1, mask1=m1))
    assert_close(within, ref_caption_set(c1, c1, m1, m1), atol=1e-10)
    assert np.all(np.diag(within) == 0)


def test_caption_set_hand_checked():
    e = np.eye(3)
    a = np.stack([e[0], e[1]])        # captions along x and y
    b = np.stack([e[0], e[2]])        # x and z
    # a->b: x->x 0, y->min(1, 1) = 1; b->a: x 0, z 1 -> total 2.
    got = to_numpy(ld.caption_set_distance(a[None], b[None]))
    assert got[0, 0] == pytest.approx(2.0)


def test_caption_set_needs_a_caption():
    c = np.zeros((2, 3, 4))
    c[0, 0] = 1.0
    with pytest.raises(ValueError, match="no caption"):
        ld.caption_set_distance(c)


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
    assert_close(got, ref, atol=1e-9)
    # Hand check: {a, b} vs {c}: a->c 4, b->c 3; c->min(4, 3) = 3 -> 10.
    assert got[0, 1] == pytest.approx(10.0)
    # {c} vs {"a c"}: c->"a c" = 0.5*4 = 2, and back 2 -> 4.
    assert got[1, 2] == pytest.approx(4.0)
