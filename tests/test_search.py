"""keras_dml.search (the exact engine): exact ties, exclusion by index, brute force."""

import itertools

import numpy as np
import pytest

from backend_tools import compiled, tensor, to_numpy
from keras_dml import search
from keras_dml.search import top_k_neighbours

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


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_identical_gallery_rows_tie_exactly_and_lower_index_wins(rng, metric):
    # Arbitrary (non-dyadic) values: identical rows at many positions, so a
    # matmul kernel's column blocking could round them differently.
    base = rng.normal(size=(7, 24)).astype(np.float32)
    rows = rng.integers(0, 7, 203)
    g = base[rows]
    q = rng.normal(size=(11, 24)).astype(np.float32)
    idx, scores = top_k_neighbours(q, g, k=60, metric=metric, chunk_size=4,
                                   return_scores=True)
    for i in range(len(q)):
        for a in range(59):
            ja, jb = idx[i, a], idx[i, a + 1]
            if rows[ja] == rows[jb]:
                assert scores[i, a] == scores[i, a + 1]      # bit for bit
                assert ja < jb                               # tie rule
    # The whole ranking equals the brute force's, ties by index.
    if metric == "cosine":
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


# ------------------------------------------- the tie rule on every backend
def ranked(s, k):
    """numpy reference: columns by (score desc, column asc), first k."""
    return np.array([sorted(range(s.shape[1]), key=lambda j: (-s[i, j], j))[:k]
                     for i in range(s.shape[0])])


def dyadic_scores(rng, c, n):
    """Scores in {-1.5, ..., 1.5} (few values: ties everywhere), some -inf
    (excluded items)."""
    s = rng.integers(-3, 4, (c, n)).astype(np.float32) / 2
    s[rng.random((c, n)) < 0.05] = -np.inf
    return s


@pytest.mark.parametrize("n,k,block", [(7, 7, 64), (50, 1, 64), (300, 13, 64),
                                       (700, 5, 8), (1000, 40, 16),
                                       (5000, 3, 64)])
def test_top_k_exact_and_blocked_follow_the_tie_rule(rng, n, k, block):
    # keras.ops.top_k's order among equal values differs between backends
    # (PyTorch's CPU top-k does not return the lower index first); ours may
    # not depend on it, eagerly or compiled.
    s = dyadic_scores(rng, 6, n)
    expected = ranked(s, k)
    fns = {"exact": lambda t: search.top_k_exact(t, k),
           "blocked": lambda t: search.top_k_blocked(t, k, block)}
    # The host path (numpy, rows split over threads when the matrix is big).
    for rows in (6, 3000):
        big = dyadic_scores(rng, rows, n) if rows > 6 else s
        values, columns = search.host_top_k(big, k)
        want = expected if rows == 6 else ranked(big[::499], k)
        got = columns if rows == 6 else columns[::499]
        np.testing.assert_array_equal(got, want, err_msg=f"host, {rows} rows")
        assert columns.dtype == np.int32
        np.testing.assert_array_equal(values, np.take_along_axis(big, columns, 1))
    for name, fn in fns.items():
        runs = {"eager": fn}
        if compiled(fn) is not None:
            runs["compiled"] = compiled(fn)
        for how, run in runs.items():
            values, columns = run(tensor(s))
            np.testing.assert_array_equal(to_numpy(columns), expected,
                                          err_msg=f"{name} {how}")
            np.testing.assert_array_equal(to_numpy(values),
                                          np.take_along_axis(s, expected, 1))


def test_search_ranks_exact_ties_the_same_on_every_backend(rng):
    # Dyadic embeddings: every score is exact in float32 whatever the
    # summation order, so the result is fully determined by the tie rule and
    # equals the float64 numpy brute force (on every backend, eagerly and in
    # the compiled search).
    g = rng.choice([-1.0, 0.0, 1.0], size=(500, 4)).astype(np.float32)
    q = rng.choice([-1.0, 0.0, 1.0], size=(9, 4)).astype(np.float32)
    for score in ("cosine", "euclidean"):
        idx, values = top_k_neighbours(q, g, k=50, metric=score, chunk_size=4,
                                       return_scores=True)
        if score == "cosine":
            expected = brute_force(q, g, 50, [-1] * 9)
        else:
            s = 2.0 * q.astype(np.float64) @ g.T - (g.astype(np.float64) ** 2).sum(1)
            expected = ranked(s, 50)
        np.testing.assert_array_equal(idx, expected)
        assert len(np.unique(values)) < values.size / 5       # many ties


# ------------------------------------------- half-Gram self-retrieval search
def signed_unit_rows(dim):
    """Every distinct row with one entry +-1, or four entries +-1: normalised
    entries are +-1 or +-0.5, exact in float32, so every cosine is an exact
    multiple of 0.25 whatever the summation order or fused multiply-adds:
    ties everywhere, and no duplicate rows."""
    rows = []
    for support in itertools.chain(itertools.combinations(range(dim), 1),
                                   itertools.combinations(range(dim), 4)):
        for signs in itertools.product((-1.0, 1.0), repeat=len(support)):
            row = np.zeros(dim, np.float32)
            row[list(support)] = signs
            rows.append(row)
    return np.array(rows)


