"""Forward + backward time per step of every class loss at the paper's sizes.

    python bench/losses.py            # batch 180, dim 512, C = 100 and 11,318
    python bench/losses.py --quick    # tiny sizes, to check the script runs
    python bench/losses.py --match Face,Circle,XBM   # only rows whose name has one of these

Each step computes the loss and its gradient w.r.t. the embeddings (and the
proxies for proxy losses) inside ``tf.function``, with and without XLA
(``jit_compile=True``). Prints a markdown table of median milliseconds.

"checks off" times the same step through ``loss.call``, i.e. without
``MetricLoss.__call__``'s NaN/Inf check of ``y_pred`` (and the NaN
propagation that stands in for it under XLA). The two variants are timed
alternately, step for step, so machine noise affects both alike.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_dml as kd  # noqa: E402

tf.get_logger().setLevel("ERROR")    # each loss traces its own steps: no retracing notes


def proxy_step(loss_fn, jit):
    @tf.function(jit_compile=jit)
    def step(emb, labels, proxies):
        with tf.GradientTape() as tape:
            tape.watch([emb, proxies])
            value = loss_fn(labels, kd.ops.cosine_similarity(emb, proxies))
        return value, tape.gradient(value, [emb, proxies])
    return step


def pair_step(loss_fn, jit):
    @tf.function(jit_compile=jit)
    def step(emb, labels, proxies):
        del proxies
        with tf.GradientTape() as tape:
            tape.watch(emb)
            value = loss_fn(labels, emb)
        return value, tape.gradient(value, emb)
    return step


def time_steps(steps, args, repeats):
    """Median ms of each step, the steps run alternately."""
    for step in steps:
        step(*args)                  # trace + compile
    times = [[] for _ in steps]
    for _ in range(repeats):
        for step, record in zip(steps, times):
            start = time.perf_counter()
            out = step(*args)
            tf.nest.map_structure(lambda t: t.numpy(), out)
            record.append(time.perf_counter() - start)
    return [1e3 * float(np.median(t)) for t in times]


def row(make_step, loss, args, repeats):
    """[checked, unchecked] ms without XLA, then with XLA."""
    out = []
    for jit in (False, True):
        out += time_steps([make_step(loss, jit), make_step(loss.call, jit)], args, repeats)
    return out


class WithMemory:
    """A pair loss against a cross-batch memory of M embeddings: the step
    MetricModel(memory_size=M) takes once the memory is full (references
    [M, D] with labels, all slots valid, the batch's own copies excluded)."""

    def __init__(self, loss, memory, memory_labels):
        self.loss = loss
        self.references = kd.losses.References(
            memory, memory_labels, tf.ones([memory.shape[0]], tf.bool))

    def _refs(self, batch):
        return self.references._replace(self_index=tf.range(batch, dtype=tf.int32))

    def __call__(self, labels, emb):
        return self.loss(labels, emb, references=self._refs(emb.shape[0]))

    def call(self, labels, emb):
        return self.loss.call(labels, emb, references=self._refs(emb.shape[0]))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--match", default="",
                        help="comma-separated substrings: only the rows whose loss name "
                             "contains one of them")
    parser.add_argument("--memory", type=int, default=4096,
                        help="cross-batch memory size M of the XBM rows")
    args = parser.parse_args()
    wanted = [w for w in args.match.split(",") if w]

    def selected(name):
        return not wanted or any(w in name for w in wanted)
    batch, dim = (24, 16) if args.quick else (180, 512)
    class_counts = (10, 50) if args.quick else (100, 11318)
    repeats = 3 if args.quick else args.repeats

    rng = np.random.default_rng(0)
    emb = tf.constant(rng.normal(size=(batch, dim)), tf.float32)
    # 60 classes x 3 images, like an M-per-class batch; class ids < min(C).
    labels = tf.constant(np.repeat(np.arange(batch // 3), 3), tf.int32)

    proxy_losses = [
        ("ProxyAnchorLoss", kd.losses.ProxyAnchorLoss(), 1),
        ("ProxyNCALoss", kd.losses.ProxyNCALoss(), 1),
        ("SoftTripleLoss (K=10)", kd.losses.SoftTripleLoss(), 10),
        ("ArcFaceLoss", kd.losses.ArcFaceLoss(), 1),
        ("CosFaceLoss", kd.losses.CosFaceLoss(), 1),
        ("SubCenterArcFaceLoss (K=3)", kd.losses.SubCenterArcFaceLoss(), 3),
    ]
    pair_losses = [
        ("TripletLoss (semihard)", kd.losses.TripletLoss()),
        ("TripletLoss (all)", kd.losses.TripletLoss(mining="all")),
        ("ContrastiveLoss", kd.losses.ContrastiveLoss()),
        ("MultiSimilarityLoss", kd.losses.MultiSimilarityLoss()),
        ("NPairLoss", kd.losses.NPairLoss()),
        ("LiftedStructureLoss", kd.losses.LiftedStructureLoss()),
        ("CircleLoss", kd.losses.CircleLoss()),
    ]
    memory_size = 64 if args.quick else args.memory
    memory = tf.constant(rng.normal(size=(memory_size, dim)), tf.float32)
    memory_labels = tf.constant(np.arange(memory_size) % (batch // 3), tf.int32)
    for name, loss in [("ContrastiveLoss", kd.losses.ContrastiveLoss()),
                       ("MultiSimilarityLoss", kd.losses.MultiSimilarityLoss()),
                       ("CircleLoss", kd.losses.CircleLoss())]:
        pair_losses.append((f"{name} + XBM (M={memory_size})",
                            WithMemory(loss, memory, memory_labels)))

    print(f"forward+backward per step, batch {batch}, dim {dim}, "
          f"TF {tf.__version__}, {os.cpu_count()} CPU cores; median of {repeats}\n")
    print("| loss | C | proxies | tf.function ms | checks off | + jit_compile ms | checks off |")
    print("|---|---|---|---|---|---|---|")
    for name, loss, per_class in proxy_losses:
        if not selected(name):
            continue
        for classes in class_counts:
            proxies = tf.constant(rng.normal(size=(classes * per_class, dim)), tf.float32)
            ms = row(proxy_step, loss, (emb, labels, proxies), repeats)
            print(f"| {name} | {classes} | {classes * per_class} | "
                  + " | ".join(f"{t:.2f}" for t in ms) + " |")
    dummy = tf.zeros([1, dim])
    for name, loss in pair_losses:
        if not selected(name):
            continue
        ms = row(pair_step, loss, (emb, labels, dummy), repeats)
        print(f"| {name} | - | - | " + " | ".join(f"{t:.2f}" for t in ms) + " |")


if __name__ == "__main__":
    main()
