"""backend="milvus" beyond the shared contract (tests/retrieval/test_contract.py):
an add killed by SIGKILL leaves whole rows, clear errors in seconds for a
server that is down, refusing or silent, for a collection of another
dimension or metric and for a manifest whose collection is gone, the data
readable by plain pymilvus after close(), ANN index types and their search
parameters."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from keras_dml.retrieval import Index, IndexFormatError, MilvusConnectionError
from keras_dml.retrieval import milvus as milvus_store
from milvus_fixtures import collection_name, free_port
from references import reference

ROOT = Path(__file__).resolve().parents[2]  # tests/retrieval/ -> the checkout
pymilvus = reference("pymilvus", "milvus backend")
reference("milvus_lite", "embedded Milvus Lite")


def _env(**extra):
    return dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="",
                TF_CPP_MIN_LOG_LEVEL="3", **extra)


KILLED_ADD = r"""
import sys
import numpy as np
import keras_dml as kd
from keras_dml.retrieval import milvus
milvus.MilvusStore.batch_rows = lambda self: 400      # many small batches
n = int(sys.argv[2])
rng = np.random.default_rng(0)
x = rng.normal(size=(n, 8)).astype(np.float32)
index = kd.retrieval.Index(8, backend="milvus", uri=sys.argv[1], collection="g",
                           index_type="FLAT")
index.add(x, labels=np.arange(n) % 13, ids=np.arange(n) * 3,
          metadata=[{"i": i} for i in range(n)])
print("finished")
"""


def test_killed_add_leaves_whole_rows(tmp_path):
    n = 40_000
    uri = str(tmp_path / "g.db")
    progress = tmp_path / "progress"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_ADD, uri, str(n)], cwd=ROOT,
        env=_env(**{milvus_store._PROGRESS_ENV: str(progress)}),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (progress.exists() and progress.read_text().strip()
               and int(progress.read_text()) >= 3):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "the add never got going"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)              # in the middle of the add
    out, _ = proc.communicate()
    assert b"finished" not in out
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    with Index(8, backend="milvus", uri=uri, collection="g") as index:
        size = len(index)
        data = index.read()
        client_count = index._store._client.query(
            "g", output_fields=["count(*)"])[0]["count(*)"]
    assert size == client_count == len(data["ids"])
    assert 3 * 400 <= size < n, size          # some batches, not all
    rows = data["ids"] // 3
    assert np.all(data["ids"] % 3 == 0)
    np.testing.assert_array_equal(data["embeddings"], x[rows])   # whole rows
    np.testing.assert_array_equal(data["labels"], rows % 13)
    assert data["metadata"] == [{"i": int(i)} for i in rows]
    # resuming is adding again: the ids that exist are upserted
    with Index(8, backend="milvus", uri=uri, collection="g") as index:
        index.add(x[:2000], labels=np.arange(2000) % 13, ids=np.arange(2000) * 3,
                  metadata=[{"i": i} for i in range(2000)])
        assert len(index) == max(size, 2000)


def test_unreachable_servers_fail_fast_naming_the_uri():
    port = free_port()                       # nothing listens: refused
    uri = f"http://127.0.0.1:{port}"
    t = time.monotonic()
    with pytest.raises(MilvusConnectionError, match=f"Milvus at '{uri}'"):
        Index(4, backend="milvus", uri=uri, timeout=2)
    assert time.monotonic() - t < 60
    with socket.socket() as silent:          # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        t = time.monotonic()
        with pytest.raises(MilvusConnectionError, match="timeout 1 s"):
            Index(4, backend="milvus", uri=uri, timeout=1)
        assert time.monotonic() - t < 60
    with pytest.raises(ValueError, match="ending in '.db'"):
        Index(4, backend="milvus", uri=str(Path("x") / "gallery"))
    with pytest.raises(ValueError, match="needs uri="):
        Index(4, backend="milvus")
    with pytest.raises(ValueError, match=r"\['uri'\] apply to backend='milvus'"):
        Index(4, uri="a.db")


def test_collection_of_another_dim_or_metric(tmp_path):
    uri = str(tmp_path / "g.db")
    with Index(8, "cosine", backend="milvus", uri=uri, collection="c") as index:
        index.add(np.ones((3, 8)))
    with pytest.raises(ValueError, match=r"holds 8-d vectors; this index has dim=4"):
        Index(4, backend="milvus", uri=uri, collection="c")
    with pytest.raises(ValueError, match=r"metric COSINE; this index has metric='euclidean'"):
        Index(8, "euclidean", backend="milvus", uri=uri, collection="c")
    with pytest.raises(ValueError, match="has a HNSW index; index_type='FLAT'"):
        Index(8, backend="milvus", uri=uri, collection="c", index_type="FLAT")
    client = pymilvus.MilvusClient(uri)
    client.create_collection("foreign", dimension=8)
    client.close()
    with pytest.raises(ValueError, match="is not a keras_dml index"):
        Index(8, backend="milvus", uri=uri, collection="foreign")
    with Index(8, backend="milvus", uri=uri, collection="c") as index:
        assert len(index) == 3 and index.add(np.ones((1, 8))).tolist() == [3]
    with pytest.raises(ValueError, match="index_params for HNSW take"):
        Index(8, backend="milvus", uri=uri, collection="d",
              index_params={"nlist": 4})
    with pytest.raises(ValueError, match="index_type must be one of"):
        Index(8, backend="milvus", uri=uri, collection="d", index_type="DISKANN")


def test_manifest_whose_collection_is_gone(tmp_path):
    uri = str(tmp_path / "g.db")
    with Index(4, backend="milvus", uri=uri, collection="kept") as index:
        index.add(np.eye(4))
        index.save(tmp_path / "ix")
    client = pymilvus.MilvusClient(uri)
    client.drop_collection("kept")
    client.close()
    with pytest.raises(IndexFormatError, match=r"no collection 'kept'.*deleted"):
        Index.load(tmp_path / "ix")
    with pytest.raises(IndexFormatError, match="no Milvus Lite database"):
        Index.load(tmp_path / "ix", uri=str(tmp_path / "elsewhere.db"))
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["params"]["uri"] == uri            # outside: absolute
    assert manifest["backend"] == "milvus" and manifest["files"] == {}


READ_WITH_PYMILVUS = r"""
import json, sys
from pymilvus import MilvusClient
client = MilvusClient(sys.argv[1])
client.load_collection(sys.argv[2])     # as Milvus wants before any read
count = client.query(sys.argv[2], output_fields=["count(*)"])[0]["count(*)"]
rows = client.query(sys.argv[2], filter="id >= 0", output_fields=["vector", "label"])
print(json.dumps({"count": count, "rows": sorted(
    [[r["id"], r["label"], list(map(float, r["vector"]))] for r in rows])}))
