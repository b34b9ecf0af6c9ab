"""keras_dml.evaluation.search: exact ties, exclusion by index, brute force."""

import numpy as np
import pytest

from backend_tools import to_numpy
from keras_dml.evaluation import search
from keras_dml.evaluation.search import top_k_neighbours

# Backend-neutral: CI runs this module under tensorflow, jax and torch.
pytestmark = pytest.mark.backends


def brute_force(q, g, k, exclude):
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-6)
    gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-6)
    s = qn.astype(np.float64) @ gn.astype(np.float64).T
    out = []
    for i in range(len(q)):
        cand = [j for j in range(len(g)) if j != exclude[i]]
        out.append(sorted(cand, key=lambda j: (-s[i, j], j))[:k])
    return np.array(out)


def test_unique_rows_finds_duplicates_and_signed_zeros(rng):
    x = rng.normal(size=(9, 4)).astype(np.float32)
    x[5] = x[1]
    x[8] = x[1]
    x[7] = x[2]
    assert search.unique_rows(x[[0, 1, 2]]) is None
    first, inverse = search.unique_rows(x)
    np.testing.assert_array_equal(first, sorted(first))
    np.testing.assert_array_equal(x[first][inverse], x)
    assert len(first) == 6 and inverse[5] == inverse[8] == inverse[1]
    z = np.zeros((2, 3), np.float32)
    z[1, 0] = -0.0
    assert to_numpy(search.Gallery(z).inverse).tolist() == [0, 0]


def test_unique_rows_survives_hash_collisions(rng, monkeypatch):
    x = rng.normal(size=(6, 3)).astype(np.float32)
    x[4] = x[0]
    monkeypatch.setattr(search, "_row_hashes",
                        lambda a: np.zeros(len(a), np.uint64))   # all collide
    first, inverse = search.unique_rows(x)
    np.testing.assert_array_equal(x[first][inverse], x)
    assert len(first) == 5


@pytest.mark.parametrize("score", ["cosine", "euclidean"])
def test_identical_gallery_rows_tie_exactly_and_lower_index_wins(rng, score):
    # Arbitrary (non-dyadic) values: identical rows at many positions, so a
    # matmul kernel's column blocking could round them differently.
    base = rng.normal(size=(7, 24)).astype(np.float32)
    rows = rng.integers(0, 7, 203)
    g = base[rows]
    q = rng.normal(size=(11, 24)).astype(np.float32)
    idx, scores = top_k_neighbours(q, g, k=60, score=score, chunk_size=4,
                                   return_scores=True)
    for i in range(len(q)):
        for a in range(59):
            ja, jb = idx[i, a], idx[i, a + 1]
            if rows[ja] == rows[jb]:
                assert scores[i, a] == scores[i, a + 1]      # bit for bit
                assert ja < jb                               # tie rule
    # The whole ranking equals the brute force's, ties by index.
    if score == "cosine":
        np.testing.assert_array_equal(idx, brute_force(q, g, 60, [-1] * 11))


def test_exclude_index_matches_brute_force(rng):
    g = rng.normal(size=(40, 5)).astype(np.float32)
    g[17] = g[3]
    pick = np.array([3, 17, 0, 39, 5])
    q = g[pick]
    exclude = pick.copy()
    exclude[2] = -1                            # query 2 keeps its own item
    idx = top_k_neighbours(q, g, k=6, exclude_index=exclude, chunk_size=2)
    np.testing.assert_array_equal(idx, brute_force(q, g, 6, exclude))
    assert idx[0, 0] == 17 and idx[1, 0] == 3  # the duplicate is still found
    assert idx[2, 0] == 0
    # exclude_self with the queries = the gallery is the same thing.
    np.testing.assert_array_equal(
        top_k_neighbours(g, None, k=3),
        top_k_neighbours(g, g, k=3, exclude_index=np.arange(40)))


def test_bad_arguments(rng):
    g = rng.normal(size=(5, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="k must be an integer in \\[1, 4\\]"):
        top_k_neighbours(g, None, k=5)
    with pytest.raises(ValueError, match="k must be an integer in \\[1, 5\\]"):
        top_k_neighbours(g[:2], g, k=6)
    with pytest.raises(ValueError, match="exclude_index must be 2 integers"):
        top_k_neighbours(g[:2], g, k=2, exclude_index=[0])
    with pytest.raises(ValueError, match="-1 or gallery indices"):
        top_k_neighbours(g[:2], g, k=2, exclude_index=[0, 5])
    with pytest.raises(ValueError, match="not both"):
        top_k_neighbours(g[:2], g, k=2, exclude_self=True, exclude_index=[0, 1])
    with pytest.raises(ValueError, match="NaN"):
        top_k_neighbours(np.full((2, 3), np.nan), g, k=2)
    with pytest.raises(ValueError, match="dimension"):
        top_k_neighbours(g[:, :2], g, k=2)
