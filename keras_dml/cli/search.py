"""``keras-dml search``: the nearest gallery items of one image.

    keras-dml search --model=DIR/saved_model --index=DIR/index --image=PATH --k=5

prints the k nearest items of the index (rank, id, label, score, metadata)
and writes a PNG of the query and its results (``kd.plots.retrieval_grid``;
``--output``, default ``search_<image name>.png`` beside the index
directory, i.e. in the run directory: never into the current directory). The image is read as
its encoded bytes and embedded by the SavedModel's bytes signature
(``serving_bytes`` of ``kd.export.export_saved_model``, or
``embeddings_bytes`` of ``export_retrieval_model``), so it is decoded,
resized and normalised exactly as the model was evaluated; JPEG and PNG go
in as they are, other formats Pillow reads (BMP, GIF, WebP, ...) are
re-encoded as PNG first. ``--label`` (the query's class, when known) colours
the results green / red as in ``retrievals.png``; without it they are grey.
A ``--label`` that is not one of the index's labels is refused.

A model and an index from different runs are refused: the embedding widths
must agree, and when both record ``kd.retrieval.model_fingerprint`` (the
SavedModel in ``assets.extra/keras_dml.json``, the index in its manifest)
the fingerprints must be equal; when either lacks one the search runs with
a warning that it cannot check.

The gallery images drawn come from each item's metadata: its file
(``path``) when it still exists, else its thumbnail in the index directory
(see ``kd.training.gallery``). Bad input (missing model or index, an
unreadable image, k outside 1..len(index), a model whose embeddings do not
fit the index) exits with status 2 and one line saying why.

This module imports TensorFlow only when a search runs.
"""

import argparse
import io
import json
import os
import sys

PROG = "keras-dml search"
SUMMARY = ("Nearest neighbours of an image in a run's test gallery: --model=DIR/saved_model "
           "--index=DIR/index --image=PATH [--k=5]; prints them and writes a PNG.")
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Metadata keys that are bookkeeping of the index's files, not for people.
_HIDDEN_KEYS = ("thumbnail",)


class SearchError(Exception):
    """A search that cannot run; printed as one line, exit status 2."""


def parser():
    p = argparse.ArgumentParser(
        prog=PROG, description=SUMMARY, allow_abbrev=False,
        epilog="example: keras-dml search --model=runs/demo/saved_model "
               "--index=runs/demo/index --image=shoe.png --k=5")
    p.add_argument("--model", required=True,
                   help="SavedModel directory (a run's DIR/saved_model).")
    p.add_argument("--index", required=True,
                   help="kd.retrieval.Index directory (a run's DIR/index).")
    p.add_argument("--image", required=True, help="The query image file (JPEG, PNG, ...).")
    p.add_argument("--k", type=int, default=5, help="Neighbours to show (default 5).")
    p.add_argument("--output", default=None,
                   help="PNG to write (default: search_<image name>.png beside the "
                        "index directory).")
    p.add_argument("--label", type=int, default=None,
                   help="The query's class label in the index's labels, if known: "
                        "results get green (same) / red (other) borders.")
    return p


def read_image(path):
    """(encoded JPEG/PNG bytes for the model, decoded uint8 image for the
    plot) of the file ``path``."""
    from PIL import Image, UnidentifiedImageError
    if not os.path.exists(path):
        raise SearchError(f"no image file {path!r}.")
    if not os.path.isfile(path):
        raise SearchError(f"--image {path!r} is not a file.")
    with open(path, "rb") as f:
        data = f.read()
    try:
        with Image.open(path) as im:
            im.load()      # decodes everything: a truncated file fails here
            fmt = im.format
            picture = im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy()
    except UnidentifiedImageError:
        raise SearchError(f"cannot read image {path!r}: not an image file Pillow can "
                          "identify (corrupt, or not an image?).") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise SearchError(f"cannot read image {path!r}: {e}") from None
    if not data.startswith((_JPEG_MAGIC, _PNG_MAGIC)) or fmt not in ("JPEG", "PNG"):
        buf = io.BytesIO()      # the model's bytes signature takes JPEG or PNG
        picture.save(buf, format="PNG")
        data = buf.getvalue()
    import numpy as np
    return data, np.asarray(picture)


def load_index(path):
    from keras_dml import retrieval
    try:
        index = retrieval.Index.load(path)
    except retrieval.IndexFormatError as e:
        raise SearchError(f"cannot load --index: {e}") from None
    if len(index) == 0:
        raise SearchError(f"the index {path!r} is empty.")
    return index


def check_model_dir(path):
    if not os.path.isdir(path):
        raise SearchError(f"no SavedModel at {path!r}: not a directory (a run writes "
                          "DIR/saved_model unless --noexport).")
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise SearchError(f"{path!r} is not a SavedModel (it has no saved_model.pb).")


