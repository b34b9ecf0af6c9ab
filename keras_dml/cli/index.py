"""``keras-dml index``: embed a gallery of images with an exported model.

    keras-dml index --model=DIR/saved_model --images=ROOT_OR_CSV --index=OUT [--backend=exact|faiss]

``--images`` is a folder (every image under it; an image inside
``ROOT/<class>/...``, or ``ROOT/train|test|val/<class>/...``, gets that
class) or a CSV file (``--image_column``, optional ``--label_column``;
relative paths are relative to the CSV's folder or ``--root``). Hidden and
non-image files are skipped as by ``kd.data.load_image_folder``. The index
(``kd.retrieval.Index``, cosine) holds one item per readable image: label =
the class's position in the sorted class names (-1 without a class) and
metadata ``{"path": absolute path, "class_name": ...}``. It records the
model's fingerprint (``kd.serving.fingerprint``): ``serve`` refuses another
model.

The images are read and checked in a thread pool and embedded in batches
of ``--batch_size`` through the SavedModel's bytes signature (the same
decode / resize / normalisation as the model was evaluated with), with a
progress bar. Unreadable images are skipped and listed at the end.

Resuming. Galleries of a million images take hours, so the embeddings are
checkpointed every ``--checkpoint_every`` images into ``OUT.partial/``
(each chunk written to a temporary file and renamed, then the state file
likewise: a kill at any moment leaves a consistent checkpoint). Rerunning
the same command continues after the last checkpoint; a checkpoint made by
another model or for another image list is refused (``--restart`` discards
it). The finished index is saved atomically to ``OUT`` and the checkpoint
removed.
"""

import argparse
import concurrent.futures
import csv
import hashlib
import json
import os
import shutil
import sys

import numpy as np

PROG = "keras-dml index"
SUMMARY = ("Embed a gallery of images with an exported model into an index: "
           "--model=DIR/saved_model --images=ROOT_OR_CSV --index=OUT [--backend=exact|faiss]; "
           "resumable.")
STATE_FILE = "state.json"
# Tests: "N:marker" pauses the run after its N-th checkpoint (writes the
# marker file, then sleeps until killed), to kill it there.
_PAUSE_ENV = "KERAS_DML_INDEX_PAUSE"


def _pause_point(chunks):
    spec = os.environ.get(_PAUSE_ENV, "")
    if ":" in spec and spec.split(":", 1)[0] == str(chunks):
        import time
        with open(spec.split(":", 1)[1], "w") as f:
            f.write(str(chunks))
        while True:          # until killed
            time.sleep(1)


class IndexCommandError(Exception):
    """A command that cannot run; one line, exit status 2."""


def parser():
    p = argparse.ArgumentParser(prog=PROG, description=SUMMARY, allow_abbrev=False)
    p.add_argument("--model", required=True, help="SavedModel directory (DIR/saved_model).")
    p.add_argument("--images", required=True,
                   help="A folder of images (ROOT/<class>/... gives classes) or a CSV file.")
    p.add_argument("--index", required=True, help="Output index directory.")
    p.add_argument("--backend", default="exact", choices=("exact", "faiss"),
                   help="Index backend (default exact).")
    p.add_argument("--faiss_factory", default="Flat",
                   help="faiss index_factory string for --backend=faiss (e.g. HNSW32).")
    p.add_argument("--batch_size", type=int, default=64, help="Images per model call.")
    p.add_argument("--checkpoint_every", type=int, default=4096,
                   help="Images between checkpoints (default 4096).")
    p.add_argument("--root", default=None,
                   help="CSV: folder relative paths are relative to (default the CSV's).")
    p.add_argument("--image_column", default="path", help="CSV column of image paths.")
    p.add_argument("--label_column", default="label",
                   help="CSV column of class names (optional in the file).")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing --index.")
    p.add_argument("--restart", action="store_true",
                   help="Discard a checkpoint of an interrupted run and start again.")
    p.add_argument("--verbose", type=int, default=1, help="1: progress bar, 0: quiet.")
    return p


