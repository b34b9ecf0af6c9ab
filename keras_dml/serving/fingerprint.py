"""Which model made an index: a fingerprint of the SavedModel, kept beside
the index, checked before the pair is served.

    fp = model_fingerprint("runs/x/saved_model")      # "sha256:..."
    record_model("runs/x/index", "runs/x/saved_model")
    check_model("runs/x/saved_model", "runs/x/index") # raises ModelMismatchError

The fingerprint is the SHA-256 of the SavedModel's graph (``saved_model.pb``)
and variable files (``variables/*``), in a fixed order: two exports of the
same weights and signatures have the same fingerprint; another training
run, or another model, has another. It is written to
``<index>/model.json`` (atomically, after the index itself: a later
``Index.save`` into the same directory drops it, as it drops thumbnails).

``check_model`` is the one place ``keras-dml index`` / ``serve`` ask; an
index without a recorded model (e.g. written by ``Index.save`` alone) is
accepted with a warning, and the embedding width is checked separately
by the caller.
"""

import hashlib
import json
import os

from absl import logging

MODEL_FILE = "model.json"
_CHUNK = 1 << 20


class ModelMismatchError(ValueError):
    """The index was made by another model than the one given."""


def model_fingerprint(model_dir):
    """``"sha256:<hex>"`` of the SavedModel at ``model_dir``."""
    model_dir = os.fspath(model_dir)
    files = [os.path.join(model_dir, "saved_model.pb")]
    variables = os.path.join(model_dir, "variables")
    if os.path.isdir(variables):
        files += sorted(os.path.join(variables, n) for n in os.listdir(variables))
    h = hashlib.sha256()
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{model_dir!r} is not a SavedModel: no {path!r}.")
        h.update(os.path.relpath(path, model_dir).encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


def recorded_model(index_dir):
    """The fingerprint recorded with the index, or None."""
    path = os.path.join(os.fspath(index_dir), MODEL_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get("model_fingerprint")


def record_model(index_dir, model_dir, fingerprint=None):
    """Record ``model_dir``'s fingerprint (or ``fingerprint``) with the index."""
    fingerprint = fingerprint or model_fingerprint(model_dir)
    path = os.path.join(os.fspath(index_dir), MODEL_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"model_fingerprint": fingerprint,
                   "model_dir": os.path.abspath(os.fspath(model_dir))}, f, indent=2)
    os.replace(tmp, path)
    return fingerprint


def check_model(model_dir, index_dir):
    """Refuse (``ModelMismatchError``) a model that did not make the index.

    Returns the model's fingerprint. An index with no recorded model is
    accepted with a warning.
    """
    fingerprint = model_fingerprint(model_dir)
    recorded = recorded_model(index_dir)
    if recorded is None:
        logging.warning("the index %s does not record which model made it; cannot check "
                        "that %s did.", index_dir, model_dir)
    elif recorded != fingerprint:
        raise ModelMismatchError(
            f"the index {index_dir!r} was made by another model ({recorded[:19]}...) than "
            f"{model_dir!r} ({fingerprint[:19]}...): its embeddings are not comparable. "
            "Rebuild the index with this model (keras-dml index) or serve the model "
            "that made it.")
    return fingerprint
