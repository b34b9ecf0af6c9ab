"""kd.retrieval.Index: exact = numpy brute force (ties by insertion order),
faiss = exact, ids across adds/removes, save/load in a fresh process, atomic
save under SIGKILL, and every bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_dml as kd
from keras_dml.retrieval import Index, IndexFormatError, storage
from references import reference

# Backend-neutral: CI runs this module under tensorflow, jax and torch.
pytestmark = pytest.mark.backends

ROOT = Path(__file__).resolve().parents[2]  # tests/retrieval/ -> the checkout


def brute_force(q, g, k, metric):
    """float64 scores, ranked by (-score, position): the documented rule."""
    q64, g64 = q.astype(np.float64), g.astype(np.float64)
    if metric == "cosine":
        qn = q64 / np.linalg.norm(q64, axis=1, keepdims=True)
        gn = g64 / np.linalg.norm(g64, axis=1, keepdims=True)
        s = qn @ gn.T
    else:
        s = -((q64[:, None, :] - g64[None]) ** 2).sum(-1)
    order = np.array([sorted(range(len(g)), key=lambda j: (-s[i, j], j))[:k]
                      for i in range(len(q))])
    return order, np.take_along_axis(s, order, 1)


def tied_data(rng, n=120, dim=12):
    """Rows drawn from 15 distinct ones: many exact ties."""
    base = rng.normal(size=(15, dim)).astype(np.float32)
    return base[rng.integers(0, 15, n)], rng.normal(size=(9, dim)).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_equals_brute_force_with_ties(rng, metric):
    g, q = tied_data(rng)
    index = Index(12, metric=metric)
    index.add(g[:50], labels=np.arange(50) % 7)
    index.add(g[50:], labels=np.arange(50, 120) % 7)     # ids continue: 50..119
    result = index.search(q, k=30)
    order, scores = brute_force(q, g, 30, metric)
    np.testing.assert_array_equal(result.ids, order)      # ties by lower id
    np.testing.assert_allclose(result.scores, scores, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(result.labels, order % 7)
    assert result.ids.dtype == np.int64 and result.scores.dtype == np.float32
    # equal rows tie bit for bit
    dup = g[result.ids]
    same = np.all(dup[:, 1:] == dup[:, :-1], axis=-1)
    assert same.any()
    assert np.all(result.scores[:, 1:][same] == result.scores[:, :-1][same])


def test_ties_go_to_insertion_order_with_user_ids(rng):
    g, q = tied_data(rng, n=60)
    ids = rng.permutation(1000)[:60] + 7
    index = Index(12)
    index.add(g, ids=ids)
    order, _ = brute_force(q, g, 20, "cosine")
    np.testing.assert_array_equal(index.search(q, 20).ids, ids[order])


def test_ids_across_adds_and_removes(rng):
    x = rng.normal(size=(10, 4)).astype(np.float32)
    index = Index(4)
    np.testing.assert_array_equal(index.add(x[:3]), [0, 1, 2])
    np.testing.assert_array_equal(index.add(x[3:5], ids=[10, 20]), [10, 20])
    np.testing.assert_array_equal(index.add(x[5:7]), [21, 22])
    index.remove([20, 0])
    assert len(index) == 5
    np.testing.assert_array_equal(index.ids, [1, 2, 10, 21, 22])
    np.testing.assert_array_equal(index.add(x[7:8]), [23])   # never reused
    r = index.search(x[[0, 3, 4, 6]], k=1)
    # the removed items are gone; the others find themselves
    assert 0 not in r.ids[0] and 20 not in r.ids[2]
    assert r.ids[1, 0] == 10 and r.ids[3, 0] == 22
    np.testing.assert_array_equal(index.search(x[[8]], 6).ids.shape, (1, 6))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_filtered_search(rng, metric):
    g, q = tied_data(rng)
    labels = np.arange(120) % 6
    index = Index(12, metric=metric)
    index.add(g, labels=labels)
    allowed = np.isin(labels, [1, 4])
    order, scores = brute_force(q, g[allowed], 12, metric)
    r = index.search(q, 12, labels=[4, 1])
    np.testing.assert_array_equal(r.ids, np.flatnonzero(allowed)[order])
    np.testing.assert_allclose(r.scores, scores, rtol=1e-5, atol=1e-4)
    assert np.isin(r.labels, [1, 4]).all()
    r = index.search(q, 30, labels=[2])          # 20 items labelled 2
    assert (r.ids[:, 20:] == -1).all() and np.isneginf(r.scores[:, 20:]).all()


def test_metadata_and_match(rng):
    g = rng.normal(size=(6, 3)).astype(np.float32)
    index = Index(3)
    index.add(g, labels=[0, 0, 1, 1, 2, 2],
              metadata=[{"path": f"img{i}.png"} for i in range(6)])
    r = index.search(g[[4]], 2)
    assert index.get_metadata(r.ids)[0][0] == {"path": "img4.png"}
    assert index.get_metadata([-1]) == [None]
    m = index.match(np.concatenate([g[[2]], -g[[2]]]), threshold=0.99)
    np.testing.assert_array_equal(m.labels, [1, -1])
    np.testing.assert_array_equal(m.accepted, [True, False])
    assert m.ids[0] == 2 and m.scores[0] == pytest.approx(1.0, abs=1e-6)
    assert m.scores[1] < 0.99


def test_build_index_from_model_and_dataset(rng):
    # tf.data feeds every backend (TensorFlow is installed in every test pass).
    import tensorflow as tf
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    x = rng.normal(size=(37, 5)).astype(np.float32)
    y = rng.integers(0, 3, 37)
    ds = tf.data.Dataset.from_tensor_slices((x, y[:, None])).batch(8)
    index = kd.retrieval.build_index(model, ds, verbose=0,
                                     metadata=[str(i) for i in range(37)])
    assert len(index) == 37 and index.dim == 4
    np.testing.assert_array_equal(index.labels, y)
    emb = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_array_equal(index.search(emb[:5], 1).ids[:, 0], np.arange(5))


# ------------------------------------------------------------------ faiss
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_faiss_flat_equals_exact(rng, metric):
    reference("faiss", "faiss backend")
    g = rng.normal(size=(400, 16)).astype(np.float32)
    q = rng.normal(size=(25, 16)).astype(np.float32)
    exact, flat = Index(16, metric), Index(16, metric, backend="faiss",
                                           faiss_factory="Flat")
    for index in (exact, flat):
        index.add(g[:150], labels=np.arange(150) % 9)
        index.add(g[150:], ids=np.arange(1000, 1250), labels=np.arange(250) % 9)
        index.remove([3, 1100])
    a, b = exact.search(q, 10), flat.search(q, 10)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("factory,params", [
    ("HNSW32", {"ef_search": 64}),
    ("IVF16,Flat", {"nprobe": 4}),
    ("IVF16,PQ8x4", {"nprobe": 16, "train_size": 1500}),
])
def test_faiss_ann_finds_the_neighbours(rng, factory, params):
    reference("faiss", "faiss backend")
    centres = rng.normal(size=(16, 16)).astype(np.float32) * 3
    g = (centres[rng.integers(0, 16, 2000)]
         + rng.normal(size=(2000, 16))).astype(np.float32)
    q = g[:50] + 0.01 * rng.normal(size=(50, 16)).astype(np.float32)
    index = Index(16, backend="faiss", faiss_factory=factory, **params)
    index.add(g)
    hits = index.search(q, 5).ids
    exact = Index(16)
    exact.add(g)
    truth = exact.search(q, 5).ids
    if "PQ" in factory:     # lossy codes: the query's own item is still found
        found = np.mean(np.any(hits == np.arange(50)[:, None], axis=1))
        assert found >= 0.7, found
    else:
        recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(hits, truth)])
        assert recall >= 0.9, recall
    assert np.all(hits[:, 0] >= 0)
    index.remove([0, 1])                       # HNSW: rebuilt
    assert len(index) == 1998
    assert not np.isin([0, 1], index.search(q[:2], 5).ids).any()


def test_faiss_missing_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"faiss-cpu.*keras_dml\[index\]"):
        Index(4, backend="faiss")


def test_faiss_bad_factory_and_untrainable():
    reference("faiss", "faiss backend")
    with pytest.raises(ValueError, match="faiss cannot build"):
        Index(4, backend="faiss", faiss_factory="NoSuchIndex9")
    index = Index(4, backend="faiss", faiss_factory="IVF64,Flat")
    with pytest.raises(ValueError, match="could not train"):
        index.add(np.ones((10, 4), np.float32))
    assert len(index) == 0


TORCH_PATCHED_FILTER = r"""
import numpy as np
import faiss.contrib.torch_utils  # noqa: F401  (pytorch-metric-learning imports it)
import keras_dml as kd
rng = np.random.default_rng(0)
g = rng.normal(size=(60, 5)).astype(np.float32)
q = rng.normal(size=(4, 5)).astype(np.float32)
for backend in ("faiss", "exact"):
    index = kd.retrieval.Index(5, backend=backend)
    index.add(g, labels=np.arange(60) % 6)
    r = index.search(q, 4, labels=[2])
    np.save(f"{backend}.npy", r.ids)