# ----------------------------------------------------------------- listing
def list_folder(root):
    """[(absolute path, class name or None)] of every image under ``root``."""
    from keras_dml.data import folders
    skipped = folders._Skipped()
    paths = []
    folders._walk_images(root, skipped, paths)
    split_layout = folders._is_split_layout(root)
    items = []
    for path in paths:
        parts = os.path.relpath(path, root).split(os.sep)
        if split_layout:
            parts = parts[1:]
        items.append((os.path.abspath(path), parts[0] if len(parts) > 1 else None))
    skipped.report(root)
    return items


def list_csv(path, root, image_column, label_column):
    """[(absolute path, class name or None)] of the rows of a CSV file."""
    base = os.path.abspath(root) if root else os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if image_column not in columns:
            raise IndexCommandError(f"{path}: no column {image_column!r}; the header has "
                                    f"{columns}.")
        has_label = label_column in columns
        items = []
        for row in reader:
            file = (row[image_column] or "").strip()
            if not file:
                continue
            full = file if os.path.isabs(file) else os.path.join(base, file)
            label = (row[label_column] or "").strip() if has_label else ""
            items.append((os.path.abspath(full), label or None))
    return items


def list_gallery(images, args):
    if os.path.isdir(images):
        items = list_folder(images)
    elif os.path.isfile(images):
        items = list_csv(images, args.root, args.image_column, args.label_column)
    else:
        raise IndexCommandError(f"--images {images!r}: no such folder or CSV file.")
    if not items:
        raise IndexCommandError(f"--images {images!r}: no image files found.")
    return items


