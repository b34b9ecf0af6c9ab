"""Accelerator benchmark under JAX or PyTorch; imports no TensorFlow.

    KERAS_BACKEND=jax   python bench/device.py             # the papers' sizes
    KERAS_BACKEND=torch python bench/device.py --dtype=float32
    KERAS_BACKEND=jax   python bench/device.py --quick     # small sizes, CPU, 1-2 min

The backend is Keras' own switch, the environment variable KERAS_BACKEND
(jax or torch; TensorFlow has bench/losses.py and bench/train_step.py). The
device is the backend's default: the first GPU if there is one, else the CPU.
Synthetic data throughout. Rows:

  Proxy Anchor   kd.losses.ProxyAnchorLoss on cosines to proxies, forward +
                 backward (gradients w.r.t. embeddings and proxies), B=180,
                 D=512, C=100 (CUB-200) and C=11,318 (SOP);
  Log-ratio      kd.losses.LogRatioLoss (dense triplets, squared L2 label
                 distance of synthetic continuous labels [B, 8]), forward +
                 backward w.r.t. the embeddings, B=256 and 1024, D=512;
  train step     keras.applications.ResNet50(weights=None) at 224 px, batch
                 180 -> kd.layers.EmbeddingHead(512) -> kd.layers.Proxies(100)
                 -> ProxyAnchorLoss, AdamW, ``model.train_on_batch``: images/s;
  PML            pytorch-metric-learning's ProxyAnchorLoss at the Proxy Anchor
                 sizes, on torch's device (whatever the Keras backend), eager.

and bench/peers.py's rows at its sizes, each side on its device: multi-
similarity (keras_dml and PML's miner + loss, B=180, D=512), the authors'
per-anchor Log-ratio formula in torch (B=128 and 256, D=128; keras_dml's
Log-ratio rows include those sizes), Recall@1/2/4/8 self-retrieval
(kd.evaluation.retrieval_metrics, 40k x 256 and 60k x 512), exact index
search (kd.retrieval.Index, 100k and 1M x 128, 1000 queries, k=10:
queries/s) and the PyTorch + PML ResNet-50 train step (peers.py's network,
at this script's train-step size). faiss has no GPU build here: compare
the index rows with peers.py's faiss figures.

Under JAX every step is ``jax.jit``-compiled (the train step too: Keras
jit-compiles it under JAX). Under PyTorch the steps run eagerly, Keras'
default for torch; ``--torch_compile`` compiles the keras_dml loss rows with
``torch.compile`` (on 2 CPU cores it compiled for minutes and ran slower than
eager, so it is not the default). The backend cell says which.

``--dtype``: the embeddings' and proxies' dtype (the train step runs under the
``mixed_bfloat16`` policy); the Keras losses compute in their own dtype,
float32, as in ``model.fit`` under mixed precision. "auto" is bfloat16 on a
GPU/TPU that supports it and float32 on the CPU.

Columns: ms/step is the median of --repeats steps after --warmup steps (the
first of which compiles), each step synchronised (``block_until_ready`` /
``torch.cuda.synchronize``). Peak memory: JAX's ``memory_stats()
["peak_bytes_in_use"]`` (the process's peak so far: JAX cannot reset it, so
rows run smallest first) and ``torch.cuda.max_memory_allocated`` (reset per
row); "n/a" where the device reports none (the CPU).

A row that cannot run prints "n/a: <reason>" in its cells; ``--strict`` then
exits 1. The script exits 1 too if anything imported TensorFlow.
"""

import argparse
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

BACKENDS = ("jax", "torch")

