"""The search service: an ASGI app (Starlette) over an exported model and an index.

    app = kd.serving.create_app("runs/x/saved_model", "runs/x/index")
    uvicorn.run(app, host="127.0.0.1", port=8000)        # = keras-dml serve

Endpoints (every error is a JSON ``{"error": "..."}`` with a 4xx status;
the server keeps serving):

    GET  /                 the web page (``page.py``: one self-contained file)
    GET  /healthz          {"status": "ok", "items": N, "dim": D, "threshold": T or null,
                            "model_calls": ..., "embedded": ..., "largest_batch": ...}
    POST /search?k=K       body: the image, as multipart field "image" or the raw
                           file bytes -> {"results": [{"id", "score", "label",
                           "metadata", ("match")}, ...], "k": K, ("unknown": bool,
                           "threshold": T)}
    POST /embed            -> {"embedding": [D floats]}
    GET  /thumbnail/{id}   a PNG of gallery item ``id`` (<= 128 px): from the file
                           its metadata names, else the index's stored thumbnail.
                           Only ids of the index are served: no path is ever
                           taken from the request.

Errors: 400 (empty body, not an image, truncated image, missing multipart
field), 404 (unknown route or thumbnail id), 405, 413 (body above
``max_upload_bytes``, or an image above ``max_pixels`` pixels: a
decompression bomb is refused from its header, before it is decoded), 422
(k not an integer in 1..len(index), a thumbnail id that is not an integer).

Matching: with a threshold (``threshold=``, else ``<index>/threshold.json``
``{"threshold": t}`` when present) every result carries ``match`` (score >=
threshold) and the response says ``unknown`` when the nearest item does
not match.

Batching (``batching.Batcher``): uploads are checked (image headers read)
in the request's task; the embedding and the search run in one worker
thread that batches concurrent requests (``max_batch`` items, a
``batch_window_ms`` window) into one model call and one index search.
"""

import asyncio
import contextlib
import functools
import io
import json
import os
import warnings

import numpy as np
from absl import logging
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from keras_dml.serving.batching import Batcher

DEFAULT_MAX_UPLOAD = 10 * 2 ** 20
DEFAULT_MAX_PIXELS = 40_000_000
THUMBNAIL_PX = 128
THRESHOLD_FILE = "threshold.json"
# Searches fetch at least this many neighbours (see Searcher.search).
SEARCH_K = 32
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Multipart framing around a file of max_upload bytes.
_MULTIPART_SLACK = 64 * 1024


