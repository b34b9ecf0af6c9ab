"""Time and peak memory per training step of LogRatioLoss(anchors="all")
(or, with ``--loss rank_n_contrast``, of RankNContrastLoss).

    python bench/log_ratio.py            # B = 128 ... 2048, D = 128
    python bench/log_ratio.py --quick    # tiny sizes, to check the script runs
    python bench/log_ratio.py --loss rank_n_contrast

A step is the loss and its gradient w.r.t. the embeddings [B, D] (labels
[B, 3], squared-L2 label distances computed in the loss) inside
``tf.function``. Two implementations are compared:

* ``O(B^2)``: ``kd.losses.LogRatioLoss(anchors="all")`` (per-anchor sums of
  squares, [B, B] tensors only);
* ``B^3``: the straightforward enumeration of every triplet (a, i, j) as a
  [B, B, B] tensor of log-ratio differences, run only where its estimated
  memory fits ``--naive-max-gb``. Both give the same value (checked, the
  relative difference is printed).

For ``--loss rank_n_contrast`` (labels [B, 1], L1 label distance, so the
batch has ties) ``O(B^2)`` is the sorted suffix-logsumexp of
``kd.losses.RankNContrastLoss`` and ``B^3`` the [B, B, B] negative mask
{k: d(i, k) >= d(i, j)} summed directly.

Each (implementation, B) runs in a fresh subprocess. Peak memory is
``tf.config.experimental.get_memory_info("GPU:0")`` on a GPU; on CPU (where
TF's counter sees only some allocations: 0 for the O(B^2) step) it is the
growth of the process' peak RSS (``ru_maxrss``) over the RSS just before the
first step (after import, inputs and tracing); allocator caching and the
~15 MB of first-run buffers make it a coarse, upper-bound figure at small B. The
analytic size of the largest tensor (4 B^2 or 4 B^3 bytes) is printed next
to it. The cost exponent is the least-squares slope of log(time) against
log(B) (all sizes, and the three largest, where per-op overheads matter
least).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from harness import ChildFailed, peak_rss_bytes, report, rss_bytes, run_child  # noqa: E402  (bench/, the script's directory)


def naive_log_ratio(labels, embeddings, eps=1e-6):
    """Every triplet enumerated: [B, B, B] differences (the baseline)."""
    import tensorflow as tf

    from keras_dml import label_distances, ops
    b = tf.shape(embeddings)[0]
    d = ops.pairwise_squared_distances(embeddings)
    dy = label_distances.squared_l2(labels)
    r = tf.math.log(d + eps) - tf.math.log(dy + eps)
    diff = r[:, :, None] - r[:, None, :]                           # [a, i, j]
    idx = tf.range(b)
    pair = idx[:, None] < idx[None, :]
    not_a = tf.not_equal(idx[None, :], idx[:, None])               # [a, i]
    mask = tf.logical_and(pair[None], tf.logical_and(not_a[:, :, None], not_a[:, None, :]))
    mask = tf.cast(mask, d.dtype)
    per_anchor = tf.reduce_sum(tf.square(diff) * mask, axis=[1, 2]) / tf.reduce_sum(mask, axis=[1, 2])
    return tf.reduce_mean(per_anchor)


def naive_rank_n_contrast(labels, embeddings, temperature=2.0):
    """Every (anchor, pair, negative) as a [B, B, B] mask (the baseline)."""
    import tensorflow as tf

    from keras_dml import label_distances, ops
    b = tf.shape(embeddings)[0]
    logits = -ops.pairwise_distances(embeddings) / temperature
    dy = label_distances.l1(labels)
    off = tf.logical_not(tf.eye(b, dtype=tf.bool))
    neg = tf.logical_and(dy[:, None, :] >= dy[:, :, None], off[:, None, :])   # [i, j, k]
    m = tf.stop_gradient(tf.reduce_max(logits, axis=1, keepdims=True))
    e = tf.exp(logits - m)
    denominator = tf.reduce_sum(tf.where(neg, e[:, None, :], tf.zeros_like(neg, e.dtype)), axis=2)
    terms = tf.math.log(denominator) + m - logits
    pairs = tf.cast(b * (b - 1), logits.dtype)
    return tf.reduce_sum(tf.where(off, terms, tf.zeros_like(terms))) / pairs


def worker(method, batch, dim, repeats, threads, loss_name="log_ratio"):
    import numpy as np
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras_dml as kd

    rng = np.random.default_rng(0)
    emb = tf.constant(rng.normal(size=(batch, dim)).astype("float32"))
    if loss_name == "rank_n_contrast":
        labels = tf.constant(rng.integers(0, 50, size=(batch, 1)).astype("float32"))
        loss = kd.losses.RankNContrastLoss()
        naive = naive_rank_n_contrast
    else:
        labels = tf.constant(rng.uniform(size=(batch, 3)).astype("float32"))
        loss = kd.losses.LogRatioLoss(anchors="all")
        naive = naive_log_ratio

    def value(y, f):
        return loss(y, f) if method == "ours" else naive(y, f)

    @tf.function
    def step(y, f):
        with tf.GradientTape() as tape:
            tape.watch(f)
            v = value(y, f)
        return v, tape.gradient(v, f)

    step.get_concrete_function(labels, emb)                  # trace only
    rss_before = rss_bytes()
    v, g = step(labels, emb)
    _ = g.numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        v, g = step(labels, emb)
        _ = g.numpy()
        times.append(time.perf_counter() - start)
    peak_rss = peak_rss_bytes()
    if tf.config.list_logical_devices("GPU"):
        peak, how = tf.config.experimental.get_memory_info("GPU:0")["peak"], "tf"
    else:
        # TF's CPU counter (get_memory_info("CPU:0")) tracks only some
        # allocations (0 for the O(B^2) step here): use the RSS peak.
        peak, how = max(peak_rss - rss_before, 0), "rss"
    largest = 4 * batch ** 2 if method == "ours" else 4 * batch ** 3
    report({"method": method, "batch": batch, "ms": 1e3 * float(np.median(times)),
            "peak_bytes": int(peak), "how": how, "largest_bytes": largest,
            "value": float(v)})


def run_worker(method, batch, args):
    try:
        return run_child(__file__, ["--worker", method, "--batch", batch, "--dim", args.dim,
                                    "--repeats", args.repeats, "--threads", args.threads,
                                    "--loss", args.loss])
    except ChildFailed as failed:
        return {"method": method, "batch": batch, "error": str(failed).splitlines()[-1:]}


def slope(points):
    import numpy as np
    if len(points) < 2:
        return float("nan")
    x = np.log([p[0] for p in points])
    y = np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (B = 32, 64, 128)")
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--naive-max-gb", type=float, default=4.0,
                        help="skip the B^3 enumeration above ~6 * 4 B^3 bytes")
    parser.add_argument("--threads", type=int, default=0, help="TF threads (0: default)")
    parser.add_argument("--loss", choices=["log_ratio", "rank_n_contrast"], default="log_ratio")
    parser.add_argument("--worker", choices=["ours", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats is None:
        args.repeats = 3 if args.quick else 10
    if args.worker:
        worker(args.worker, args.batch, args.dim, args.repeats, args.threads, args.loss)
        return
    sizes = args.sizes or ([32, 64, 128] if args.quick else [128, 256, 512, 1024, 2048])

    rows = []
    for b in sizes:
        ours = run_worker("ours", b, args)
        naive_gb = 6 * 4 * b ** 3 / 2 ** 30
        naive = (run_worker("naive", b, args) if naive_gb <= args.naive_max_gb
                 else {"skipped": f"~{naive_gb:.0f} GB"})
        rows.append((b, ours, naive))
        print(f"  done B={b}", file=sys.stderr, flush=True)

    title = ("RankNContrastLoss()" if args.loss == "rank_n_contrast"
             else "LogRatioLoss(anchors='all')")
    print(f"\n{title}, forward + backward, D = {args.dim}, "
          f"median of {args.repeats} steps\n")
    print("| B | O(B^2) ms | O(B^2) peak MB | largest tensor MB | B^3 ms | B^3 peak MB "
          "| largest tensor MB | speed-up | rel. diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    hows = set()
    for b, o, n in rows:
        if "error" in o:
            print(f"| {b} | error: {o['error']} | | | | | | | |")
            continue
        hows.add(o["how"])
        cells = [str(b), f"{o['ms']:.2f}", f"{o['peak_bytes'] / 2**20:.1f}",
                 f"{o['largest_bytes'] / 2**20:.3f}"]
        if "ms" in n:
            hows.add(n["how"])
            rel = abs(n["value"] - o["value"]) / max(abs(n["value"]), 1e-30)
            cells += [f"{n['ms']:.2f}", f"{n['peak_bytes'] / 2**20:.1f}",
                      f"{n['largest_bytes'] / 2**20:.1f}", f"{n['ms'] / o['ms']:.1f}x",
                      f"{rel:.1e}"]
        else:
            cells += [n.get("skipped", f"error: {n.get('error')}"), "", "", "", ""]
        print("| " + " | ".join(cells) + " |")
    ours_pts = [(b, o["ms"]) for b, o, _ in rows if "ms" in o]
    naive_pts = [(b, n["ms"]) for b, _, n in rows if "ms" in n]
    print("\nfitted cost exponent (log-log slope of time vs B):")
    print(f"  O(B^2) implementation: {slope(ours_pts):.2f} (all sizes), "
          f"{slope(ours_pts[-3:]):.2f} (three largest)")
    if len(naive_pts) >= 2:
        print(f"  B^3 enumeration:       {slope(naive_pts):.2f} (all sizes it ran)")
    how = ", ".join(sorted(hows))
    print(f"\npeak memory measured as: {how} "
          "(rss = growth of the fresh subprocess' peak RSS over its RSS before the first step; "
          "tf = tf.config.experimental.get_memory_info('GPU:0'))")


if __name__ == "__main__":
    main()
