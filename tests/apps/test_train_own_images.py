"""`keras-dml train` on a folder of class folders: a few steps of a tiny
model, then what every app writes, an index whose items carry their file
path and the right class name, and the model fingerprint that `serve`
checks."""

import json
import os
import subprocess
import sys

import serving_tools as st

CLASSES = ("Ärmel", "boot", "coat", "猫", "dress", "shirt")


def _folder(root):
    for c, name in enumerate(CLASSES):
        for i in range(6):
            sub = os.path.join(root, name, "nested" if i % 3 == 0 else "")
            os.makedirs(sub, exist_ok=True)
            with open(os.path.join(sub, f"{i:02d}.png"), "wb") as f:
                f.write(st.png_bytes((40 * c, 255 - 40 * c, 128), seed=10 * c + i))
    return root


def test_train_writes_run_and_named_index(tmp_path):
    import keras_dml as kd
    data = _folder(str(tmp_path / "photos"))
    out = str(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=st.ROOT, TF_CPP_MIN_LOG_LEVEL="2",
               KERAS_BACKEND="tensorflow")
    proc = subprocess.run(
        [sys.executable, "-m", "keras_dml", "train", f"--data_dir={data}",
         f"--output_dir={out}", "--backbone=small_cnn", "--weights=none", "--image_size=32",
         "--embedding_dim=16", "--batch_size=8", "--epochs=1", "--steps_per_epoch=2",
         "--warmup_epochs=0", "--ks=1,2", "--val_fraction=0.3", "--eval_batch_size=16", "--verbose=0"],
        env=env, cwd=st.ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("metrics.json", "recipe.cfg", "history.csv", "retrievals.png",
                 "saved_model/saved_model.pb"):
        assert os.path.exists(os.path.join(out, name)), name
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    assert 0.0 <= metrics["recall@1"] <= 1.0 and metrics["num_queries"] == 18
    with open(os.path.join(out, "recipe.cfg")) as f:
        recipe = f.read()
    assert "--backbone=small_cnn" in recipe and "--loss=proxy_anchor" in recipe
    index = kd.retrieval.Index.load(os.path.join(out, "index"))
    assert len(index) == 18
    test_classes = set()
    for m in index.metadata:
        folder = os.path.relpath(m["path"], data).split(os.sep)[0]
        assert m["class_name"] == folder
        assert m["split"] == "test"
        test_classes.add(folder)
    assert len(test_classes) == 3
    # Labels agree with the names within the index.
    by_label = {}
    for label, m in zip(index.labels.tolist(), index.metadata):
        assert by_label.setdefault(label, m["class_name"]) == m["class_name"]
    saved = os.path.join(out, "saved_model")
    index_dir = os.path.join(out, "index")
    assert index.model_fingerprint is not None
    assert index.model_fingerprint == kd.retrieval.model_fingerprint(saved)
    assert kd.retrieval.check_model_matches(saved, index_dir) is None
    # The pair serves (fingerprint and width check pass).
    app = kd.serving.create_app(saved, index_dir)
    assert len(app.state.searcher.index) == 18


def test_train_app_reads_a_csv_or_a_folder(tmp_path):
    """The app's loader: --data_dir a CSV file -> load_image_csv with the CSV flags,
    a folder -> load_image_folder; the split flags reach both."""
    import csv
    import types

    from keras_dml.cli import apps
    data = _folder(str(tmp_path / "photos"))
    rows = [(os.path.relpath(os.path.join(d, f), data), os.path.relpath(d, data).split(os.sep)[0])
            for d, _, files in os.walk(data) for f in files]
    with open(tmp_path / "photos" / "list.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "what"])
        w.writerows(rows)
    flags = types.SimpleNamespace(
        data_dir=str(tmp_path / "photos" / "list.csv"), test_classes=0.5, seed=0,
        split="examples", test_examples=0.5, on_corrupt="pipeline", root=None,
        image_column="file", label_column="what", split_column=None)
    from_csv = apps.APPS["train"].load(flags)
    assert from_csv.train.info["class_names"] == from_csv.test.info["class_names"] == \
        sorted(CLASSES)
    flags.data_dir, flags.split = data, "classes"
    from_folder = apps.APPS["train"].load(flags)
    assert len(from_folder.train.info["class_names"]) == 3
    assert not set(from_folder.train.info["class_names"]) & \
        set(from_folder.test.info["class_names"])
