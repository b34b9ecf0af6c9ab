"""The contract of kd.retrieval.Index, run against every backend: exact,
faiss (Flat), Milvus Lite embedded (a .db in tmp_path) and Milvus through
the network (``milvus-lite server`` on 127.0.0.1, the path a Milvus cluster
takes). The same assertions: search with ties (milvus: rerank=True), ids
across adds, upsert, remove, metadata, match, calibrate, filtered search,
save/load in a fresh process."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import keras_dml as kd
from keras_dml.retrieval import Index
from milvus_fixtures import collection_name, milvus_server  # noqa: F401
from references import reference

ROOT = Path(__file__).resolve().parents[2]  # tests/retrieval/ -> the checkout
KINDS = ["exact", "faiss", "milvus-lite", "milvus-server"]


@pytest.fixture(params=KINDS)
def make(request, tmp_path):
    """make(dim, metric="cosine", **kwargs) -> a new empty Index of this
    test's backend kind; milvus indexes are closed at the end."""
    kind = request.param
    opened = []
    if kind == "faiss":
        reference("faiss", "faiss backend")
    if kind.startswith("milvus"):
        reference("pymilvus", "milvus backend")
    if kind == "milvus-lite":
        reference("milvus_lite", "embedded Milvus Lite")
    server = (request.getfixturevalue("milvus_server")
              if kind == "milvus-server" else None)

    def factory(dim, metric="cosine", uri=None, **kwargs):
        if kind == "exact":
            index = Index(dim, metric, **kwargs)
        elif kind == "faiss":
            index = Index(dim, metric, backend="faiss", faiss_factory="Flat", **kwargs)
        else:
            uri = uri or (server or str(tmp_path / "gallery.db"))
            kwargs.setdefault("index_type", "FLAT")
            kwargs.setdefault("rerank", True)
            index = Index(dim, metric, backend="milvus", uri=str(uri),
                          collection=collection_name(), **kwargs)
        opened.append(index)
        return index
    factory.kind = kind
    yield factory
    for index in opened:
        index.close()


def brute_force(q, g, ids, k, metric, allowed=None):
    """float64 scores, ranked by (-score, id); ``allowed`` masks items."""
    q64, g64 = q.astype(np.float64), g.astype(np.float64)
    if metric == "cosine":
        s = (q64 / np.linalg.norm(q64, axis=1, keepdims=True)) @ (
            g64 / np.linalg.norm(g64, axis=1, keepdims=True)).T
    else:
        s = -((q64[:, None, :] - g64[None]) ** 2).sum(-1)
    keep = np.arange(len(g)) if allowed is None else np.flatnonzero(allowed)
    order = np.array([sorted(keep, key=lambda j: (-s[i, j], ids[j]))[:k]
                      for i in range(len(q))])
    return ids[order], np.take_along_axis(s, order, 1)