class ApiError(Exception):
    """An answer with a 4xx status and a JSON error."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status, message):
    return JSONResponse({"error": message}, status_code=status)


def check_image(data, max_pixels=DEFAULT_MAX_PIXELS):
    """Encoded bytes the model's bytes signature takes, or ``ApiError``: 400
    empty / not an image / truncated, 413 above ``max_pixels``.

    Pillow reads the header first, so a decompression bomb is refused from
    its declared size before anything is decoded. JPEG and PNG bytes go to
    the model as they are (TensorFlow decodes them once, in the batch; a
    file it cannot decode gets a 400 there); any other format Pillow reads
    (BMP, GIF, WebP, ...) is decoded here and re-encoded as PNG.
    """
    from PIL import Image, UnidentifiedImageError
    if not data:
        raise ApiError(400, "empty body: send the image as the raw request body or as "
                            "multipart field 'image'.")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise ApiError(413, f"image of {width} x {height} pixels is above the "
                                        f"limit of {max_pixels:,} pixels.")
                if data.startswith((_JPEG_MAGIC, _PNG_MAGIC)) and im.format in ("JPEG",
                                                                                "PNG"):
                    return data
                im.load()       # decodes everything: truncation fails here
                picture = im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy()
        except ApiError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ApiError(413, f"image refused as a decompression bomb: {e}") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
                MemoryError) as e:
            raise ApiError(400, f"not a readable image: {e}") from None
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


class Searcher:
    """The model and the index, used by the batching worker thread only."""

    def __init__(self, model_dir, index_dir, check_fingerprint=True):
        from keras_dml import retrieval
        from keras_dml.cli import search as cli_search
        cli_search.check_model_dir(model_dir)
        self.index = cli_search.load_index(index_dir)
        self.index_dir = os.fspath(index_dir)
        if check_fingerprint:
            warning = retrieval.check_model_matches(model_dir, self.index,
                                                    model_name=repr(os.fspath(model_dir)),
                                                    index_name=repr(self.index_dir))
            if warning:
                logging.warning("%s", warning)
        self._embed = cli_search.embedding_function(model_dir)
        probe = self._embed([_tiny_png()])
        if probe.shape[1] != self.index.dim:
            raise retrieval.ModelMismatchError(
                f"the model's embeddings have dimension {probe.shape[1]}, the index "
                f"{index_dir!r} has {self.index.dim}: they come from different models.")
        self.dim = self.index.dim
        # Counted once: len() of a Milvus-backed index is a count(*) query
        # (Milvus Lite scans the rows), too slow for every request.
        self.size = len(self.index)

    def search(self, queries, k):
        """``Index.search`` for ``k``, run as a search of at least
        ``SEARCH_K`` neighbours and cut: the exact backend compiles its search
        once per k (and pads query counts to powers of two), so requests of
        any k up to ``SEARCH_K`` share compiled functions, which ``warm_up``
        builds at start instead of during the first requests."""
        found = self.index.search(queries, self._search_k(k))
        return type(found)(found.ids[:, :k], found.scores[:, :k], found.labels[:, :k])

    def _search_k(self, k):
        return max(int(k), min(SEARCH_K, self.size))

    def warm_up(self, max_batch):
        """One search per padded query count up to ``max_batch``."""
        if not self.size:
            return
        # Any vector does (compiled shapes depend on the query count only);
        # not a gallery row: reading one would read all of a Milvus index.
        vector, n = np.full((1, self.dim), self.dim ** -0.5, np.float32), 1
        while True:
            self.search(np.repeat(vector, n, axis=0), 1)
            if n >= max_batch:
                break
            n *= 2

    def embed(self, blobs):
        """[N, D] embeddings of checked encoded images; one model call."""
        return self._embed(list(blobs))

    def process(self, items):
        """Batch worker: ``items`` of (kind, bytes, k) -> results in order."""
        blobs = [blob for _, blob, _ in items]
        try:
            emb = self.embed(blobs)
            failed = [None] * len(items)
        except Exception:  # noqa: BLE001  one bad image must not fail the others
            emb, failed = np.zeros((len(items), self.dim), np.float32), []
            for i, blob in enumerate(blobs):
                try:
                    emb[i] = self.embed([blob])[0]
                    failed.append(None)
                except Exception as e:  # noqa: BLE001
                    failed.append(ApiError(400, "not a readable image (truncated or corrupt "
                                                "JPEG/PNG data): "
                                                f"{str(e).splitlines()[0][:200]}"))
        results = list(failed)         # an ApiError where the image failed
        want = [i for i, (kind, _, _) in enumerate(items)
                if kind == "search" and failed[i] is None]
        if want:
            k = max(items[i][2] for i in want)
            found = self.search(emb[want], k)
            for row, i in enumerate(want):
                kk = items[i][2]
                results[i] = (found.ids[row, :kk], found.scores[row, :kk],
                              found.labels[row, :kk])
        for i, (kind, _, _) in enumerate(items):
            if kind == "embed" and failed[i] is None:
                results[i] = emb[i]
        return results


@functools.lru_cache(maxsize=1)
def _tiny_png():
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (128, 128, 128)).save(buf, format="PNG")
    return buf.getvalue()


def _read_threshold(index_dir):
    path = os.path.join(os.fspath(index_dir), THRESHOLD_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return float(json.load(f)["threshold"])


def write_threshold(index_dir, threshold):
    """Save a match threshold with the index (``serve`` uses it unless given
    ``--threshold``), e.g. ``kd.retrieval.calibrate``'s result."""
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite; got {threshold}.")
    path = os.path.join(os.fspath(index_dir), THRESHOLD_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump({"threshold": threshold}, f)
    os.replace(path + ".tmp", path)
    return path


def _parse_k(text, size, default):
    if text is None:
        return min(default, size)
    try:
        k = int(text)
    except (TypeError, ValueError):
        raise ApiError(422, f"k must be an integer in 1..{size}; got {text!r}.") from None
    if not 1 <= k <= size:
        raise ApiError(422, f"k must be an integer in 1..{size} (the index size); got {k}.")
    return k


async def _read_body(request, limit):
    """The request body, refused with 413 past ``limit`` bytes (checked on
    Content-Length first, then while streaming)."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > limit:
                raise ApiError(413, f"upload of {int(length):,} bytes is above the limit of "
                                    f"{limit:,} bytes.")
        except ValueError:
            raise ApiError(400, "bad Content-Length header.") from None
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(413, f"upload above the limit of {limit:,} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def _image_bytes(request, max_upload):
    """The uploaded image's bytes: multipart field "image" or the raw body."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        body = await _read_body(request, max_upload + _MULTIPART_SLACK)
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_part_size=max_upload + 1)
        except HTTPException as e:
            raise ApiError(400 if e.status_code != 413 else 413,
                           f"bad multipart body: {e.detail}") from None
        except Exception as e:  # noqa: BLE001  malformed multipart
            raise ApiError(400, f"bad multipart body: {e}") from None
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "multipart body without a file field 'image'.")
        data = await upload.read()
        await form.close()
        if len(data) > max_upload:
            raise ApiError(413, f"upload above the limit of {max_upload:,} bytes.")
        return data
    return await _read_body(request, max_upload)