def listing_digest(items):
    h = hashlib.sha256()
    for path, name in items:
        h.update(f"{path}\0{name}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------- checkpoint
class Checkpoint:
    """``OUT.partial/``: chunks of embeddings and a state file, both
    replaced atomically."""

    def __init__(self, directory):
        self.dir = directory
        self.state_path = os.path.join(directory, STATE_FILE)

    def load(self):
        if not os.path.isfile(self.state_path):
            return None
        with open(self.state_path) as f:
            return json.load(f)

    def _atomic(self, name, write):
        path = os.path.join(self.dir, name)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def save_chunk(self, number, embeddings, ok, state):
        self._atomic(f"chunk_{number:06d}.npz",
                     lambda f: np.savez(f, embeddings=embeddings, ok=ok))
        self._atomic(STATE_FILE, lambda f: f.write(json.dumps(state).encode()))

    def chunks(self, count):
        emb, ok = [], []
        for number in range(count):
            with np.load(os.path.join(self.dir, f"chunk_{number:06d}.npz")) as z:
                emb.append(z["embeddings"])
                ok.append(z["ok"])
        return emb, ok


# ---------------------------------------------------------------- embedding
def _read(path, max_pixels):
    from keras_dml.serving.app import ApiError, check_image
    try:
        with open(path, "rb") as f:
            data = f.read()
        return check_image(data, max_pixels), None
    except ApiError as e:
        return None, e.message
    except OSError as e:
        return None, str(e)


def _embed_batch(embed, blobs):
    """(embeddings [n, D], decoded [n] bool): one model call, or one per
    image if the batch fails (an image Pillow read but TensorFlow cannot)."""
    try:
        return embed(blobs), np.ones(len(blobs), bool)
    except Exception:  # noqa: BLE001
        rows, decoded = [], []
        for blob in blobs:
            try:
                rows.append(embed([blob])[0])
                decoded.append(True)
            except Exception:  # noqa: BLE001
                rows.append(None)
                decoded.append(False)
        dim = next((len(r) for r in rows if r is not None), 1)
        return (np.stack([r if r is not None else np.zeros(dim, np.float32) for r in rows]),
                np.asarray(decoded))


def build(args):
    """Run the command; returns (index path, items indexed, unreadable list)."""
    from keras_dml import retrieval
    from keras_dml.cli import search as cli_search
    from keras_dml.serving import fingerprint, app as serving_app
    import keras

    if args.batch_size < 1 or args.checkpoint_every < 1:
        raise IndexCommandError("--batch_size and --checkpoint_every must be >= 1.")
    out = os.path.abspath(args.index)
    if os.path.exists(out) and not args.overwrite:
        raise IndexCommandError(f"--index {out!r} exists; pass --overwrite to replace it.")
    try:
        cli_search.check_model_dir(args.model)
        model_fp = fingerprint.model_fingerprint(args.model)
    except (cli_search.SearchError, FileNotFoundError) as e:
        raise IndexCommandError(str(e)) from None
    items = list_gallery(args.images, args)
    digest = listing_digest(items)
    chunk = max(args.batch_size, args.checkpoint_every // args.batch_size * args.batch_size)
    ckpt = Checkpoint(out + ".partial")
    state = ckpt.load()
    if state is not None and args.restart:
        shutil.rmtree(ckpt.dir)
        state = None
    if state is not None and (state["model"] != model_fp or state["listing"] != digest
                              or state["chunk"] != chunk):
        raise IndexCommandError(
            f"{ckpt.dir} holds a checkpoint of another run (another model, image list or "
            "--checkpoint_every); pass --restart to discard it.")
    if state is None:
        os.makedirs(ckpt.dir, exist_ok=True)
        state = {"model": model_fp, "listing": digest, "chunk": chunk, "chunks": 0,
                 "done": 0, "total": len(items)}
    try:
        embed = cli_search.embedding_function(args.model)
    except cli_search.SearchError as e:
        raise IndexCommandError(str(e)) from None
    dim = int(embed([serving_app._tiny_png()]).shape[1])
    done = state["done"]
    bar = keras.utils.Progbar(len(items), unit_name="image") if args.verbose else None
    if bar and done:
        print(f"{PROG}: resuming after {done:,} of {len(items):,} images", file=sys.stderr)
        bar.update(done)
    with concurrent.futures.ThreadPoolExecutor(max(2, min(8, os.cpu_count() or 2))) as pool:
        while done < len(items):
            stop = min(done + chunk, len(items))
            emb = np.zeros((stop - done, dim), np.float32)
            ok = np.zeros(stop - done, bool)
            for start in range(done, stop, args.batch_size):
                end = min(start + args.batch_size, stop)
                read = list(pool.map(lambda p: _read(p, serving_app.DEFAULT_MAX_PIXELS),
                                     [p for p, _ in items[start:end]]))
                good = np.asarray([b is not None for b, _ in read])
                if good.any():
                    rows = np.arange(start - done, end - done)[good]
                    vectors, decoded = _embed_batch(embed, [b for b, _ in read if b])
                    emb[rows] = vectors
                    ok[rows] = decoded
                if bar:
                    bar.update(end)
            state = dict(state, chunks=state["chunks"] + 1, done=stop)
            ckpt.save_chunk(state["chunks"] - 1, emb, ok, state)
            done = stop
            _pause_point(state["chunks"])
    emb_chunks, ok_chunks = ckpt.chunks(state["chunks"])
    ok = np.concatenate(ok_chunks)
    if not ok.any():
        raise IndexCommandError("no readable image in --images.")
    emb = np.concatenate(emb_chunks)[ok]
    names = sorted({name for (_, name), good in zip(items, ok) if good and name is not None})
    ids = {name: i for i, name in enumerate(names)}
    kept = [item for item, good in zip(items, ok) if good]
    labels = np.asarray([ids[n] if n is not None else -1 for _, n in kept], np.int64)
    metadata = [{"path": p, **({"class_name": n} if n is not None else {})} for p, n in kept]
    params = {"faiss_factory": args.faiss_factory} if args.backend == "faiss" else {}
    index = retrieval.Index(dim, metric="cosine", backend=args.backend, **params)
    index.add(emb, labels=labels, metadata=metadata)
    path = index.save(out)
    fingerprint.record_model(path, args.model, model_fp)
    shutil.rmtree(ckpt.dir)
    bad = [p for (p, _), good in zip(items, ok) if not good]
    return path, len(kept), bad


def main(argv):
    args = parser().parse_args(argv)
    from keras_dml.cli import quiet
    quiet.after_flags(0)
    try:
        path, n, bad = build(args)
    except IndexCommandError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    if bad:
        shown = ", ".join(bad[:10]) + (" ..." if len(bad) > 10 else "")
        print(f"{PROG}: skipped {len(bad)} unreadable image(s): {shown}", file=sys.stderr)
    print(f"wrote {path}: {n:,} images")
    return 0