def tied_data(rng, n=90, dim=8):
    """Rows drawn from 12 distinct ones: many exact ties."""
    base = rng.normal(size=(12, dim)).astype(np.float32)
    return base[rng.integers(0, 12, n)], rng.normal(size=(7, dim)).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_search_with_ties(make, rng, metric):
    g, q = tied_data(rng)
    index = make(8, metric)
    assert index.add(g[:40], labels=np.arange(40) % 5).tolist() == list(range(40))
    assert index.add(g[40:], labels=np.arange(40, 90) % 5).tolist() == list(range(40, 90))
    assert len(index) == 90
    r = index.search(q, k=20)
    ids, scores = brute_force(q, g, np.arange(90), 20, metric)
    np.testing.assert_allclose(r.scores, scores, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(r.labels, r.ids % 5)
    assert r.ids.dtype == np.int64 and r.scores.dtype == np.float32
    assert r.labels.dtype == np.int64
    if make.kind == "faiss":
        # faiss's BLAS may score equal rows an ulp apart, so the order among
        # equal rows is not defined: the right items and scores, any order.
        _, own = brute_force(q, g, np.arange(90), 90, metric)
        full = np.argsort(brute_force(q, g, np.arange(90), 90, metric)[0], 1)
        got = np.take_along_axis(own, full[np.arange(len(q))[:, None], r.ids], 1)
        np.testing.assert_allclose(got, scores, rtol=1e-5, atol=1e-4)
        assert all(len(set(row)) == 20 for row in r.ids.tolist())
        return
    np.testing.assert_array_equal(r.ids, ids)           # ties: the lower id
    dup = g[r.ids]                                       # equal rows tie exactly
    same = np.all(dup[:, 1:] == dup[:, :-1], axis=-1)
    assert same.any()
    assert np.all(r.scores[:, 1:][same] == r.scores[:, :-1][same])


def test_ids_upsert_and_remove(make, rng):
    x = rng.normal(size=(12, 4)).astype(np.float32)
    index = make(4)
    np.testing.assert_array_equal(index.add(x[:3]), [0, 1, 2])
    np.testing.assert_array_equal(index.add(x[3:5], ids=[10, 20]), [10, 20])
    np.testing.assert_array_equal(index.add(x[5:7]), [21, 22])
    index.remove([20, 0])
    assert len(index) == 5
    assert sorted(index.ids.tolist()) == [1, 2, 10, 21, 22]
    np.testing.assert_array_equal(index.add(x[7:8]), [23])      # never reused
    with pytest.raises(KeyError, match=r"ids not in the index: \[8\]"):
        index.remove([1, 8])
    assert len(index) == 6                                       # nothing removed
    with pytest.raises(ValueError, match=r"duplicate ids in this add: \[9\]"):
        index.add(x[:3], ids=[9, 9, 30])
    # upsert: id 10 gets a new vector, label and metadata; 40 is new
    index.add(x[[9, 11]], ids=[10, 40], labels=[7, 8],
              metadata=[{"v": 2}, None])
    assert len(index) == 7
    assert sorted(index.ids.tolist()) == [1, 2, 10, 21, 22, 23, 40]
    r = index.search(x[[9, 3]], k=1)
    assert r.ids[0, 0] == 10 and r.labels[0, 0] == 7
    assert r.ids[1, 0] != 10                                     # old vector gone
    assert index.get_metadata([[10, 40, -1]]) == [[{"v": 2}, None, None]]
    data = index.read(["ids", "embeddings", "labels"])
    row = data["ids"].tolist().index(10)
    np.testing.assert_array_equal(data["embeddings"][row], x[9])
    assert data["labels"][row] == 7
    assert index.add(x[:1]).tolist() == [41]


def test_filtered_search(make, rng):
    g = rng.normal(size=(80, 6)).astype(np.float32)
    labels = np.arange(80) % 8
    q = rng.normal(size=(9, 6)).astype(np.float32)
    index = make(6)
    index.add(g, labels=labels)
    for allowed in ([3], [0, 5, 7]):
        r = index.search(q, k=6, labels=allowed)
        ids, scores = brute_force(q, g, np.arange(80), 6, "cosine",
                                  np.isin(labels, allowed))
        np.testing.assert_array_equal(r.ids, ids)
        np.testing.assert_allclose(r.scores, scores, rtol=1e-5, atol=1e-4)
        assert np.isin(r.labels, allowed).all()
    # fewer matching items than k: padded with -1 / -inf / -1
    r = index.search(q[:2], k=14, labels=[2])
    assert (r.ids[:, :10] >= 0).all() and (r.ids[:, 10:] == -1).all()
    assert np.isneginf(r.scores[:, 10:]).all() and (r.labels[:, 10:] == -1).all()
    assert (index.search(q[:2], k=3, labels=[99]).ids == -1).all()
    m = index.match(q, threshold=-1.0, labels=[4])
    assert (m.labels == 4).all() and m.accepted.all()
    with pytest.raises(ValueError, match="labels is empty"):
        index.search(q, k=3, labels=[])


def test_metadata_match_and_calibrate(make, rng):
    g = rng.normal(size=(6, 3)).astype(np.float32)
    index = make(3)
    index.add(g, labels=[0, 0, 1, 1, 2, 2],
              metadata=[{"path": f"img{i}.png"} for i in range(6)])
    r = index.search(g[[4]], 2)
    assert index.get_metadata(r.ids)[0][0] == {"path": "img4.png"}
    with pytest.raises(KeyError, match="ids not in the index"):
        index.get_metadata([77])
    m = index.match(np.concatenate([g[[2]], -g[[2]]]), threshold=0.99)
    np.testing.assert_array_equal(m.labels, [1, -1])
    np.testing.assert_array_equal(m.accepted, [True, False])
    assert m.ids[0] == 2 and m.scores[0] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(index.has_labels([2, 5, -1, 0]),
                                  [True, False, False, True])
    # calibrate gives the exact backend's threshold
    queries = g[[0, 2, 4, 1]] + 0.3 * rng.normal(size=(4, 3)).astype(np.float32)
    q_labels = np.array([0, 1, 2, 9])
    exact = Index(3)
    exact.add(g, labels=[0, 0, 1, 1, 2, 2])
    want = kd.retrieval.calibrate(exact, queries, q_labels, target_precision=None)
    got = kd.retrieval.calibrate(index, queries, q_labels, target_precision=None)
    assert float(got) == pytest.approx(float(want), abs=1e-5)
    assert got.num_known == want.num_known == 3


def test_bad_input_leaves_the_index_unchanged(make, rng):
    index = make(4)
    with pytest.raises(ValueError, match="index is empty"):
        index.search(np.ones((1, 4)), 1)
    index.add(rng.normal(size=(5, 4)))
    with pytest.raises(ValueError, match="dimension 5, the index has 4"):
        index.add(np.ones((2, 5)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.add(np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        index.add(np.ones((2, 4)), metadata=[object(), None])
    with pytest.raises(ValueError, match="queries have dimension 3"):
        index.search(np.ones((1, 3)), 1)
    for k in (6, 0, 2.5, True):
        with pytest.raises(ValueError, match=r"k must be an integer in \[1, 5\]"):
            index.search(np.ones((1, 4)), k)
    assert len(index) == 5


FRESH_LOAD = r"""
import json, sys
import numpy as np
import keras_dml as kd
q = np.load(sys.argv[1])
with kd.retrieval.Index.load(sys.argv[2]) as index:
    r = index.search(q, 7)
    r2 = index.search(q, 3, labels=[1])
    np.savez(sys.argv[3], ids=r.ids, scores=r.scores, labels=r.labels,
             fids=r2.ids, all_ids=np.sort(index.ids))
    print(json.dumps({"fingerprint": index.model_fingerprint, "size": len(index),
                      "meta": index.get_metadata([7])}))
"""


def test_save_and_load_in_a_fresh_process(make, rng, tmp_path):
    g = rng.normal(size=(120, 8)).astype(np.float32)
    q = rng.normal(size=(10, 8)).astype(np.float32)
    np.save(tmp_path / "q.npy", q)
    directory = tmp_path / "saved"
    # an embedded database created inside the index directory moves with it
    uri = directory / "gallery.db" if make.kind == "milvus-lite" else None
    index = make(8, uri=uri)
    index.model_fingerprint = {"sha256": "ab" * 32, "model": "saved_model"}
    index.add(g, labels=np.arange(120) % 4,
              metadata=[{"path": f"p/{i}.png"} for i in range(120)])
    index.remove([5, 6])
    want = index.search(q, 7)
    want_filtered = index.search(q, 3, labels=[1])
    all_ids = np.sort(index.ids)
    params = index.params
    index.save(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["backend"] == index.backend
    assert manifest["model_fingerprint"]["sha256"] == "ab" * 32
    if index.backend == "milvus":
        assert manifest["files"] == {}
        assert manifest["params"]["collection"] == params["collection"]
        index.close()          # Milvus Lite: one process opens a .db at a time
    if make.kind == "milvus-lite":
        assert manifest["params"]["uri"] == "gallery.db"       # relative
        moved = tmp_path / "moved"
        shutil.move(str(directory), str(moved))
        directory = moved
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_LOAD, str(tmp_path / "q.npy"),
         str(directory), str(tmp_path / "out.npz")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env=dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="",
                 TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info == {"fingerprint": {"sha256": "ab" * 32, "model": "saved_model"},
                    "size": 118, "meta": [{"path": "p/7.png"}]}
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_array_equal(out["ids"], want.ids)
        np.testing.assert_allclose(out["scores"], want.scores, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(out["labels"], want.labels)
        np.testing.assert_array_equal(out["fids"], want_filtered.ids)
        np.testing.assert_array_equal(out["all_ids"], all_ids)
    with Index.load(directory) as loaded:
        assert loaded.add(g[:1]).tolist() == [120]                 # next_id kept
        assert loaded.model_fingerprint["model"] == "saved_model"
        if loaded.backend != "milvus":
            assert loaded.params == params
        else:
            assert {k: v for k, v in loaded.params.items() if k != "uri"} == {
                k: v for k, v in params.items() if k != "uri"}