def embedding_function(path):
    """``bytes [N] -> embeddings [N, D]`` from the SavedModel at ``path``."""
    import tensorflow as tf
    try:
        model = tf.saved_model.load(path)
    except Exception as e:  # noqa: BLE001  (TF raises many kinds)
        raise SearchError(f"cannot load the SavedModel {path!r}: {e}") from None
    for name in ("embeddings_bytes", "serving_bytes"):
        fn = model.signatures.get(name)
        if fn is not None and "embeddings" in fn.structured_outputs:
            break
    else:
        raise SearchError(
            f"the SavedModel {path!r} has no encoded-image signature returning "
            f"embeddings (serving_bytes / embeddings_bytes); it has "
            f"{sorted(model.signatures)}. Export it with kd.export.export_saved_model.")

    def embed(data):
        try:
            out = fn(image_bytes=tf.constant(list(data)))["embeddings"]
        except tf.errors.InvalidArgumentError as e:
            raise SearchError(f"the model cannot decode the image: {e.message}") from None
        return out.numpy()

    embed.model = model       # keep the loaded object (its variables) alive
    return embed


def default_output(image, index):
    """``search_<image stem>.png`` beside the index directory."""
    stem = os.path.splitext(os.path.basename(image))[0] or "query"
    parent = os.path.dirname(os.path.abspath(os.fspath(index).rstrip("/\\")))
    return os.path.join(parent, f"search_{stem}.png")


def check_same_model(model, idx, index_path=None):
    """Refuse an index whose recorded model is not the SavedModel's
    (``kd.retrieval.check_model_matches``). Returns a warning (None if none)
    when either records no fingerprint."""
    from keras_dml.retrieval import ModelMismatchError, check_model_matches
    try:
        return check_model_matches(model, idx, index_name=None if index_path is None
                                   else repr(os.fspath(index_path)))
    except ModelMismatchError as e:
        raise SearchError(str(e)) from None


def check_label(label, idx):
    import numpy as np
    if label is None:
        return
    known = np.unique(idx.labels[idx.labels >= 0])
    if label not in known:
        shown = (f"{known.min()}-{known.max()}" if len(known) and
                 np.array_equal(known, np.arange(known.min(), known.max() + 1))
                 else ", ".join(map(str, known[:20])) or "none")
        raise SearchError(f"--label={label} is not a label of the index (its labels: "
                          f"{shown}).")


def search(model, index, image, k=5, output=None, label=None):
    """Run one search; returns ``{"ids", "scores", "labels", "metadata",
    "output", "size"}`` (the result row of the query)."""
    check_model_dir(model)
    idx = load_index(index)
    try:        # a Milvus-backed index disconnects (releases an embedded .db)
        return _search(idx, model, index, image, k, output, label)
    finally:
        idx.close()


def _search(idx, model, index, image, k, output, label):
    import numpy as np
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= len(idx):
        raise SearchError(f"--k must be between 1 and the index size {len(idx)}; got {k}.")
    check_label(label, idx)
    warning = check_same_model(model, idx, index)
    data, picture = read_image(image)
    output = os.path.abspath(output) if output else default_output(image, index)
    if os.path.isdir(output):
        raise SearchError(f"--output {output!r} is a directory; give a PNG file name.")
    out_dir = os.path.dirname(output)
    if not os.path.isdir(out_dir):
        raise SearchError(f"--output: no directory {out_dir!r}.")
    emb = embedding_function(model)([data])
    if emb.shape[1] != idx.dim:
        raise SearchError(f"the model's embeddings have dimension {emb.shape[1]}, the "
                          f"index has {idx.dim}: they come from different models.")
    result = idx.search(emb, int(k))
    ids, scores, labels = result.ids[0], result.scores[0], result.labels[0]
    metadata = idx.get_metadata(ids)

    from keras_dml import plots
    from keras_dml.training import gallery
    images, _ = gallery.images(index, metadata)
    plots.retrieval_grid([picture], images, None if label is None else [label],
                         None if label is None else labels, np.arange(len(ids))[None],
                         output, unlabelled=label is None,
                         title=f"{os.path.basename(image)}: its {len(ids)} nearest of "
                               f"{len(idx)} in {os.path.basename(os.path.abspath(index))}")
    return {"ids": ids, "scores": scores, "labels": labels, "metadata": metadata,
            "output": output, "size": len(idx), "warning": warning}


def shown_metadata(m):
    if isinstance(m, dict):
        m = {key: v for key, v in m.items() if key not in _HIDDEN_KEYS}
    return json.dumps(m, ensure_ascii=False, separators=(", ", ": "))


def format_table(result):
    rows = [("rank", "id", "label", "score", "metadata")]
    for r, (i, s, lab, m) in enumerate(zip(result["ids"].tolist(), result["scores"].tolist(),
                                           result["labels"].tolist(), result["metadata"])):
        rows.append((str(r + 1), str(i), str(lab), f"{s:.4f}", shown_metadata(m)))
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row[:4], widths))
                     + "  " + row[4] for row in rows)


def main(argv):
    """``keras-dml search [flags]``; returns the exit status."""
    args = parser().parse_args(argv)     # exits 2 with usage on bad flags, 0 on --help
    from keras_dml.cli import quiet
    quiet.after_flags(0)
    try:
        result = search(args.model, args.index, args.image, args.k, args.output, args.label)
    except SearchError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print(f"query {args.image}: {len(result['ids'])} nearest of {result['size']} items "
          f"in {args.index}")
    print(format_table(result))
    print(f"wrote {shown_path(result['output'])}")
    if result["warning"]:
        print(f"{PROG}: warning: {result['warning']}", file=sys.stderr)
    return 0


def shown_path(path):
    """``path`` relative to the working directory when it is inside it."""
    rel = os.path.relpath(path)
    return path if rel.startswith(os.pardir) else rel
