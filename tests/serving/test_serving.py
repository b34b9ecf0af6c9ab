"""The search service in a real uvicorn process on a free 127.0.0.1 port,
driven by real HTTP requests; the fingerprint check; the batcher."""

import concurrent.futures
import os
import struct
import threading
import time
import zlib

import numpy as np
import pytest
import requests

import serving_tools as st

pytest.importorskip("starlette", reason="the [serve] extra (starlette, uvicorn, "
                    "python-multipart) is not installed")

THRESHOLD = 0.99999


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return st.make_pair(str(tmp_path_factory.mktemp("served")))


@pytest.fixture(scope="module")
def server(pair):
    model, index, _ = pair
    with st.running_server(model, index, f"--threshold={THRESHOLD}",
                           "--batch_window_ms=100", "--max_batch=32") as url:
        yield url


def _gallery_file(pair, name="green", i=0):
    return os.path.join(pair[2], name, f"{i:02d}.png")


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _png_declaring(width, height):
    """A PNG whose header declares width x height (a decompression bomb's
    header) with one tiny IDAT."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _healthy(url):
    r = requests.get(url + "/healthz", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    return r.json()


def test_healthz_and_page(server):
    health = _healthy(server)
    assert health["items"] == 20 and health["dim"] == 16
    assert health["threshold"] == pytest.approx(THRESHOLD)
    page = requests.get(server + "/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    assert 'id="file"' in text and 'id="results"' in text
    # Self-contained: nothing is fetched from another origin.
    assert "http://" not in text and "https://" not in text and "//cdn" not in text


def test_search_raw_and_multipart(server, pair):
    data = _read(_gallery_file(pair, "Ärmel", 2))
    raw = requests.post(server + "/search?k=4", data=data, timeout=30)
    multi = requests.post(server + "/search?k=4", files={"image": ("q.png", data, "image/png")},
                          timeout=30)
    assert raw.status_code == 200 and multi.status_code == 200
    a, b = raw.json(), multi.json()
    assert [r["id"] for r in a["results"]] == [r["id"] for r in b["results"]]
    results = a["results"]
    assert len(results) == 4 and a["k"] == 4
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    top = results[0]
    # The query is a gallery image: it finds itself, with its class name and path.
    assert top["metadata"]["path"].endswith(os.path.join("Ärmel", "02.png"))
    assert top["metadata"]["class_name"] == "Ärmel"
    assert top["score"] == pytest.approx(1.0, abs=1e-5)
    assert top["match"] is True and a["unknown"] is False
    assert all(r["match"] == (r["score"] >= THRESHOLD) for r in results)
    # Class names and labels agree across the index.
    for r in results:
        assert r["metadata"]["class_name"] == sorted(st.CLASSES)[r["label"]]


def test_unknown_query(server):
    checker = np.indices((32, 32)).sum(0) % 2 * 255
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(checker.astype(np.uint8)).save(buf, format="PNG")
    body = requests.post(server + "/search?k=2", data=buf.getvalue(), timeout=30).json()
    assert body["results"][0]["score"] < THRESHOLD
    assert body["unknown"] is True and not any(r["match"] for r in body["results"])


def test_embed_matches_the_index(server, pair):
    from keras_dml import retrieval
    r = requests.post(server + "/embed", data=_read(_gallery_file(pair, "blue", 3)),
                      timeout=30)
    assert r.status_code == 200
    emb = np.asarray(r.json()["embedding"], np.float32)
    assert emb.shape == (16,) and np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)
    index = retrieval.Index.load(pair[1])
    row = [i for i, m in enumerate(index.metadata)
           if m["path"] == os.path.abspath(_gallery_file(pair, "blue", 3))][0]
    assert float(index.embeddings[row] @ emb) == pytest.approx(1.0, abs=1e-5)


def test_thumbnail_by_id(server):
    r = requests.get(server + "/thumbnail/5", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    import io

    from PIL import Image
    assert Image.open(io.BytesIO(r.content)).size == (32, 32)


BAD = [
    ("not an image", "post", "/search?k=2", {"data": b"hello, not an image"}, 400),
    ("empty body", "post", "/search?k=2", {"data": b""}, 400),
    ("empty embed", "post", "/embed", {"data": b""}, 400),
    ("truncated png", "post", "/search?k=2", {"data": st.png_bytes((1, 2, 3))[:60]}, 400),
    ("multipart without image", "post", "/search?k=2",
     {"files": {"other": ("x.png", st.png_bytes((1, 2, 3)), "image/png")}}, 400),
    ("too large", "post", "/search?k=2", {"data": b"\0" * (10 * 2 ** 20 + 1)}, 413),
    ("too large multipart", "post", "/search?k=2",
     {"files": {"image": ("x.png", b"\0" * (10 * 2 ** 20 + 1), "image/png")}}, 413),
    ("decompression bomb", "post", "/search?k=2", {"data": _png_declaring(60000, 60000)}, 413),
    ("k = 0", "post", "/search?k=0", {"data": st.png_bytes((1, 2, 3))}, 422),
    ("k < 0", "post", "/search?k=-3", {"data": st.png_bytes((1, 2, 3))}, 422),
    ("k not a number", "post", "/search?k=abc", {"data": st.png_bytes((1, 2, 3))}, 422),
    ("k above index size", "post", "/search?k=21", {"data": st.png_bytes((1, 2, 3))}, 422),
    ("unknown route", "get", "/nope", {}, 404),
    ("wrong method", "get", "/search", {}, 405),
    ("thumbnail id not in index", "get", "/thumbnail/999", {}, 404),
    ("thumbnail id not an integer", "get", "/thumbnail/abc", {}, 422),
    ("path traversal", "get", "/thumbnail/..%2F..%2Fetc%2Fpasswd", {}, 404),
    ("path as id", "get", "/thumbnail/%2Fetc%2Fpasswd", {}, 404),
]


@pytest.mark.parametrize("what,method,path,kwargs,status", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_json_4xx_and_the_server_keeps_serving(server, what, method, path,
                                                              kwargs, status):
    r = getattr(requests, method)(server + path, timeout=60, **kwargs)
    assert r.status_code == status, (what, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    assert isinstance(r.json()["error"], str) and r.json()["error"]
    _healthy(server)


def test_concurrent_requests_share_model_calls(server, pair):
    before = _healthy(server)
    data = [_read(_gallery_file(pair, name, i)) for name in st.CLASSES for i in range(4)]
    barrier = threading.Barrier(len(data))

    def one(blob):
        barrier.wait()
        return requests.post(server + "/search?k=3", data=blob, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(len(data)) as pool:
        answers = list(pool.map(one, data))
    assert all(a.status_code == 200 for a in answers)
    # Each request got its own answer: the query finds itself first.
    for _blob, a in zip(data, answers):
        assert a.json()["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    after = _healthy(server)
    calls = after["model_calls"] - before["model_calls"]
    assert after["embedded"] - before["embedded"] == len(data)
    assert calls < len(data) and after["largest_batch"] > 1


def test_a_request_is_answered_while_another_is_still_uploading(server, pair):
    data = _read(_gallery_file(pair, "red", 1))
    released = threading.Event()

    def slow_body():
        yield data[:10]
        released.wait(30)        # the upload stalls until the other request is answered
        yield data[10:]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(requests.post, server + "/search?k=2", data=slow_body(),
                           timeout=60)
        time.sleep(0.3)
        fast = requests.post(server + "/search?k=2", data=_read(_gallery_file(pair, "blue")),
                             timeout=30)
        assert fast.status_code == 200 and not slow.done()
        released.set()
        answer = slow.result()
    assert answer.status_code == 200
    assert answer.json()["results"][0]["metadata"]["class_name"] == "red"


def test_mismatched_model_is_refused(pair, tmp_path, capsys):
    import keras_dml as kd
    from keras_dml.cli import serve
    # The index records the model that made it (Index.model_fingerprint, in
    # its manifest), the same fingerprint kd.export wrote into the SavedModel.
    recorded = kd.retrieval.Index.load(pair[1]).model_fingerprint
    assert recorded is not None and recorded == kd.retrieval.model_fingerprint(pair[0])
    assert kd.retrieval.check_model_matches(pair[0], pair[1]) is None
    other = st.export_tiny_model(str(tmp_path / "other_model"), seed=1)
    assert kd.retrieval.model_fingerprint(other) not in (None, recorded)
    assert kd.serving.ModelMismatchError is kd.retrieval.ModelMismatchError
    with pytest.raises(kd.serving.ModelMismatchError, match="another model") as refused:
        kd.serving.create_app(other, pair[1])
    assert repr(other) in str(refused.value) and repr(pair[1]) in str(refused.value)
    assert serve.main([f"--model={other}", f"--index={pair[1]}"]) == 2
    err = capsys.readouterr().err
    assert "another model" in err and other in err and pair[1] in err
    # Either side without a fingerprint: no refusal, a warning naming the side.
    unrecorded = kd.retrieval.Index.load(pair[1])
    unrecorded.model_fingerprint = None
    warning = kd.retrieval.check_model_matches(other, unrecorded)
    assert "cannot check" in warning and "the index records no model fingerprint" in warning
    os.remove(os.path.join(other, "assets.extra", "keras_dml.json"))
    assert kd.retrieval.model_fingerprint(other) is None
    warning = kd.retrieval.check_model_matches(other, pair[1])
    assert "the model records no model fingerprint" in warning and repr(other) in warning


def test_batcher_batches_and_isolates_errors():
    from keras_dml.serving.batching import Batcher
    seen = []
    gate = threading.Event()

    def process(items):
        gate.wait(10)
        seen.append(list(items))
        return [ValueError("bad") if x < 0 else x * 2 for x in items]

    batcher = Batcher(process, max_batch=4, window_s=0.05)
    futures = [batcher.submit(x) for x in (1, 2, -1, 3, 4, 5)]
    gate.set()
    results = []
    for f in futures:
        try:
            results.append(f.result(10))
        except ValueError:
            results.append("error")
    batcher.close()
    assert results == [2, 4, "error", 6, 8, 10]
    assert batcher.items == 6 and batcher.calls == len(seen) and batcher.largest <= 4
    assert sorted(x for batch in seen for x in batch) == [-1, 1, 2, 3, 4, 5]
    assert batcher.calls < 6