# The checkout this file is in, before any installed keras_dml.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# JAX would take 75% of the GPU at start-up, leaving little to torch (PML rows)
# and making its peak-memory figure the pool size.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# (B, D, C) / (B, D) / (B, image size, C) per mode.
# The peers rows (multi_similarity ... peer_train_step) are bench/peers.py's
# at its sizes ("full" = peers.py's full sizes): the keras_dml side on the
# backend's device, the peer in torch on torch's device (faiss: the CPU).
SIZES = {
    "full": dict(proxy=[(180, 512, 100), (180, 512, 11318)],
                 log_ratio=[(128, 128), (256, 128), (256, 512), (1024, 512)],
                 multi_similarity=[(180, 512)],
                 authors_log_ratio=[(128, 128), (256, 128)],
                 retrieval=[(40_000, 256), (60_000, 512)],
                 index=[(100_000, 1000), (1_000_000, 1000)],
                 train=(180, 224, 100), warmup=3, repeats=30, train_repeats=10),
    "quick": dict(proxy=[(60, 128, 100), (60, 128, 2000)],
                  log_ratio=[(64, 128), (256, 128)],
                  multi_similarity=[(60, 128)],
                  authors_log_ratio=[(64, 128)],
                  retrieval=[(5_000, 256)],
                  index=[(50_000, 500)],
                  train=(4, 64, 10), warmup=2, repeats=10, train_repeats=3),
    "smoke": dict(proxy=[(8, 16, 4), (8, 16, 50)],
                  log_ratio=[(8, 16), (16, 16)],
                  multi_similarity=[(12, 16)],
                  authors_log_ratio=[(8, 16)],
                  retrieval=[(300, 16)],
                  index=[(2_000, 20)],
                  train=(2, 32, 4), warmup=1, repeats=2, train_repeats=1),
}
ALL_ROWS = ("proxy_anchor", "log_ratio", "train_step", "pml", "multi_similarity",
            "authors_log_ratio", "retrieval", "index", "peer_train_step")
LABEL_DIM = 8   # synthetic continuous labels of the Log-ratio rows


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="small sizes (CPU, one to two minutes)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes, one timed step (the tests; implies --quick)")
    p.add_argument("--dtype", default="auto",
                   choices=("auto", "float32", "bfloat16"))
    p.add_argument("--rows", default=",".join(ALL_ROWS),
                   help="comma-separated subset of " + ", ".join(ALL_ROWS))
    p.add_argument("--warmup", type=int, help="steps before timing")
    p.add_argument("--repeats", type=int,
                   help="timed steps (median), the train step's too")
    p.add_argument("--torch_compile", action="store_true",
                   help="torch.compile the keras_dml loss steps under PyTorch "
                        "(default eager: on 2 CPU cores compiling took minutes "
                        "and the compiled steps were slower)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 if any row could not run")
    args = p.parse_args(argv)
    args.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    sizes = SIZES[args.mode]
    args.warmup = sizes["warmup"] if args.warmup is None else args.warmup
    args.train_repeats = (sizes["train_repeats"] if args.repeats is None
                          else args.repeats)
    args.repeats = sizes["repeats"] if args.repeats is None else args.repeats
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = set(args.rows) - set(ALL_ROWS)
    if unknown:
        p.error(f"unknown --rows {sorted(unknown)}")
    return args


# --- the backends: device, dtype, value-and-grad, sync, memory ---------------

class JaxBackend:
    name = "jax"

    def __init__(self):
        import jax
        self.jax = jax
        self.device = jax.devices()[0]
        self.accelerator = self.device.platform != "cpu"
        self.mode = "jit"

    def describe(self):
        if not self.accelerator:
            return "cpu"
        return f"{self.device.platform}: {self.device.device_kind}"

    def supports_bf16(self):
        return True      # XLA emulates bf16 where the hardware lacks it

    def value_and_grad(self, fn, n_diff):
        """``step(*args) -> (fn(*args), grads of the first n_diff args)``."""
        return self.jax.jit(self.jax.value_and_grad(fn, argnums=tuple(range(n_diff))))

    def sync(self, out):
        self.jax.block_until_ready(out)

    def reset_peak(self):
        pass             # JAX has no reset: the figure is the process's peak

    def peak_bytes(self):
        stats = self.device.memory_stats() or {}
        return stats.get("peak_bytes_in_use")


