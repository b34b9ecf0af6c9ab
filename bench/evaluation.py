"""Speed and peak memory of retrieval evaluation (Recall@K, MAP@R, R-precision).

Compares, on random clustered L2-normalised embeddings (D=512, ~5 items per
class like Stanford Online Products, self-retrieval, K = 1, 10, 100, 1000):

  ours   kd.evaluation.retrieval_metrics: chunked matmul + counting + top_k on TF
  faiss  faiss.IndexFlatIP exact search for the top max(K_max, max R) + 1,
         self removed by index, then the same metrics in numpy
  numpy  naive: the full N x N similarity matrix, row-wise argsort (only where
         the matrix fits under --naive-max-gb)

Each (method, N) runs in a fresh subprocess so that its peak resident memory
(ru_maxrss) is its own; "extra" is the peak minus the resident size after the
imports and the data were in memory. Time is one call after a small warm-up
(so tf.function tracing and faiss start-up are not counted). The metric values
are printed too: the three methods must agree.

    python bench/evaluation.py            # N = 10k, 40k, 60k (slow: minutes)
    python bench/evaluation.py --quick    # N = 500, 2000 (seconds)
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from harness import ChildFailed, mib, peak_rss_bytes, report, rss_bytes, run_child  # noqa: E402  (bench/, the script's directory)


def make_data(n, dim, per_class, seed=0):
    rng = np.random.default_rng(seed)
    num_classes = max(1, n // per_class)
    labels = np.sort(rng.integers(0, num_classes, n))
    centres = rng.standard_normal((num_classes, dim)).astype(np.float32)
    x = centres[labels] + 2.5 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def metrics_from_knn(knn_labels, labels, r, ks):
    """Recall@K, MAP@R, R-precision from [N, k] neighbour labels (self removed)."""
    has = r > 0
    same = knn_labels == labels[:, None]
    out = {f"recall@{k}": float(np.mean(np.any(same[has, :k], axis=1))) for k in ks}
    k = same.shape[1]
    rel = same & (np.arange(k)[None, :] < r[:, None])
    prec = np.cumsum(rel, axis=1) / np.arange(1, k + 1)[None, :]
    rr = np.maximum(r, 1)
    out["map@r"] = float(np.mean((np.sum(prec * rel, axis=1) / rr)[has]))
    out["r_precision"] = float(np.mean((np.sum(rel, axis=1) / rr)[has]))
    return out


def r_per_query(labels):
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return counts[inv.reshape(-1)] - 1


def run_ours(x, labels, ks):
    import keras_dml as kd
    return kd.evaluation.retrieval_metrics(
        x, labels, ks=ks, metrics=("recall", "map_at_r", "r_precision"))


def run_faiss(x, labels, ks):
    import faiss
    r = r_per_query(labels)
    k = max(max(ks), int(r.max())) + 1
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, idx = index.search(x, k)
    # Remove each query's own index (or the last column if it is absent).
    is_self = idx == np.arange(len(x))[:, None]
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    idx = idx[~is_self].reshape(len(x), k - 1)
    return metrics_from_knn(labels[idx], labels, r, ks)


def run_numpy(x, labels, ks):
    r = r_per_query(labels)
    k = max(max(ks), int(r.max()))
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    order = np.empty((len(x), k), np.int64)
    for start in range(0, len(x), 1024):      # argsort rows in blocks
        block = np.argsort(-sims[start:start + 1024], axis=1, kind="stable")
        order[start:start + 1024] = block[:, :k]
    return metrics_from_knn(labels[order], labels, r, ks)


METHODS = {"ours": run_ours, "faiss": run_faiss, "numpy": run_numpy}


def child(method, n, dim, per_class, ks):
    fn = METHODS[method]
    if method == "ours":
        import keras_dml  # noqa: F401  (import TF before the baseline)
        import keras_dml.evaluation  # noqa: F401
    elif method == "faiss":
        import faiss  # noqa: F401
    xw, yw = make_data(200, dim, per_class, seed=1)
    fn(xw, yw, ks=tuple(min(k, 50) for k in ks))                 # warm-up
    x, labels = make_data(n, dim, per_class)
    base = mib(rss_bytes())
    t0 = time.perf_counter()
    result = fn(x, labels, ks)
    seconds = time.perf_counter() - t0
    peak = mib(peak_rss_bytes())
    report({"seconds": seconds, "peak_mb": peak, "extra_mb": peak - base, "metrics": result})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny N only")
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--per-class", type=int, default=5)
    parser.add_argument("--ks", type=int, nargs="*", default=[1, 10, 100, 1000])
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--naive-max-gb", type=float, default=8.0,
                        help="skip the naive numpy method when its N x N "
                             "float32 matrix is larger than this")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "N"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    ks = tuple(args.ks)
    if args.child:
        child(args.child[0], int(args.child[1]), args.dim, args.per_class, ks)
        return
    sizes = args.sizes or ([500, 2000] if args.quick else [10_000, 40_000, 60_000])
    if args.quick:
        ks = tuple(k for k in ks if k < min(sizes)) or (1,)
    print(f"retrieval metrics, D={args.dim}, ~{args.per_class} items/class, "
          f"K={ks}, self-retrieval, {os.cpu_count()} CPU(s)")
    header = (f"{'N':>7} {'method':>6} {'time s':>8} {'peak MB':>8} "
              f"{'extra MB':>8}  {'R@1':>7} {'R@' + str(ks[-1]):>7} "
              f"{'MAP@R':>7} {'R-prec':>7}")
    print(header)
    print("-" * len(header))
    for n in sizes:
        for method in args.methods:
            if method == "numpy" and n * n * 4 / 1024 ** 3 > args.naive_max_gb:
                print(f"{n:>7} {method:>6} {'skipped: N x N matrix > ' + str(args.naive_max_gb) + ' GB':>40}")
                continue
            try:
                res = run_child(__file__, ["--child", method, n, "--dim", args.dim,
                                           "--per-class", args.per_class, "--ks", *ks],
                                stderr_tail=300)
            except ChildFailed as failed:
                print(f"{n:>7} {method:>6} failed: {failed}")
                continue
            m = res["metrics"]
            print(f"{n:>7} {method:>6} {res['seconds']:>8.2f} {res['peak_mb']:>8.0f} "
                  f"{res['extra_mb']:>8.0f}  {m['recall@1']:>7.4f} "
                  f"{m['recall@' + str(ks[-1])]:>7.4f} {m['map@r']:>7.4f} "
                  f"{m['r_precision']:>7.4f}", flush=True)


if __name__ == "__main__":
    main()
