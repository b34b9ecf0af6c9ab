"""Word mover's distance between two bags of words, by an exact linear program.

    WMD(d, d') = min_{T >= 0} sum_{u, v} T_uv ||x_u - x_v||,
                 sum_v T_uv = w_u,  sum_u T_uv = w'_v

An offline tool (numpy + scipy, one small LP per pair of documents), used by
``caption_set_distance`` when word vectors are given.
"""

from collections.abc import Mapping

import numpy as np

__all__ = ["word_movers_distance"]


def _word_vector(word_vectors, token):
    if isinstance(word_vectors, Mapping):
        return word_vectors.get(token)
    if isinstance(token, (int, np.integer)) and 0 <= token < len(word_vectors):
        return word_vectors[token]
    return None


def word_movers_distance(doc1, doc2, word_vectors, return_flow=False):
    """Exact word mover's distance (Kusner et al., 2015) by linear programming.

        WMD(d, d') = min_{T >= 0} sum_{u, v} T_uv ||x_u - x_v||
                     s.t. sum_v T_uv = w_u,  sum_u T_uv = w'_v

    where w, w' are the normalised bag-of-words weights (word counts / number
    of words) of the two documents and x_u the word vectors. Solved exactly
    with ``scipy.optimize.linprog`` (HiGHS). Tokens with no vector are
    dropped, as in gensim; a document left empty is an error.

    Args:
      doc1, doc2: sequences of tokens (strings, or ints indexing an array).
      word_vectors: a mapping token -> vector, or an array [V, E] indexed by
        integer tokens.
      return_flow: also return (tokens1, tokens2, T).
    Returns:
      The distance (float), or (distance, (tokens1, tokens2, T)).
    """
    from scipy.optimize import linprog

    def bow(doc, name):
        counts = {}
        for tok in doc:
            if _word_vector(word_vectors, tok) is not None:
                counts[tok] = counts.get(tok, 0) + 1
        if not counts:
            raise ValueError(f"word_movers_distance: {name} has no token with a word vector.")
        toks = list(counts)
        w = np.array([counts[t] for t in toks], np.float64)
        vecs = np.stack([np.asarray(_word_vector(word_vectors, t), np.float64) for t in toks])
        return toks, w / w.sum(), vecs

    t1, w1, x1 = bow(doc1, "doc1")
    t2, w2, x2 = bow(doc2, "doc2")
    cost = np.sqrt(np.maximum(
        ((x1[:, None, :] - x2[None, :, :]) ** 2).sum(-1), 0.0))
    n1, n2 = len(t1), len(t2)
    a_eq = np.zeros((n1 + n2, n1 * n2))
    for u in range(n1):
        a_eq[u, u * n2:(u + 1) * n2] = 1.0          # row sums: T[u, :] = w1[u]
    for v in range(n2):
        a_eq[n1 + v, v::n2] = 1.0                   # column sums: T[:, v] = w2[v]
    b_eq = np.concatenate([w1, w2])
    res = linprog(cost.ravel(), A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    if res.status != 0:
        raise RuntimeError(f"word_movers_distance: linear program failed: {res.message}")
    dist = max(float(res.fun), 0.0)
    if return_flow:
        return dist, (t1, t2, res.x.reshape(n1, n2))
    return dist
