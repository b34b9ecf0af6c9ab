"""`keras-dml index`: a gallery folder or CSV embedded into an index with the
model's fingerprint; a killed run resumes from its last checkpoint."""

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import serving_tools as st
from keras_dml.cli import index as cli_index


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
    assert kd.serving.recorded_model(path) == kd.serving.model_fingerprint(model)
    assert not os.path.exists(path + ".partial")


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


def test_killed_run_resumes_from_its_checkpoint(model, tmp_path, capsys):
    import keras_dml as kd
    gallery = st.write_gallery(str(tmp_path / "g"), per_class=6)       # 24 images
    out = str(tmp_path / "idx")
    marker = str(tmp_path / "paused")
    env = dict(os.environ, PYTHONPATH=st.ROOT, TF_CPP_MIN_LOG_LEVEL="2",
               **{cli_index._PAUSE_ENV: f"2:{marker}"})
    argv = ["--model", model, "--images", gallery, "--index", out, "--batch_size", "4",
            "--checkpoint_every", "8"]
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
    assert not os.path.exists(out)                       # killed before the index
    partial = out + ".partial"
    assert sorted(f for f in os.listdir(partial) if f.endswith(".npz")) == \
        ["chunk_000000.npz", "chunk_000001.npz"]
    # Another model's rerun is refused; the same command resumes.
    other = st.export_tiny_model(str(tmp_path / "other"), seed=3)
    assert cli_index.main(["--model", other, *argv[2:], "--verbose", "0"]) == 2
    assert "--restart" in capsys.readouterr().err
    assert cli_index.main([*argv, "--verbose", "1"]) == 0
    assert "resuming after 16 of 24 images" in capsys.readouterr().err
    resumed = kd.retrieval.Index.load(out)
    fresh = kd.retrieval.Index.load(_build(model, gallery, str(tmp_path / "fresh"))[0])
    assert resumed.metadata == fresh.metadata
    np.testing.assert_array_equal(resumed.labels, fresh.labels)
    np.testing.assert_allclose(resumed.embeddings, fresh.embeddings, atol=1e-5)
    assert not os.path.exists(partial)