"""


def test_faiss_filter_works_after_torch_utils_patches_faiss(tmp_path):
    # faiss.contrib.torch_utils swaps Index.search for a wrapper without
    # `params`; a filtered search must still reach faiss's own search.
    reference("faiss", "faiss backend")
    pytest.importorskip("torch", reason="faiss.contrib.torch_utils needs torch")
    subprocess.run([sys.executable, "-c", TORCH_PATCHED_FILTER], cwd=tmp_path,
                   env=_fresh_env(), check=True, timeout=300)
    faiss_ids = np.load(tmp_path / "faiss.npy")
    np.testing.assert_array_equal(faiss_ids, np.load(tmp_path / "exact.npy"))
    assert np.all(faiss_ids % 6 == 2)


# ------------------------------------------------------- save and reload
FRESH_LOAD = r"""
import sys
import numpy as np
import keras_dml as kd
q = np.load(sys.argv[1])
for directory in sys.argv[2:]:
    index = kd.retrieval.Index.load(directory)
    r = index.search(q, 7)
    np.savez(directory + ".npz", ids=r.ids, scores=r.scores, labels=r.labels,
             all_ids=index.ids)
    print(repr(index))
"""


def _fresh_env():
    return dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="",
                TF_CPP_MIN_LOG_LEVEL="3")


def test_saved_index_reloads_in_a_fresh_process(rng, tmp_path):
    g = rng.normal(size=(300, 8)).astype(np.float32)
    q = rng.normal(size=(20, 8)).astype(np.float32)
    np.save(tmp_path / "q.npy", q)
    indexes = {"exact": Index(8)}
    try:
        reference("faiss", "faiss backend")
        indexes["hnsw"] = Index(8, backend="faiss", faiss_factory="HNSW16",
                                ef_search=8)
    except pytest.skip.Exception:
        pass
    for name, index in indexes.items():
        index.add(g, labels=np.arange(300) % 4,
                  metadata=[{"path": f"p/{i}.png"} for i in range(300)])
        index.remove([5, 6])
        index.save(tmp_path / name)
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert manifest["format_version"] == storage.FORMAT_VERSION
    # one fresh interpreter loads every saved index
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_LOAD, str(tmp_path / "q.npy"),
         *(str(tmp_path / name) for name in indexes)],
        capture_output=True, text=True, env=_fresh_env(), cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, index in indexes.items():
        r = index.search(q, 7)
        with np.load(tmp_path / f"{name}.npz") as out:
            np.testing.assert_array_equal(out["ids"], r.ids)
            np.testing.assert_array_equal(out["scores"], r.scores)
            np.testing.assert_array_equal(out["labels"], r.labels)
            np.testing.assert_array_equal(out["all_ids"], index.ids)
        loaded = Index.load(tmp_path / name)
        assert loaded.add(g[:1]).tolist() == [300]          # next_id kept
        assert loaded.get_metadata([7]) == [{"path": "p/7.png"}]
        assert loaded.params == index.params


SAVE_AND_PAUSE = r"""
import sys
import numpy as np
import keras_dml as kd
index = kd.retrieval.Index(8)
index.add(np.full((50, 8), 2.0, np.float32))
index.save(sys.argv[1])
"""


@pytest.mark.parametrize("stage", ["writing", "swapping"])
def test_save_killed_midway_leaves_the_old_index(rng, tmp_path, stage):
    old = Index(8)
    old.add(rng.normal(size=(40, 8)).astype(np.float32), labels=np.arange(40))
    target = tmp_path / "index"
    old.save(target)
    marker = tmp_path / "paused"
    env = dict(_fresh_env(), **{storage._PAUSE_ENV: f"{stage}:{marker}"})
    proc = subprocess.Popen([sys.executable, "-c", SAVE_AND_PAUSE, str(target)],
                            env=env, cwd=ROOT, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "the save never reached its pause point"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    loaded = Index.load(target)
    np.testing.assert_array_equal(loaded.labels, np.arange(40))
    np.testing.assert_array_equal(loaded.embeddings, old.embeddings)
    # a leftover temporary directory beside it, which a new save ignores
    assert any(p.name.startswith(".index.saving-") for p in tmp_path.iterdir())
    old.save(target)
    assert len(Index.load(target)) == 40


@pytest.mark.parametrize("exchange", [True, False])
def test_replacing_an_index_swaps_it(rng, tmp_path, monkeypatch, exchange):
    if not exchange:     # systems without renameat2: move aside, rename in
        monkeypatch.setattr(storage, "_exchange", lambda a, b: False)
    a, b = Index(3), Index(3)
    a.add(rng.normal(size=(5, 3)))
    b.add(rng.normal(size=(9, 3)))
    a.save(tmp_path / "ix")
    b.save(tmp_path / "ix")
    assert len(Index.load(tmp_path / "ix")) == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]   # no leftovers
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "ix").stat().st_mode & 0o777 == 0o777 & ~umask


# ---------------------------------------------------------------- bad input
def test_bad_vectors_and_queries(rng):
    index = Index(4)
    with pytest.raises(ValueError, match="index is empty"):
        index.search(np.ones((1, 4)), 1)
    with pytest.raises(ValueError, match="dimension 5, the index has 4"):
        index.add(np.ones((2, 5)))
    bad = np.ones((3, 4), np.float32)
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.add(bad)
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.add(bad)
    with pytest.raises(ValueError, match=r"shape \[N, D\]"):
        index.add(np.ones(4))
    index.add(rng.normal(size=(5, 4)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.search(bad, 1)
    with pytest.raises(ValueError, match="queries have dimension 3"):
        index.search(np.ones((1, 3)), 1)
    for k in (6, 0, 2.5, True):
        with pytest.raises(ValueError, match=r"k must be an integer in \[1, 5\]"):
            index.search(np.ones((1, 4)), k)
    with pytest.raises(ValueError, match="labels must have shape"):
        index.add(np.ones((2, 4)), labels=[1, 2, 3])
    with pytest.raises(ValueError, match="labels must be integers"):
        index.add(np.ones((2, 4)), labels=[1.5, 2])
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        index.add(np.ones((2, 4)), metadata=[object(), None])
    assert len(index) == 5                  # nothing was added by the failures
    with pytest.raises(ValueError, match="metric must be"):
        Index(4, metric="manhattan")
    with pytest.raises(ValueError, match="backend must be"):
        Index(4, backend="annoy")
    with pytest.raises(ValueError, match="dim must be"):
        Index(0)


def test_duplicate_and_missing_ids(rng):
    index = Index(2)
    index.add(rng.normal(size=(3, 2)), ids=[5, 6, 7])
    with pytest.raises(ValueError, match=r"duplicate ids in this add: \[9\]"):
        index.add(rng.normal(size=(3, 2)), ids=[9, 9, 10])
    with pytest.raises(KeyError, match=r"ids not in the index: \[8\]"):
        index.remove([5, 8])
    assert len(index) == 3 and index.ids.tolist() == [5, 6, 7]
    # an existing id is replaced (upsert): removed, then added last
    index.add(np.ones((2, 2)), ids=[6, 11], labels=[4, 4])
    assert index.ids.tolist() == [5, 7, 6, 11]
    np.testing.assert_array_equal(index.labels, [-1, -1, 4, 4])
    np.testing.assert_array_equal(index.embeddings[2], [1.0, 1.0])


def _saved(tmp_path, rng):
    index = Index(4)
    index.add(rng.normal(size=(20, 4)), labels=np.arange(20))
    return Path(index.save(tmp_path / "ix"))


def test_load_refuses_damaged_foreign_and_newer(rng, tmp_path):
    with pytest.raises(IndexFormatError, match="not a directory"):
        Index.load(tmp_path / "nothing")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "data.bin").write_bytes(b"x")
    with pytest.raises(IndexFormatError, match="no manifest.json"):
        Index.load(tmp_path / "foreign")
    path = _saved(tmp_path, rng)
    manifest = json.loads((path / "manifest.json").read_text())

    def rewrite(**changes):
        (path / "manifest.json").write_text(json.dumps(dict(manifest, **changes)))

    rewrite(format="tf_similarity")
    with pytest.raises(IndexFormatError, match="another format"):
        Index.load(path)
    rewrite(format_version=storage.FORMAT_VERSION + 1)
    with pytest.raises(IndexFormatError, match="newer than this keras_dml"):
        Index.load(path)
    (path / "manifest.json").write_text("{trunc")
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        Index.load(path)
    rewrite()
    data = (path / "embeddings.npy").read_bytes()
    (path / "embeddings.npy").write_bytes(data[:-7])
    with pytest.raises(IndexFormatError, match="truncated"):
        Index.load(path)
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF
    (path / "embeddings.npy").write_bytes(bytes(flipped))
    with pytest.raises(IndexFormatError, match="SHA-256"):
        Index.load(path)
    assert len(Index.load(path, verify=False)) == 20     # sizes still checked
    (path / "embeddings.npy").write_bytes(data)
    (path / "labels.npy").unlink()
    with pytest.raises(IndexFormatError, match="missing 'labels.npy'"):
        Index.load(path)
    assert issubclass(IndexFormatError, ValueError)


def test_save_refuses_to_replace_a_foreign_directory(rng, tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8\xff")
    index = Index(2)
    index.add(rng.normal(size=(2, 2)))
    with pytest.raises(IndexFormatError, match="refusing to replace"):
        index.save(other)
    assert (other / "cat.jpg").exists()


def test_search_params_change_without_rebuilding(rng, tmp_path):
    reference("faiss", "faiss backend")
    g = rng.normal(size=(3000, 8)).astype(np.float32)
    index = Index(8, backend="faiss", faiss_factory="IVF32,Flat", nprobe=1)
    index.add(g)
    exact = Index(8)
    exact.add(g)
    truth = exact.search(g[:40], 5).ids
    index.set_search_params(nprobe=32)                # all lists: exact
    np.testing.assert_array_equal(index.search(g[:40], 5).ids, truth)
    index.save(tmp_path / "ivf")
    assert Index.load(tmp_path / "ivf").params["nprobe"] == 32
    with pytest.raises(ValueError, match="nprobe must be a positive integer"):
        index.set_search_params(nprobe=0)
    with pytest.raises(ValueError, match="backend='faiss' or 'milvus' only"):
        exact.set_search_params(nprobe=4)