class TorchBackend:
    name = "torch"

    def __init__(self, compile_steps=False):
        import torch
        self.torch = torch
        self.accelerator = torch.cuda.is_available()
        self.mode = "compile" if compile_steps else "eager"

    def describe(self):
        if not self.accelerator:
            return "cpu"
        return f"cuda: {self.torch.cuda.get_device_name(0)}"

    def supports_bf16(self):
        return not self.accelerator or self.torch.cuda.is_bf16_supported()

    def value_and_grad(self, fn, n_diff):
        torch = self.torch
        if self.mode == "compile":
            torch._dynamo.reset()   # each size compiled for its static shapes
            forward = torch.compile(fn, dynamic=False)
        else:
            forward = fn

        def step(*args):
            diff = [a.detach().requires_grad_(True) for a in args[:n_diff]]
            value = forward(*diff, *args[n_diff:])
            return value.detach(), torch.autograd.grad(value, diff)
        return step

    def sync(self, out):
        del out
        if self.accelerator:
            self.torch.cuda.synchronize()

    def reset_peak(self):
        if self.accelerator:
            self.torch.cuda.reset_peak_memory_stats()

    def peak_bytes(self):
        return self.torch.cuda.max_memory_allocated() if self.accelerator else None


# --- timing and the table ----------------------------------------------------

def median_ms(step, sync, warmup, repeats):
    for _ in range(warmup):
        sync(step())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(step())
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def mib(nbytes):
    return "n/a" if nbytes is None else f"{nbytes / 2**20:,.0f} MiB"


class Table:
    HEADER = ("row", "backend", "device", "dtype", "size", "ms/step",
              "images/s or steps/s", "peak memory")

    def __init__(self):
        self.rows, self.failed = [], []

    def add(self, row, backend, device, dtype, size, ms=None, per_s=None,
            peak="n/a", error=None):
        if error is not None:
            reason = f"n/a: {type(error).__name__}: {error}".splitlines()[0][:160]
            reason = reason.replace("|", "/")
            self.failed.append(row)
            self.rows.append((row, backend, device, dtype, size, reason, "n/a", "n/a"))
        else:
            self.rows.append((row, backend, device, dtype, size,
                              f"{ms:.3f}" if ms < 1 else f"{ms:.2f}",
                              per_s, peak))

    def markdown(self):
        lines = ["| " + " | ".join(self.HEADER) + " |",
                 "|" + "|".join("---" for _ in self.HEADER) + "|"]
        lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in self.rows]
        return "\n".join(lines)


def run_row(table, name, backend_label, device, dtype, size, measure, peak_of,
            images=None, queries=None):
    """``measure()`` -> ms; the row's cells, or its n/a reason."""
    try:
        ms = measure()
    except Exception as e:  # noqa: BLE001 (a row that cannot run says why)
        if os.environ.get("BENCH_DEVICE_TRACEBACK"):
            traceback.print_exc()
        table.add(name, backend_label, device, dtype, size, error=e)
        return
    per_s = (f"{images * 1e3 / ms:,.1f} images/s" if images
             else f"{queries * 1e3 / ms:,.1f} queries/s" if queries
             else f"{1e3 / ms:,.1f} steps/s")
    table.add(name, backend_label, device, dtype, size, ms, per_s, mib(peak_of()))


# --- the rows ----------------------------------------------------------------

def proxy_anchor_rows(table, be, args, dtype, rng):
    import keras

    import keras_dml as kd
    loss = kd.losses.ProxyAnchorLoss()

    def fn(emb, proxies, labels):
        return loss(labels, kd.ops.cosine_similarity(emb, proxies))

    for b, d, c in SIZES[args.mode]["proxy"]:
        def measure(b=b, d=d, c=c):
            emb = keras.ops.convert_to_tensor(rng.standard_normal((b, d)), dtype)
            proxies = keras.ops.convert_to_tensor(rng.standard_normal((c, d)), dtype)
            labels = keras.ops.convert_to_tensor(rng.integers(0, c, b), "int32")
            step = be.value_and_grad(fn, 2)
            be.reset_peak()
            return median_ms(lambda: step(emb, proxies, labels), be.sync,
                             args.warmup, args.repeats)
        run_row(table, "Proxy Anchor fwd+bwd (keras_dml)", f"{be.name} ({be.mode})",
                be.describe(), dtype, f"B={b} D={d} C={c:,}", measure, be.peak_bytes)


