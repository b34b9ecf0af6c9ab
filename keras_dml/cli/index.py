"""``keras-dml index``: embed a gallery of images with an exported model.

    keras-dml index --model=DIR/saved_model --images=ROOT_OR_CSV --index=OUT \
        [--backend=exact|faiss|milvus [--uri=URI] [--collection=NAME]]

``--images`` is a folder (every image under it; an image inside
``ROOT/<class>/...``, or ``ROOT/train|test|val/<class>/...``, gets that
class) or a CSV file (``--image_column``, optional ``--label_column``;
relative paths are relative to the CSV's folder or ``--root``). Hidden and
non-image files are skipped as by ``kd.data.load_image_folder``. The index
(``kd.retrieval.Index``, cosine) holds one item per readable image: label =
the class's position in the sorted class names (-1 without a class) and
metadata ``{"path": absolute path, "class_name": ...}``. It records the
model's fingerprint (``Index.model_fingerprint``: the
``kd.retrieval.model_fingerprint`` that ``kd.export`` wrote into the
SavedModel) in its manifest, so that ``search`` and ``serve`` refuse
another model (``kd.retrieval.check_model_matches``); a SavedModel without
one gives an index without one, with a warning.

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
it; the checkpoint names the model by its fingerprint, or by its absolute
path when it has none). The finished index is saved atomically to ``OUT``
and the checkpoint removed.

Milvus (``--backend=milvus``). The items go into a Milvus collection
(``--collection``, default "gallery") at ``--uri``: by default
``OUT/milvus.db``, an embedded Milvus Lite database inside the index
directory, so that the directory is self-contained and can be moved; or a
server or cluster, ``--uri=http://host:19530``. Each chunk is written to
Milvus as soon as it is embedded, with explicit ids (the image's position
in the listing), before its checkpoint is recorded: a rerun after a kill
re-embeds at most the chunk in flight and upserts it over whatever part of
it reached Milvus, so no item is duplicated or lost, and the embeddings are
never all held in memory. Labels are the positions of the class names of
the whole listing (an in-process index numbers only the classes with a
readable image; the two agree unless a whole class is unreadable). ``OUT``
then holds only ``manifest.json`` (and the embedded database), written at
the end. A fresh run refuses a collection that already has items unless
``--overwrite`` is given, which drops it (for the default URI: removes
``OUT`` first; unlike the in-process backends this is not atomic).
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
           "--model=DIR/saved_model --images=ROOT_OR_CSV --index=OUT "
           "[--backend=exact|faiss|milvus [--uri=URI] [--collection=NAME]]; resumable.")
MILVUS_FILE = "milvus.db"
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
    p.add_argument("--backend", default="exact", choices=("exact", "faiss", "milvus"),
                   help="Index backend (default exact).")
    p.add_argument("--uri", default=None,
                   help="--backend=milvus: a Milvus Lite path ending in .db or a server "
                        f"URI http://host:19530 (default OUT/{MILVUS_FILE}, inside the index).")
    p.add_argument("--collection", default="gallery",
                   help="--backend=milvus: the collection name (default gallery).")
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
        self.save_state(state)

    def save_state(self, state):
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


def _open_index(retrieval, dim, args, uri):
    """The ``kd.retrieval.Index`` the command fills (cosine)."""
    try:
        if args.backend == "milvus":
            return retrieval.Index(dim, metric="cosine", backend="milvus", uri=uri,
                                   collection=args.collection)
        params = {"faiss_factory": args.faiss_factory} if args.backend == "faiss" else {}
        return retrieval.Index(dim, metric="cosine", backend=args.backend, **params)
    except (ImportError, ValueError, ConnectionError) as e:
        raise IndexCommandError(f"--backend={args.backend}: {e}") from None


def _add_milvus_chunk(index, emb, ok, items, first, class_ids):
    """Write one chunk's readable images to Milvus with explicit ids (their
    positions in the listing): an upsert, so a chunk written again after a
    kill replaces its rows instead of duplicating them."""
    rows = np.flatnonzero(ok)
    if not len(rows):
        return
    chunk_items = [items[first + r] for r in rows]
    labels = np.asarray([class_ids[n] if n is not None else -1 for _, n in chunk_items],
                        np.int64)
    metadata = [{"path": p, **({"class_name": n} if n is not None else {})}
                for p, n in chunk_items]
    index.add(emb[rows], labels=labels, ids=first + rows.astype(np.int64),
              metadata=metadata)


def build(args):
    """Run the command; returns (index path, items indexed, unreadable list)."""
    import keras

    from keras_dml import retrieval
    from keras_dml.cli import search as cli_search
    from keras_dml.retrieval.milvus import is_embedded
    from keras_dml.serving import app as serving_app

    if args.batch_size < 1 or args.checkpoint_every < 1:
        raise IndexCommandError("--batch_size and --checkpoint_every must be >= 1.")
    milvus = args.backend == "milvus"
    if not milvus and (args.uri is not None or args.collection != "gallery"):
        raise IndexCommandError("--uri and --collection apply to --backend=milvus only.")
    out = os.path.abspath(args.index)
    ckpt = Checkpoint(out + ".partial")
    # A milvus run fills OUT/milvus.db before it writes OUT/manifest.json: a
    # directory without a manifest next to a checkpoint is that run's own.
    resumable = (milvus and os.path.isfile(ckpt.state_path)
                 and not os.path.isfile(os.path.join(out, "manifest.json")))
    if os.path.exists(out) and not args.overwrite and not resumable:
        raise IndexCommandError(f"--index {out!r} exists; pass --overwrite to replace it.")
    try:
        cli_search.check_model_dir(args.model)
    except cli_search.SearchError as e:
        raise IndexCommandError(str(e)) from None
    model_fp = retrieval.model_fingerprint(args.model)
    # The checkpoint's model identity: the fingerprint, else (a SavedModel
    # not written by kd.export) the model's absolute path.
    model_id = model_fp or "path:" + os.path.abspath(args.model)
    items = list_gallery(args.images, args)
    digest = listing_digest(items)
    chunk = max(args.batch_size, args.checkpoint_every // args.batch_size * args.batch_size)
    uri = args.uri if args.uri is not None else os.path.join(out, MILVUS_FILE)
    if milvus and is_embedded(uri):
        uri = os.path.abspath(uri)
    # Where the items go as they are embedded (milvus), None: at the end.
    target = {"uri": uri, "collection": args.collection} if milvus else None
    state = ckpt.load()
    restarted = state is not None and args.restart
    if restarted:
        shutil.rmtree(ckpt.dir)
        state = None
    if state is not None and (state["model"] != model_id or state["listing"] != digest
                              or state["chunk"] != chunk or state.get("milvus") != target):
        raise IndexCommandError(
            f"{ckpt.dir} holds a checkpoint of another run (another model, image list, "
            "--checkpoint_every or --backend/--uri/--collection); pass --restart to "
            "discard it.")
    if state is None and milvus and args.uri is None and os.path.exists(out):
        shutil.rmtree(out)          # --overwrite (or --restart) of the default database
    fresh = state is None
    if fresh:
        os.makedirs(ckpt.dir, exist_ok=True)
        state = {"model": model_id, "listing": digest, "chunk": chunk, "chunks": 0,
                 "done": 0, "total": len(items), "milvus": target}
        # Recorded before anything is written to Milvus: a rerun knows the
        # collection's rows are this run's (and upserts over them).
        ckpt.save_state(state)
    try:
        embed = cli_search.embedding_function(args.model)
    except cli_search.SearchError as e:
        raise IndexCommandError(str(e)) from None
    dim = int(embed([serving_app._tiny_png()]).shape[1])
    index = _open_index(retrieval, dim, args, uri)
    try:
        if milvus and fresh and len(index):
            if not (args.overwrite or restarted):
                raise IndexCommandError(
                    f"Milvus collection {args.collection!r} at {uri!r} already holds "
                    f"{len(index):,} items; pass --overwrite to drop it.")
            index._store._call("drop_collection", args.collection)
            index.close()
            index = _open_index(retrieval, dim, args, uri)
        return _fill(index, args, out, ckpt, state, items, embed, dim, chunk, model_fp,
                     keras, retrieval, serving_app)
    finally:
        index.close()


def _fill(index, args, out, ckpt, state, items, embed, dim, chunk, model_fp, keras,
          retrieval, serving_app):
    milvus = args.backend == "milvus"
    index.model_fingerprint = model_fp        # saved in the manifest by Index.save
    # Before hours of embedding: a model without a fingerprint makes an index
    # that search / serve cannot check (the same check, and warning, as theirs).
    warning = retrieval.check_model_matches(args.model, index, model_name=repr(args.model),
                                            index_name=repr(out))
    if warning:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    # milvus: labels number the class names of the whole listing (known
    # before any image is read, so every chunk can be written at once).
    class_ids = {name: i for i, name in
                 enumerate(sorted({n for _, n in items if n is not None}))}
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
            if milvus:
                # Into Milvus first, then the checkpoint that records it.
                _add_milvus_chunk(index, emb, ok, items, done, class_ids)
                emb = emb[:0]
            state = dict(state, chunks=state["chunks"] + 1, done=stop)
            ckpt.save_chunk(state["chunks"] - 1, emb, ok, state)
            done = stop
            _pause_point(state["chunks"])
    emb_chunks, ok_chunks = ckpt.chunks(state["chunks"])
    ok = np.concatenate(ok_chunks)
    if not ok.any():
        raise IndexCommandError("no readable image in --images.")
    kept = [item for item, good in zip(items, ok) if good]
    if not milvus:
        emb = np.concatenate(emb_chunks)[ok]
        names = sorted({name for _, name in kept if name is not None})
        ids = {name: i for i, name in enumerate(names)}
        labels = np.asarray([ids[n] if n is not None else -1 for _, n in kept], np.int64)
        metadata = [{"path": p, **({"class_name": n} if n is not None else {})}
                    for p, n in kept]
        index.add(emb, labels=labels, metadata=metadata)
    if milvus and len(index) != len(kept):
        raise IndexCommandError(
            f"Milvus collection {args.collection!r} holds {len(index):,} items after the "
            f"run, {len(kept):,} were indexed (was it written to by someone else?).")
    path = index.save(out)
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
