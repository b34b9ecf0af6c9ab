"""Speed, memory and recall of kd.retrieval.Index backends.

For N = 100k and 1M vectors of 128-d (clustered synthetic data: 1000
centres, points = centre + a 32-d latent offset + small isotropic noise, L2
normalised, cosine; or real embeddings with --embeddings), each
configuration is built in a fresh subprocess and measured:

  build s      Index.add (faiss: + IVF/PQ training on a sample, HNSW graph)
               plus the first search (exact: preparing the TF gallery)
  index MB     resident memory after building minus before (the Index keeps
               the raw float32 vectors, N * 128 * 4 bytes = 512 MB at 1M, in
               every backend, plus the backend's own copy)
  batch q/s    one search of 1000 queries, k = 10, after a warm-up search
               (best of 3: other processes share the 2 cores, and faiss's
               OpenMP threads suffer most from that)
  single q/s   searches of one query each (200, or as many as fit in 10 s)
  recall@10    mean |top-10 ∩ exact top-10| / 10, against the exact backend

Configurations: exact-TF (kd.search's engine), faiss Flat (exact
brute force), IVF (nlist 1024 at 100k, 4096 at 1M; nprobe 16, 64, 128),
HNSW32 (efSearch 32 to 256). The data is hard on purpose (overlapping
clusters with a 32-d intrinsic spread): with well separated clusters every
ANN index reaches recall 1.0 and the comparison says nothing. The goals on a 2-core machine: exact-TF batch >= faiss Flat
batch; an ANN configuration with recall@10 >= 0.95 at >= 10x exact-TF's
batch q/s at 1M.

    python bench/index.py --quick                       # 100k only (about a minute or two)
    python bench/index.py                               # 100k and 1M (many minutes)
    python bench/index.py --embeddings demo_emb.npy     # also real embeddings (.npy [N, D],
                                                        # or .npz with "embeddings", e.g.
                                                        # an index's DIR/index/embeddings.npy)
    python bench/index.py --sizes= --embeddings demo_emb.npy   # real embeddings only
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_QUERIES = 1000
NUM_SINGLE = 200
K = 10


def synthetic(n, dim=128, centres=1000, latent=32, seed=0):
    """(gallery [n, dim], queries [NUM_QUERIES, dim]), L2-normalised, from
    one generator so that the queries come from the same distribution."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)).astype(np.float32)
    w = rng.standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
    total = n + NUM_QUERIES
    out = np.empty((total, dim), np.float32)
    for i in range(0, total, 100_000):
        m = min(100_000, total - i)
        x = c[rng.integers(0, centres, m)]
        x += 1.0 * rng.standard_normal((m, latent), dtype=np.float32) @ w
        x += 0.1 * rng.standard_normal((m, dim), dtype=np.float32)
        out[i:i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out[:n], out[n:]


def real(path, seed=0):
    data = np.load(path)
    x = data["embeddings"] if isinstance(data, np.lib.npyio.NpzFile) else data
    x = np.asarray(x, np.float32)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    nq = min(NUM_QUERIES, len(x) // 10)
    return x[order[nq:]], x[order[:nq]]


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def configs(n):
    """(name, Index kwargs, search-parameter sweep): each built once."""
    # ~4 sqrt(N) lists, a power of two: 1024 at 100k, 4096 at 1M.
    nlist = int(2 ** np.clip(np.round(np.log2(4 * np.sqrt(max(n, 1)))), 4, 16))
    return [
        ("exact-TF", {}, [{}]),
        ("faiss Flat", {"backend": "faiss", "faiss_factory": "Flat"}, [{}]),
        (f"faiss IVF{nlist},Flat", {"backend": "faiss",
                                     "faiss_factory": f"IVF{nlist},Flat"},
         [{"nprobe": p} for p in (16, 64, 128)]),
        ("faiss HNSW32", {"backend": "faiss", "faiss_factory": "HNSW32"},
         [{"ef_search": e} for e in (32, 64, 128, 256)]),
    ]


def _name(base, sweep):
    return base + "".join(f" {k.replace('ef_search', 'efSearch')}={v}"
                          for k, v in sweep.items())


def run_one(spec):
    """In a subprocess: build one configuration, measure every search
    setting of its sweep, return a list of dicts."""
    sys.path.insert(0, ROOT)
    import keras_dml as kd
    if spec["data"] == "synthetic":
        gallery, queries = synthetic(spec["n"])
    else:
        gallery, queries = real(spec["data"])
    kd.retrieval.Index(4).add(np.eye(4, dtype=np.float32))   # import TF
    before = rss_mb()
    t = time.perf_counter()
    index = kd.retrieval.Index(gallery.shape[1], **spec["params"])
    index.add(gallery)
    index.search(queries[:1], K)
    build = time.perf_counter() - t
    memory = rss_mb() - before
    out = []
    for i, sweep in enumerate(spec["sweep"]):
        if sweep:
            index.set_search_params(**sweep)
        index.search(queries[:64], K)                        # warm-up
        batch = 0.0
        for _ in range(3):         # best of 3: the machine is shared
            t = time.perf_counter()
            ids = index.search(queries, K).ids
            batch = max(batch, len(queries) / (time.perf_counter() - t))
        t = time.perf_counter()
        done = 0
        while done < NUM_SINGLE and (done < 10 or time.perf_counter() - t < 10):
            index.search(queries[done:done + 1], K)
            done += 1
        single = done / (time.perf_counter() - t)
        np.save(spec["ids_out"] + f".{i}.npy", ids)
        out.append({"build": build, "memory": memory, "batch": batch,
                    "single": single})
    return out


def bench(data, n, workdir, label):
    rows = []
    truth = None
    if n is None:                 # real embeddings: the gallery's size
        data_file = np.load(data, mmap_mode="r")
        x = data_file["embeddings"] if isinstance(data_file, np.lib.npyio.NpzFile) else data_file
        n = len(x) - min(NUM_QUERIES, len(x) // 10)
    for name, params, sweep in configs(n):
        spec = {"data": data, "n": n, "params": params, "sweep": sweep,
                "ids_out": os.path.join(workdir, "ids")}
        proc = subprocess.run([sys.executable, __file__, "--run", json.dumps(spec)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        results = json.loads(proc.stdout.strip().splitlines()[-1])
        for i, (setting, result) in enumerate(zip(sweep, results)):
            ids = np.load(spec["ids_out"] + f".{i}.npy")
            if truth is None:
                truth = ids                   # the exact backend comes first
            result["recall"] = float(np.mean(
                [len(np.intersect1d(a, b)) for a, b in zip(ids, truth)]) / K)
            rows.append((label, _name(name, setting), result))
            print(f"  {label} {_name(name, setting)}: {result}", file=sys.stderr,
                  flush=True)
    return rows


def table(rows):
    lines = ["| data | index | build s | index MB | batch q/s | single q/s | recall@10 | batch speed-up vs exact-TF |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    exact = {label: r["batch"] for label, name, r in rows if name == "exact-TF"}
    for label, name, r in rows:
        lines.append(f"| {label} | {name} | {r['build']:.1f} | {r['memory']:.0f} | "
                     f"{r['batch']:.0f} | {r['single']:.0f} | {r['recall']:.3f} | "
                     f"{r['batch'] / exact[label]:.1f}x |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k only")
    parser.add_argument("--sizes", default="100000,1000000",
                        help="synthetic gallery sizes, comma-separated ('' for none)")
    parser.add_argument("--embeddings", help="real embeddings (.npy or .npz)")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_one(json.loads(args.run))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        sizes = [int(v) for v in args.sizes.split(",") if v.strip()]
        for n in ((100_000,) if args.quick else sizes):
            rows += bench("synthetic", n, workdir, f"synthetic {n // 1000}k x 128")
        if args.embeddings:
            rows += bench(args.embeddings, None, workdir,
                          os.path.basename(args.embeddings))
    print(f"{os.cpu_count()} CPUs, k = {K}, {NUM_QUERIES} batch queries, "
          f"{NUM_SINGLE} single queries\n")
    print(table(rows))


if __name__ == "__main__":
    main()