def log_ratio_rows(table, be, args, dtype, rng):
    import keras

    import keras_dml as kd
    loss = kd.losses.LogRatioLoss()

    def fn(emb, labels):
        return loss(labels, emb)

    for b, d in SIZES[args.mode]["log_ratio"]:
        def measure(b=b, d=d):
            emb = keras.ops.convert_to_tensor(rng.standard_normal((b, d)), dtype)
            labels = keras.ops.convert_to_tensor(
                rng.uniform(size=(b, LABEL_DIM)), "float32")
            step = be.value_and_grad(fn, 1)
            be.reset_peak()
            return median_ms(lambda: step(emb, labels), be.sync,
                             args.warmup, args.repeats)
        run_row(table, "Log-ratio fwd+bwd (keras_dml)", f"{be.name} ({be.mode})",
                be.describe(), dtype, f"B={b:,} D={d}", measure, be.peak_bytes)


def train_step_row(table, be, args, dtype, rng):
    import keras

    import keras_dml as kd
    b, size, c = SIZES[args.mode]["train"]

    def measure():
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(
            "mixed_bfloat16" if dtype == "bfloat16" else "float32")
        try:
            inputs = keras.Input((size, size, 3))
            backbone = keras.applications.ResNet50(
                weights=None, include_top=False, input_shape=(size, size, 3))
            emb = kd.layers.EmbeddingHead(512)(backbone(inputs))
            model = keras.Model(inputs, kd.layers.Proxies(c)(emb))
        finally:
            keras.config.set_dtype_policy(previous)
        model.compile(optimizer=keras.optimizers.AdamW(1e-4),
                      loss=kd.losses.ProxyAnchorLoss())
        # On the device once: the timed steps move no images from the host.
        x = keras.ops.convert_to_tensor(
            rng.uniform(size=(b, size, size, 3)).astype("float32"))
        y = keras.ops.convert_to_tensor(rng.integers(0, c, b).astype("int32"))
        be.reset_peak()
        # train_on_batch returns the loss as a Python float: a sync per step.
        return median_ms(lambda: model.train_on_batch(x, y), lambda out: None,
                         args.warmup, args.train_repeats)

    label = f"{be.name} ({'jit' if be.name == 'jax' else 'eager'})"
    run_row(table, "ResNet-50 + EmbeddingHead + Proxies + Proxy Anchor train step",
            label, be.describe(), dtype, f"B={b} {size}px C={c}", measure,
            be.peak_bytes, images=b)


def pml_rows(table, args, dtype, rng):
    """pytorch-metric-learning's ProxyAnchorLoss, eager, on torch's device."""
    try:
        import torch
        from pytorch_metric_learning import losses as pml_losses
    except ImportError as e:
        for b, d, c in SIZES[args.mode]["proxy"]:
            table.add("Proxy Anchor fwd+bwd (pytorch-metric-learning)", "torch (eager)",
                      "n/a", dtype, f"B={b} D={d} C={c:,}", error=e)
        return
    tb = TorchBackend()
    device = "cuda" if tb.accelerator else "cpu"
    tdtype = getattr(torch, dtype)
    for b, d, c in SIZES[args.mode]["proxy"]:
        def measure(b=b, d=d, c=c):
            loss = pml_losses.ProxyAnchorLoss(c, d, margin=0.1, alpha=32).to(device)
            emb = torch.tensor(rng.standard_normal((b, d)), dtype=tdtype, device=device)
            labels = torch.tensor(rng.integers(0, c, b), device=device)

            def step():
                e = emb.detach().requires_grad_(True)
                value = loss(e, labels)
                return value, torch.autograd.grad(value, [e, loss.proxies])
            tb.reset_peak()
            return median_ms(step, tb.sync, args.warmup, args.repeats)
        run_row(table, "Proxy Anchor fwd+bwd (pytorch-metric-learning)",
                "torch (eager)", tb.describe(), dtype, f"B={b} D={d} C={c:,}",
                measure, tb.peak_bytes)


# --- bench/peers.py's rows ----------------------------------------------------

