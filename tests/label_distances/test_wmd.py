"""label_distances/wmd.py: the word mover's distance, hand-checked and vs 1-D Wasserstein."""

import math

import numpy as np
import pytest

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
    assert_close(flow, [[0.5, 0.5]], atol=1e-9)


def test_wmd_equals_1d_wasserstein(rng):
    from scipy.stats import wasserstein_distance
    vocab = rng.normal(size=(12, 1))
    doc1 = list(rng.integers(0, 12, size=7))
    doc2 = list(rng.integers(0, 12, size=5))
    ref = wasserstein_distance(vocab[doc1, 0], vocab[doc2, 0])
    assert ld.word_movers_distance(doc1, doc2, vocab) == pytest.approx(ref, abs=1e-9)
