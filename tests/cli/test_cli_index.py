"""`keras-dml index`: a gallery folder or CSV embedded into an index with the
model's fingerprint; a killed run resumes from its last checkpoint."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import serving_tools as st
from keras_dml.cli import index as cli_index
from milvus_fixtures import collection_name, milvus_server  # noqa: F401
from references import reference


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return st.export_tiny_model(str(tmp_path_factory.mktemp("m") / "saved_model"))


def _args(*argv):
    return cli_index.parser().parse_args(list(argv))


def _build(model, images, out, *extra):
    return cli_index.build(_args("--model", model, "--images", images, "--index", out,
                                 "--verbose", "0", *extra))


def test_folder_gallery_labels_metadata_and_fingerprint(model, tmp_path):
    import keras_dml as kd
    gallery = st.write_gallery(str(tmp_path / "g"), per_class=3)
    with open(os.path.join(gallery, "loose.png"), "wb") as f:     # no class
        f.write(st.png_bytes((9, 9, 9)))
    with open(os.path.join(gallery, "red", "notes.txt"), "w") as f:
        f.write("skipped")
    path, n, bad = _build(model, gallery, str(tmp_path / "idx"))
    index = kd.retrieval.Index.load(path)
    assert n == len(index) == 13 and bad == []
    names = sorted(st.CLASSES)
    for label, m in zip(index.labels.tolist(), index.metadata):
        if m["path"].endswith("loose.png"):
            assert label == -1 and "class_name" not in m
        else:
            assert m["class_name"] == os.path.basename(os.path.dirname(m["path"]))
            assert names[label] == m["class_name"]
    # The manifest records the SavedModel's fingerprint (kd.export's).
    assert index.model_fingerprint is not None
    assert index.model_fingerprint == kd.retrieval.model_fingerprint(model)
    assert not os.path.exists(path + ".partial")
    assert not os.path.exists(os.path.join(path, "model.json"))


def test_model_without_fingerprint_gives_an_unchecked_index_with_a_warning(
        model, tmp_path, capsys):
    import keras_dml as kd
    bare = str(tmp_path / "bare_model")
    shutil.copytree(model, bare)
    os.remove(os.path.join(bare, "assets.extra", "keras_dml.json"))
    gallery = st.write_gallery(str(tmp_path / "g"), per_class=1)
    out = str(tmp_path / "idx")
    assert cli_index.main(["--model", bare, "--images", gallery, "--index", out,
                           "--verbose", "0"]) == 0
    err = capsys.readouterr().err
    assert "warning: cannot check" in err and "the model records no model fingerprint" in err
    assert kd.retrieval.Index.load(out).model_fingerprint is None


def test_csv_gallery_faiss_and_unreadable_images(model, tmp_path, capsys):
    import keras_dml as kd
    pytest.importorskip("faiss", reason="faiss-cpu (the [index] extra) is not installed")
    gallery = st.write_gallery(str(tmp_path / "g"), per_class=2)
    with open(os.path.join(gallery, "broken.png"), "wb") as f:
        f.write(st.png_bytes((1, 1, 1))[:50])
    rows = [(os.path.join(c, f"{i:02d}.png"), c) for c in st.CLASSES for i in range(2)]
    rows.append(("broken.png", "red"))
    with open(os.path.join(gallery, "list.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "kind"])
        w.writerows(rows)
    out = str(tmp_path / "idx")
    code = cli_index.main(["--model", model, "--images", os.path.join(gallery, "list.csv"),
                           "--index", out, "--image_column", "file", "--label_column", "kind",
                           "--backend", "faiss", "--verbose", "0"])
    assert code == 0
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().err
    index = kd.retrieval.Index.load(out)
    assert index.backend == "faiss" and len(index) == 8
    assert sorted({m["class_name"] for m in index.metadata}) == sorted(st.CLASSES)


def test_refusals(model, tmp_path, capsys):
    gallery = st.write_gallery(str(tmp_path / "g"), per_class=2)
    out = str(tmp_path / "idx")
    _build(model, gallery, out)
    assert cli_index.main(["--model", model, "--images", gallery, "--index", out,
                           "--verbose", "0"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli_index.main(["--model", model, "--images", str(tmp_path / "none"),
                           "--index", str(tmp_path / "i2"), "--verbose", "0"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli_index.main(["--model", str(tmp_path), "--images", gallery,
                           "--index", str(tmp_path / "i3"), "--verbose", "0"]) == 2
    assert "not a SavedModel" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["exact", "milvus"])
def test_killed_run_resumes_from_its_checkpoint(model, tmp_path, backend):
    import keras_dml as kd
    if backend == "milvus":
        reference("milvus_lite", "Milvus Lite")
    gallery = st.write_gallery(str(tmp_path / "g"), per_class=6)       # 24 images
    out = str(tmp_path / "idx")
    marker = str(tmp_path / "paused")
    env = dict(os.environ, PYTHONPATH=st.ROOT, TF_CPP_MIN_LOG_LEVEL="2",
               **{cli_index._PAUSE_ENV: f"2:{marker}"})
    argv = ["--model", model, "--images", gallery, "--index", out, "--batch_size", "4",
            "--checkpoint_every", "8", "--backend", backend]
    proc = subprocess.Popen([sys.executable, "-m", "keras_dml", "index", *argv,
                             "--verbose", "0"], env=env, cwd=st.ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not os.path.exists(marker):
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "the run never reached its 2nd checkpoint"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    partial = out + ".partial"
    assert sorted(f for f in os.listdir(partial) if f.endswith(".npz")) == \
        ["chunk_000000.npz", "chunk_000001.npz"]
    if backend == "exact":
        assert not os.path.exists(out)                   # killed before the index
    else:
        # Killed with 16 images in Milvus; no manifest yet. Roll the checkpoint
        # back one chunk, as if killed after Milvus took chunk 2 but before its
        # checkpoint: the rerun writes those 8 ids again (an upsert).
        assert os.listdir(out) == [cli_index.MILVUS_FILE]
        os.remove(os.path.join(partial, "chunk_000001.npz"))
        with open(os.path.join(partial, cli_index.STATE_FILE)) as f:
            state = json.load(f)
        with open(os.path.join(partial, cli_index.STATE_FILE), "w") as f:
            json.dump(dict(state, chunks=1, done=8), f)
    # Another model's rerun is refused; the same command resumes.
    other = st.export_tiny_model(str(tmp_path / "other"), seed=3)
    with pytest.raises(cli_index.IndexCommandError, match="--restart"):
        cli_index.build(_args("--model", other, *argv[2:], "--verbose", "0"))
    # The same command, run again (a process of its own, as a user would;
    # pytest's output capture and in-process Milvus Lite do not mix).
    rerun = subprocess.run([sys.executable, "-m", "keras_dml", "index", *argv, "--verbose", "1"],
                           env={k: v for k, v in env.items() if k != cli_index._PAUSE_ENV},
                           cwd=st.ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    done = 16 if backend == "exact" else 8
    assert f"resuming after {done} of 24 images" in rerun.stderr
    fresh = kd.retrieval.Index.load(_build(model, gallery, str(tmp_path / "fresh"))[0])
    with kd.retrieval.Index.load(out) as resumed:
        assert resumed.backend == backend
        # Every image once: 24 items, ids 0..23 (milvus: the listing
        # positions), and Milvus's own count agrees.
        assert len(resumed) == 24
        np.testing.assert_array_equal(np.sort(resumed.ids), np.arange(24))
        assert resumed.metadata == fresh.metadata
        np.testing.assert_array_equal(resumed.labels, fresh.labels)
        np.testing.assert_allclose(resumed.embeddings, fresh.embeddings, atol=1e-5)
        assert resumed.model_fingerprint == fresh.model_fingerprint
    assert not os.path.exists(partial)


def _query_image(gallery):
    return os.path.join(gallery, sorted(st.CLASSES)[1], "02.png")


def test_milvus_index_is_self_contained_searched_and_served(model, tmp_path):
    import requests

    import keras_dml as kd
    from keras_dml.cli import search as cli_search
    reference("milvus_lite", "Milvus Lite")
    gallery = st.write_gallery(str(tmp_path / "g"), per_class=3)
    built = str(tmp_path / "built")
    assert _build(model, gallery, built, "--backend", "milvus")[1] == 12
    assert sorted(os.listdir(built)) == ["manifest.json", cli_index.MILVUS_FILE]
    out = str(tmp_path / "moved")
    shutil.move(built, out)                 # the directory holds its database
    with kd.retrieval.Index.load(out) as index:
        assert index.backend == "milvus" and len(index) == 12
        assert index.model_fingerprint == kd.retrieval.model_fingerprint(model)
        names = sorted(st.CLASSES)
        for label, m in zip(index.labels.tolist(), index.metadata):
            assert names[label] == m["class_name"]
    # The same tiny index built in memory: the same ranking.
    exact_dir = _build(model, gallery, str(tmp_path / "exact"))[0]
    query = _query_image(gallery)
    found = cli_search.search(model, out, query, k=3, output=str(tmp_path / "q.png"))
    expected = cli_search.search(model, exact_dir, query, k=3, output=str(tmp_path / "q2.png"))
    assert found["size"] == 12 and found["warning"] is None
    assert found["metadata"][0]["path"] == os.path.abspath(query)     # finds itself
    np.testing.assert_allclose(found["scores"], expected["scores"], atol=1e-4)
    # Served (keras-dml serve in its own process: the search above closed
    # the embedded database, which one process opens at a time).
    with open(query, "rb") as f:
        data = f.read()
    with st.running_server(model, out) as url:
        health = requests.get(url + "/healthz", timeout=30).json()
        assert health["items"] == 12
        body = requests.post(url + "/search?k=3", data=data, timeout=60).json()
    assert body["results"][0]["metadata"]["path"] == os.path.abspath(query)
    np.testing.assert_allclose([r["score"] for r in body["results"]], expected["scores"],
                               atol=1e-4)
    # A rerun over a finished index is refused; --overwrite rebuilds it.
    with pytest.raises(cli_index.IndexCommandError, match="--overwrite"):
        _build(model, gallery, out, "--backend", "milvus")
    _build(model, gallery, out, "--backend", "milvus", "--overwrite")
    with kd.retrieval.Index.load(out) as index:
        assert len(index) == 12


def test_milvus_server_uri(model, tmp_path, milvus_server):  # noqa: F811
    import keras_dml as kd
    gallery = st.write_gallery(str(tmp_path / "g"), per_class=2)
    out = str(tmp_path / "idx")
    name = collection_name("cli")
    argv = ["--backend", "milvus", "--uri", milvus_server, "--collection", name]
    assert _build(model, gallery, out, *argv)[1] == 8
    assert os.listdir(out) == ["manifest.json"]          # the data is in the server
    with kd.retrieval.Index.load(out) as index:
        assert len(index) == 8 and index.get_metadata([0])[0]["path"].startswith(gallery)
    # Another index into the same, non-empty collection needs --overwrite.
    with pytest.raises(cli_index.IndexCommandError, match="already holds 8 items"):
        _build(model, gallery, str(tmp_path / "other"), *argv)
    _build(model, gallery, str(tmp_path / "other"), *argv, "--overwrite")
    with kd.retrieval.Index.load(str(tmp_path / "other")) as index:
        assert len(index) == 8
    # --uri and --collection belong to --backend=milvus.
    with pytest.raises(cli_index.IndexCommandError, match="--backend=milvus only"):
        _build(model, gallery, str(tmp_path / "x"), "--uri", milvus_server)
