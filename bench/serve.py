"""Bounded load test of `keras-dml serve` on 127.0.0.1, beside in-process throughput.

Starts ``keras-dml serve`` on a free 127.0.0.1 port (the model and index
given, or a tiny model and gallery made here) and, for each concurrency C
(default 1, 8, 32), sends a fixed number of ``POST /search?k=K`` requests
(raw image bytes, the query images drawn round-robin from the gallery's
files) from C client threads, each with its own keep-alive connection,
stopping early at a time limit. Printed per C: requests done, q/s (done /
wall time), p50 / p99 latency and errors (non-200 answers, exceptions,
requests left undone at the time limit). Then the same model's
in-process throughput: the SavedModel's bytes signature on batches of
``--max_batch`` encoded images followed by one ``Index.search`` per batch
(the work the server's batching worker does per batch, without HTTP, the
upload checks or JSON), measured before and after the load test (the
better of the two: other processes may share the cores), and the mean
batch the server's counters show per row.

Target: 0 errors, and q/s at C=32 at least 80% of in-process.

    python bench/serve.py                                        # tiny model (seconds)
    python bench/serve.py --model runs/own/saved_model --index runs/gallery_index
    python bench/serve.py --requests 400 --time_limit 120 --concurrency 1,8,32,64
"""

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_pair(base):
    """A small_cnn model (64 px, 64-d) and a 200-image gallery index."""
    import io

    import keras
    from PIL import Image

    import keras_dml as kd
    from keras_dml.cli import index as cli_index
    rng = np.random.default_rng(0)
    gallery = os.path.join(base, "gallery")
    for c in range(10):
        os.makedirs(os.path.join(gallery, f"class_{c}"))
        for i in range(20):
            img = np.clip(rng.normal(25 * c, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            with open(os.path.join(gallery, f"class_{c}", f"{i}.png"), "wb") as f:
                f.write(buf.getvalue())
    keras.utils.set_random_seed(0)
    model = kd.models.build_embedder(kd.backbones.get("small_cnn", input_shape=(64, 64, 3)),
                                     embedding_dim=64)
    model_dir = kd.export.export_saved_model(model, os.path.join(base, "saved_model"),
                                             image_shape=(64, 64, 3))
    index_dir = os.path.join(base, "index")
    cli_index.build(cli_index.parser().parse_args(
        ["--model", model_dir, "--images", gallery, "--index", index_dir, "--verbose", "0"]))
    return model_dir, index_dir


def query_images(index_dir, count):
    from keras_dml import retrieval
    paths = [m["path"] for m in retrieval.Index.load(index_dir).metadata
             if isinstance(m, dict) and m.get("path")]
    if not paths:
        raise SystemExit(f"{index_dir}: no item has a file path to use as a query.")
    picked = paths[:: max(1, len(paths) // count)][:count]
    out = []
    for p in picked:
        with open(p, "rb") as f:
            out.append(f.read())
    return out


def start_server(model, index, port, extra):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-m", "keras_dml", "serve", f"--model={model}",
                             f"--index={index}", f"--port={port}", "--log_level=warning",
                             *extra], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"keras-dml serve exited with {proc.returncode}")
        try:
            return proc, health(port)
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("keras-dml serve did not start")


def health(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/healthz")
    body = json.loads(c.getresponse().read())
    c.close()
    return body


def load(port, images, concurrency, requests_total, time_limit, k):
    """(done, wall s, latencies s, errors)."""
    lock = threading.Lock()
    state = {"next": 0}
    latencies, errors = [], [0]
    deadline = time.monotonic() + time_limit

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                i = state["next"]
                if i >= requests_total or time.monotonic() > deadline:
                    break
                state["next"] += 1
            body = images[i % len(images)]
            t = time.perf_counter()
            try:
                conn.request("POST", f"/search?k={k}", body=body,
                             headers={"Content-Type": "application/octet-stream"})
                resp = conn.getresponse()
                data = resp.read()
                ok = resp.status == 200 and b'"results"' in data
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            dt = time.perf_counter() - t
            with lock:
                if ok:
                    latencies.append(dt)
                else:
                    errors[0] += 1
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    undone = requests_total - state["next"]
    return len(latencies), wall, np.asarray(latencies), errors[0] + undone


_LOADED = {}


def in_process(model, index, images, batch, k, seconds):
    """Batched embed + search q/s of the same model and index, no HTTP."""
    from keras_dml import retrieval
    from keras_dml.cli.search import embedding_function
    if (model, index) not in _LOADED:
        _LOADED[model, index] = embedding_function(model), retrieval.Index.load(index)
    embed, idx = _LOADED[model, index]
    batches = [[images[(i + j) % len(images)] for j in range(batch)]
               for i in range(0, len(images), batch)]
    idx.search(embed(batches[0]), k)                  # warm-up
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or done == 0:
        for b in batches:
            idx.search(embed(b), k)
            done += len(b)
    return done / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--index", default=None)
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--requests", type=int, default=200, help="Requests per concurrency.")
    p.add_argument("--time_limit", type=float, default=60.0,
                   help="Seconds per concurrency before stopping (undone = errors).")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--queries", type=int, default=64, help="Distinct query images.")
    p.add_argument("--max_batch", type=int, default=32)
    p.add_argument("--batch_window_ms", type=float, default=5.0)
    p.add_argument("--in_process_seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_dml.cli import quiet
    quiet.after_flags(0)
    tmp = None
    if (args.model is None) != (args.index is None):
        raise SystemExit("give both --model and --index, or neither (a tiny pair is made).")
    if args.model is None:
        tmp = tempfile.TemporaryDirectory(prefix="kd_bench_serve_")
        args.model, args.index = tiny_pair(tmp.name)
    images = query_images(args.index, args.queries)
    # In-process throughput before and after the load test (best of the two:
    # other processes share this machine's cores).
    base = in_process(args.model, args.index, images, args.max_batch, args.k,
                      args.in_process_seconds)
    port = free_port()
    proc, h = start_server(args.model, args.index, port,
                           [f"--max_batch={args.max_batch}",
                            f"--batch_window_ms={args.batch_window_ms}"])
    rows = []
    try:
        # Warm-up: first requests trace nothing new, but fill caches.
        load(port, images, 4, 16, 30, args.k)
        for c in [int(x) for x in args.concurrency.split(",")]:
            before = health(port)
            done, wall, lat, errors = load(port, images, c, args.requests, args.time_limit,
                                           args.k)
            after = health(port)
            calls = after["model_calls"] - before["model_calls"]
            rows.append((c, done, done / wall,
                         1000 * np.percentile(lat, 50) if done else float("nan"),
                         1000 * np.percentile(lat, 99) if done else float("nan"), errors,
                         (after["embedded"] - before["embedded"]) / max(calls, 1)))
    finally:
        proc.terminate()
        proc.wait(30)
    base = max(base, in_process(args.model, args.index, images, args.max_batch, args.k,
                                args.in_process_seconds))
    print(f"model {args.model}, index {args.index} ({h['items']} items, {h['dim']}-d), "
          f"k={args.k}, {args.requests} requests per row, time limit {args.time_limit:.0f} s, "
          f"batching: max {args.max_batch}, window {args.batch_window_ms:g} ms")
    print(f"{'concurrency':>11} {'done':>6} {'q/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'errors':>6} {'mean batch':>10} {'% in-process':>12}")
    for c, done, qps, p50, p99, errors, mean_batch in rows:
        print(f"{c:>11} {done:>6} {qps:>8.1f} {p50:>8.1f} {p99:>8.1f} {errors:>6} "
              f"{mean_batch:>10.1f} {100 * qps / base:>11.0f}%")
    print(f"{'in-process':>11} {'':>6} {base:>8.1f}   (embed + search, batches of "
          f"{args.max_batch}, no HTTP)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
