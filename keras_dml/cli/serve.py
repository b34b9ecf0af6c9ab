"""``keras-dml serve``: the search service (``kd.serving``) under uvicorn.

    keras-dml serve --model=DIR/saved_model --index=DIR/index [--host=127.0.0.1] [--port=8000]
                    [--threshold=T] [--max_upload_mb=10] [--max_batch=32] [--batch_window_ms=5]

Binds 127.0.0.1 unless ``--host`` says otherwise (``--host=0.0.0.0`` serves
the network: put it behind a reverse proxy with TLS and authentication).
Open http://127.0.0.1:8000/ for the page; the JSON API is in
``keras_dml/serving/app.py``. A model that did not make the index, or an
unloadable model or index, exits with status 2 and one line saying why.
"""

import argparse
import sys

PROG = "keras-dml serve"
SUMMARY = ("Serve image search over HTTP with a web page: --model=DIR/saved_model "
           "--index=DIR/index [--host=127.0.0.1] [--port=8000] [--threshold=T].")


def parser():
    p = argparse.ArgumentParser(prog=PROG, description=SUMMARY, allow_abbrev=False)
    p.add_argument("--model", required=True, help="SavedModel directory (DIR/saved_model).")
    p.add_argument("--index", required=True, help="Index directory (DIR/index).")
    p.add_argument("--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1).")
    p.add_argument("--port", type=int, default=8000, help="Port (default 8000).")
    p.add_argument("--threshold", type=float, default=None,
                   help="Match threshold on the score: results get match true/false and a "
                        "query whose nearest item is below it is 'unknown' (default: "
                        "DIR/index/threshold.json if present, else no matching).")
    p.add_argument("--k", type=int, default=8, help="The page's default k.")
    p.add_argument("--max_upload_mb", type=float, default=10.0,
                   help="Upload size limit in MB (413 above; default 10).")
    p.add_argument("--max_pixels", type=int, default=40_000_000,
                   help="Refuse images with more pixels (decompression bombs; default 40M).")
    p.add_argument("--max_batch", type=int, default=32,
                   help="Most requests embedded in one model call (default 32).")
    p.add_argument("--batch_window_ms", type=float, default=5.0,
                   help="How long a batch waits for more requests (default 5 ms).")
    p.add_argument("--log_level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level.")
    return p


def main(argv):
    args = parser().parse_args(argv)
    from keras_dml.cli import quiet
    quiet.after_flags(0)
    try:
        import uvicorn

        from keras_dml.serving.app import create_app
    except ImportError as e:
        print(f"{PROG}: error: the search service needs the [serve] extra: pip install "
              f"'keras_dml[serve]' ({e}).", file=sys.stderr)
        return 2
    from keras_dml.cli.search import SearchError
    from keras_dml.retrieval import ModelMismatchError
    try:
        app = create_app(args.model, args.index, threshold=args.threshold,
                         max_upload_bytes=int(args.max_upload_mb * 2 ** 20),
                         max_pixels=args.max_pixels, max_batch=args.max_batch,
                         batch_window_ms=args.batch_window_ms, default_k=args.k)
    except (SearchError, ModelMismatchError, FileNotFoundError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print(f"{PROG}: {len(app.state.searcher.index):,} images; open "
          f"http://{args.host}:{args.port}/", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