def _peers():
    """bench/peers.py (its inputs and its torch / faiss peers; no TensorFlow)."""
    import importlib.util
    path = Path(__file__).resolve().parent / "peers.py"
    spec = importlib.util.spec_from_file_location("bench_peers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def multi_similarity_rows(table, be, args, dtype, rng):
    import keras

    import keras_dml as kd
    peers = _peers()
    loss = kd.losses.MultiSimilarityLoss()
    for b, d in SIZES[args.mode]["multi_similarity"]:
        def measure(b=b, d=d):
            emb, labels = peers.ms_inputs(b, d)
            e = keras.ops.convert_to_tensor(emb, dtype)
            y = keras.ops.convert_to_tensor(labels.astype("int32"))
            step = be.value_and_grad(lambda e, y: loss(y, e), 1)
            be.reset_peak()
            return median_ms(lambda: step(e, y), be.sync, args.warmup, args.repeats)
        run_row(table, "multi-similarity fwd+bwd (keras_dml)", f"{be.name} ({be.mode})",
                be.describe(), dtype, f"B={b} D={d}", measure, be.peak_bytes)


def retrieval_rows(table, be, args, rng):
    import keras_dml as kd
    peers = _peers()
    for n, d in SIZES[args.mode]["retrieval"]:
        def measure(n=n, d=d):
            x, labels = peers.retrieval_inputs(n, d)
            run = lambda: kd.evaluation.retrieval_metrics(  # noqa: E731
                x, labels, ks=peers.RETRIEVAL_KS, metrics=("recall",))
            be.reset_peak()
            return median_ms(run, lambda out: None, 1, min(args.repeats, 3))
        run_row(table, "Recall@1/2/4/8 self-retrieval (keras_dml)", f"{be.name} ({be.mode})",
                be.describe(), "float32", f"{n:,} x {d}", measure, be.peak_bytes)


def index_rows(table, be, args, rng):
    import keras_dml as kd
    peers = _peers()
    for n, nq in SIZES[args.mode]["index"]:
        def measure(n=n, nq=nq):
            gallery, queries = peers.index_inputs(n, nq)
            index = kd.retrieval.Index(peers.INDEX_DIM)
            index.add(gallery)
            be.reset_peak()
            return median_ms(lambda: index.search(queries, peers.INDEX_K),
                             lambda out: None, 1, min(args.repeats, 3))
        run_row(table, "exact index search, k=10 (keras_dml)", f"{be.name} ({be.mode})",
                be.describe(), "float32", f"{n:,} x 128", measure, be.peak_bytes,
                queries=nq)


def authors_log_ratio_rows(table, args, rng):
    """The authors' per-anchor Log-ratio formula (bench/peers.py), in torch
    on torch's device, fwd+bwd."""
    import torch
    peers = _peers()
    tb = TorchBackend()
    device = "cuda" if tb.accelerator else "cpu"
    for b, d in SIZES[args.mode]["authors_log_ratio"]:
        def measure(b=b, d=d):
            emb, labels = peers.log_ratio_inputs(b, d)
            y = torch.tensor(labels, device=device)
            label_dist = torch.sum((y[:, None, :] - y[None, :, :]) ** 2, -1)
            e = torch.tensor(emb, device=device)
            step = lambda: peers.torch_value_and_grads(  # noqa: E731
                lambda x: peers.authors_log_ratio(x, label_dist), [e])
            tb.reset_peak()
            return median_ms(step, tb.sync, args.warmup, args.repeats)
        run_row(table, "Log-ratio per anchor, the authors' formula (torch)",
                "torch (eager)", tb.describe(), "float32", f"B={b:,} D={d}",
                measure, tb.peak_bytes)


def pml_ms_rows(table, args, rng):
    import torch
    from pytorch_metric_learning import losses as pml_losses
    from pytorch_metric_learning import miners
    peers = _peers()
    tb = TorchBackend()
    device = "cuda" if tb.accelerator else "cpu"
    for b, d in SIZES[args.mode]["multi_similarity"]:
        def measure(b=b, d=d):
            emb, labels = peers.ms_inputs(b, d)
            loss = pml_losses.MultiSimilarityLoss(2, 50, 0.5)
            miner = miners.MultiSimilarityMiner(0.1)
            e = torch.tensor(emb, device=device)
            y = torch.tensor(labels, device=device)
            step = lambda: peers.torch_value_and_grads(  # noqa: E731
                lambda x: loss(x, y, miner(x, y)), [e])
            tb.reset_peak()
            return median_ms(step, tb.sync, args.warmup, args.repeats)
        run_row(table, "multi-similarity fwd+bwd (pytorch-metric-learning)",
                "torch (eager)", tb.describe(), "float32", f"B={b} D={d}",
                measure, tb.peak_bytes)


def peer_train_step_row(table, args, rng):
    """bench/peers.py's PyTorch + PML ResNet-50 train step, on torch's device."""
    import tempfile
    peers = _peers()
    tb = TorchBackend()
    device = "cuda" if tb.accelerator else "cpu"
    b, size, c = SIZES[args.mode]["train"]

    def measure():
        with tempfile.TemporaryDirectory() as tmp:
            tb.reset_peak()
            ms, _, _ = peers.peer_train_step(
                (b, size, c, args.train_repeats), args.warmup, args.train_repeats,
                os.path.join(tmp, "w.npz"), device=device, sync=lambda: tb.sync(None))
        return ms
    run_row(table, "ResNet-50 + Proxy Anchor train step (PyTorch + PML)",
            "torch (eager)", tb.describe(), "float32", f"B={b} {size}px C={c}",
            measure, tb.peak_bytes, images=b)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    backend = os.environ.get("KERAS_BACKEND")
    if backend not in BACKENDS:
        sys.exit(f"bench/device.py: set KERAS_BACKEND=jax or KERAS_BACKEND=torch "
                 f"(got {backend!r}); for TensorFlow see bench/losses.py and "
                 f"bench/train_step.py.")
    import numpy as np

    be = JaxBackend() if backend == "jax" else TorchBackend(args.torch_compile)
    if args.dtype == "auto":
        dtype = "bfloat16" if be.accelerator and be.supports_bf16() else "float32"
    else:
        dtype = args.dtype
        if dtype == "bfloat16" and not be.supports_bf16():
            sys.exit(f"bench/device.py: {be.describe()} does not support bfloat16.")
    import keras  # noqa: F401  (after KERAS_BACKEND is checked)
    try:
        import keras_dml  # noqa: F401
    except ImportError as e:
        sys.exit(f"bench/device.py: cannot import keras_dml under "
                 f"KERAS_BACKEND={backend}: {type(e).__name__}: {e}")

    rng = np.random.default_rng(0)
    table = Table()
    start = time.perf_counter()
    # Smallest first: JAX's peak-memory figure only grows.
    if "proxy_anchor" in args.rows:
        proxy_anchor_rows(table, be, args, dtype, rng)
    if "log_ratio" in args.rows:
        log_ratio_rows(table, be, args, dtype, rng)
    if "pml" in args.rows:
        pml_rows(table, args, dtype, rng)
    if "multi_similarity" in args.rows:
        multi_similarity_rows(table, be, args, dtype, rng)
        pml_ms_rows(table, args, rng)
    if "authors_log_ratio" in args.rows:
        authors_log_ratio_rows(table, args, rng)
    if "retrieval" in args.rows:
        retrieval_rows(table, be, args, rng)
    if "index" in args.rows:
        index_rows(table, be, args, rng)
    if "train_step" in args.rows:
        train_step_row(table, be, args, dtype, rng)
    if "peer_train_step" in args.rows:
        peer_train_step_row(table, args, rng)

    print(table.markdown())
    # (sys.modules["tensorflow"] = None is how a caller blocks the import.)
    tf_loaded = sys.modules.get("tensorflow") is not None
    print(f"\n{args.mode} sizes; median of {args.repeats} steps after {args.warmup} "
          f"(train step: {args.train_repeats}); {time.perf_counter() - start:.0f} s; "
          f"tensorflow imported: {'YES' if tf_loaded else 'no'}")
    if tf_loaded:
        print("bench/device.py: ERROR: TensorFlow was imported; this benchmark "
              "must run without it.", file=sys.stderr)
        return 1
    if args.strict and table.failed:
        print(f"bench/device.py: --strict: {len(table.failed)} row(s) could not run.",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