def create_app(model_dir, index_dir, threshold=None, max_upload_bytes=DEFAULT_MAX_UPLOAD,
               max_pixels=DEFAULT_MAX_PIXELS, max_batch=32, batch_window_ms=5.0,
               default_k=8, check_fingerprint=True):
    """The ASGI app serving ``model_dir`` (an exported SavedModel with a
    ``serving_bytes`` signature) over ``index_dir`` (a ``kd.retrieval.Index``).

    Loads both now (errors are raised here, not at the first request): a
    model whose fingerprint or embedding width does not fit the index is
    refused (``ModelMismatchError``). See the module docstring for the
    endpoints; ``threshold`` turns on match / unknown; ``max_upload_bytes``
    (413 above), ``max_pixels`` (decompression bombs, 413 above),
    ``max_batch`` / ``batch_window_ms`` (request batching), ``default_k``
    (the page's and /search's k when none is given).
    """
    from starlette.concurrency import run_in_threadpool

    from keras_dml.serving import page
    searcher = Searcher(model_dir, index_dir, check_fingerprint=check_fingerprint)
    if threshold is None:
        threshold = _read_threshold(index_dir)
    threshold = None if threshold is None else float(threshold)
    searcher.warm_up(max_batch)
    batcher = Batcher(searcher.process, max_batch=max_batch,
                      window_s=batch_window_ms / 1000.0)
    size = searcher.size

    async def submit(kind, data, k=None):
        if data.startswith((_JPEG_MAGIC, _PNG_MAGIC)):
            blob = check_image(data, max_pixels)      # header only: no thread hop
        else:                                         # other formats are decoded here
            blob = await run_in_threadpool(check_image, data, max_pixels)
        return await asyncio.wrap_future(batcher.submit((kind, blob, k)))

    async def home(request):
        return HTMLResponse(page.render(size=size, k=min(default_k, size),
                                        threshold=threshold))

    async def healthz(request):
        return JSONResponse({"status": "ok", "items": size, "dim": searcher.dim,
                             "threshold": threshold, "model_calls": batcher.calls,
                             "embedded": batcher.items, "largest_batch": batcher.largest,
                             "max_batch": batcher.max_batch})

    async def search(request):
        k = _parse_k(request.query_params.get("k"), size, default_k)
        data = await _image_bytes(request, max_upload_bytes)
        ids, scores, labels = await submit("search", data, k)
        metadata = searcher.index.get_metadata(ids)
        results = []
        for i, s, lab, m in zip(ids.tolist(), scores.tolist(), labels.tolist(), metadata):
            r = {"id": int(i), "score": float(s), "label": int(lab), "metadata": m}
            if threshold is not None:
                r["match"] = bool(s >= threshold)
            results.append(r)
        out = {"results": results, "k": k}
        if threshold is not None:
            out["threshold"] = threshold
            out["unknown"] = not (results and results[0]["match"])
        return JSONResponse(out)

    async def embed(request):
        data = await _image_bytes(request, max_upload_bytes)
        vector = await submit("embed", data)
        return JSONResponse({"embedding": [float(v) for v in vector]})

    async def thumbnail(request):
        text = request.path_params["item_id"]
        try:
            item = int(text)
        except ValueError:
            raise ApiError(422, f"thumbnail id must be an integer; got {text!r}.") from None
        try:
            metadata = searcher.index.get_metadata([item])
        except (KeyError, ValueError):
            raise ApiError(404, f"no item {item} in the index.") from None
        png = await run_in_threadpool(_thumbnail_png, searcher.index_dir, metadata[0])
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": "max-age=3600"})

    async def api_error(request, exc):
        return _error(exc.status, exc.message)

    async def http_error(request, exc):
        messages = {404: f"no route {request.url.path!r}",
                    405: f"method {request.method} not allowed on {request.url.path!r}"}
        return _error(exc.status_code, messages.get(exc.status_code, str(exc.detail)))

    async def internal_error(request, exc):
        return _error(500, f"internal error: {type(exc).__name__}")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()

    app = Starlette(
        routes=[Route("/", home), Route("/healthz", healthz),
                Route("/search", search, methods=["POST"]),
                Route("/embed", embed, methods=["POST"]),
                Route("/thumbnail/{item_id}", thumbnail)],
        exception_handlers={ApiError: api_error, HTTPException: http_error,
                            Exception: internal_error},
        lifespan=lifespan)
    app.state.searcher, app.state.batcher, app.state.threshold = searcher, batcher, threshold
    return app


def _thumbnail_png(index_dir, metadata):
    from PIL import Image

    from keras_dml.training import gallery
    images, _ = gallery.images(index_dir, [metadata])
    image = Image.fromarray(np.asarray(images[0]).squeeze() if images[0].shape[-1] == 1
                            else np.asarray(images[0]))
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