"""


def test_data_opens_with_plain_pymilvus_after_close(tmp_path, rng):
    uri = str(tmp_path / "g.db")
    x = rng.normal(size=(25, 5)).astype(np.float32)
    with Index(5, backend="milvus", uri=uri, collection="mine") as index:
        index.add(x, labels=np.arange(25) % 3)
        index.remove([4])
    assert "closed" in repr(index)
    with pytest.raises(ValueError, match="the index is closed"):
        index.search(x, 1)
    # another process opens the same .db: the lock was released
    proc = subprocess.run([sys.executable, "-c", READ_WITH_PYMILVUS, uri, "mine"],
                          capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["count"] == 24
    keep = [i for i in range(25) if i != 4]
    assert [r[0] for r in out["rows"]] == keep
    assert [r[1] for r in out["rows"]] == [i % 3 for i in keep]
    np.testing.assert_array_equal(np.array([r[2] for r in out["rows"]], np.float32),
                                  x[keep])


@pytest.mark.parametrize("index_type,build,search", [
    ("HNSW", {"M": 8, "efConstruction": 64}, {"ef_search": 64}),
    ("IVF_FLAT", {"nlist": 16}, {"nprobe": 16}),
])
def test_ann_index_types(tmp_path, rng, index_type, build, search):
    centres = rng.normal(size=(16, 16)).astype(np.float32) * 3
    g = (centres[rng.integers(0, 16, 1500)]
         + rng.normal(size=(1500, 16))).astype(np.float32)
    q = g[:40] + 0.01 * rng.normal(size=(40, 16)).astype(np.float32)
    exact = Index(16)
    exact.add(g)
    truth = exact.search(q, 5).ids
    with Index(16, backend="milvus", uri=str(tmp_path / "a.db"),
               collection=collection_name(), index_type=index_type,
               index_params=build) as index:
        index.add(g)
        index._store.flush()                  # sealed segment: the ANN index
        index.set_search_params(**search)
        assert index.params["index_params"] == build
        hits = index.search(q, 5).ids
        recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(hits, truth)])
        assert recall >= 0.9, recall
        # rerank: exact scores of the candidates, the exact order
        reranked = index.search(q, 5, rerank=True)
        want = exact.search(q, 5)
        same = np.array([set(a) == set(b) for a, b in zip(reranked.ids, want.ids)])
        assert same.mean() >= 0.9
        np.testing.assert_allclose(reranked.scores[same], want.scores[same],
                                   rtol=1e-5, atol=1e-5)
        index.save(tmp_path / "ix")
    with Index.load(tmp_path / "ix") as loaded:
        assert loaded.params["index_type"] == index_type
        for name, value in search.items():
            assert loaded.params[name] == value