@pytest.mark.parametrize("k,block", [(1, 16), (7, 16), (40, 16), (30, 1024)])
def test_half_gram_self_search_follows_the_tie_rule(rng, k, block):
    x = signed_unit_rows(6)                                   # 252 rows
    x = x[rng.permutation(len(x))]
    gallery = search.Gallery(x)
    if not search.host_matmul():
        # On a device the chunked search runs; the half-Gram one refuses.
        assert not gallery.can_halve_self_search()
        with pytest.raises(ValueError, match="can_halve_self_search"):
            next(gallery.host_self_top_k(k))
        return
    assert gallery.can_halve_self_search()
    blocks = list(gallery.host_self_top_k(k, block=block))
    assert [b[0] for b in blocks] == list(range(0, len(x), block))
    values = np.concatenate([b[2] for b in blocks])
    columns = np.concatenate([b[3] for b in blocks])
    assert columns.dtype == np.int32
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = xn.astype(np.float64) @ xn.astype(np.float64).T
    np.fill_diagonal(s, -np.inf)                              # self excluded
    np.testing.assert_array_equal(columns, ranked(s, k))
    np.testing.assert_array_equal(values, np.take_along_axis(s, columns, 1))
    assert len(np.unique(values)) <= 9                        # ties everywhere


def test_half_gram_self_search_matches_the_chunked_search(rng):
    # Random rows (no ties): the same neighbours as scoring every query
    # against the whole gallery, over several blocks and a partial last one.
    x = rng.standard_normal((1300, 24)).astype(np.float32)
    gallery = search.Gallery(x)
    if not gallery.can_halve_self_search():
        pytest.skip("the half-Gram search runs on the host path only (TensorFlow "
                    "or JAX on a CPU); this backend searches in chunks")
    expected_values, expected = search.host_top_k(
        gallery.host_scores(x, np.arange(len(x))), 9)
    got = list(gallery.host_self_top_k(9, block=256))
    columns = np.concatenate([b[3] for b in got])
    values = np.concatenate([b[2] for b in got])
    np.testing.assert_allclose(values, expected_values, rtol=0, atol=1e-6)
    # The two products may round a score differently in the last bit (another
    # summation kernel, another CPU): only near-equal neighbours may swap.
    # The columns returned carry those scores, wherever a swap happened.
    assert (columns != expected).mean() < 0.001
    scores = gallery.host_scores(x, np.arange(len(x)))
    np.testing.assert_allclose(np.take_along_axis(scores, columns, 1), expected_values,
                               rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="k must be in"):
        next(gallery.host_self_top_k(1300))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 7, 64])
def test_blocked_host_search_follows_the_tie_rule(rng, monkeypatch, metric, k):
    # Gallery.top_k on the host path scores the gallery block by block with a
    # running k-th best instead of a [c, Ng] matrix. Exact scores (cosine:
    # entries +-1 / +-0.5; euclidean: integers) make the answer the tie rule's
    # alone; small blocks make every query cross many.
    monkeypatch.setattr(search, "HOST_QUERY_CHUNK", 16)
    monkeypatch.setattr(search, "HOST_COLUMN_BLOCK", 64)
    if metric == "cosine":
        g = signed_unit_rows(6)
        q = g[rng.choice(len(g), 40)]
        gn = g / np.linalg.norm(g, axis=1, keepdims=True)
        s = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float64) @ gn.T
    else:
        g = np.unique(rng.integers(-2, 3, (400, 4)), axis=0).astype(np.float32)
        q = rng.integers(-2, 3, (40, 4)).astype(np.float32)
        s = 2.0 * q.astype(np.float64) @ g.T - (g.astype(np.float64) ** 2).sum(1)
    exclude = rng.integers(-1, len(g), len(q)).astype(np.int32)
    s[exclude >= 0, exclude[exclude >= 0]] = -np.inf
    calls = []
    blocked = search.Gallery.host_top_k_by_blocks
    monkeypatch.setattr(search.Gallery, "host_top_k_by_blocks",
                        lambda self, *a, **kw: calls.append(1) or blocked(self, *a, **kw))
    gallery = search.Gallery(g, metric)
    assert not gallery.has_duplicates
    values, columns = gallery.top_k(q, k, exclude=tensor(exclude))
    # the host path's default: Gallery.top_k goes through the blocked search
    assert bool(calls) == bool(gallery.host_product)
    np.testing.assert_array_equal(to_numpy(columns), ranked(s, k))
    np.testing.assert_array_equal(to_numpy(values), np.take_along_axis(s, ranked(s, k), 1))
    if gallery.host_product:
        with pytest.raises(ValueError, match="host_top_k_by_blocks needs"):
            gallery.host_top_k_by_blocks(q, 65)
