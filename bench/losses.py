"""Forward + backward time per step of every class loss at the paper's sizes.

    python bench/losses.py            # batch 180, dim 512, C = 100 and 11,318
    python bench/losses.py --quick    # tiny sizes, to check the script runs

Each step computes the loss and its gradient w.r.t. the embeddings (and the
proxies for proxy losses) inside ``tf.function``, with and without XLA
(``jit_compile=True``). Prints a markdown table of median milliseconds.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_dml as kd  # noqa: E402


def proxy_step(loss, num_proxies, jit):
    @tf.function(jit_compile=jit)
    def step(emb, labels, proxies):
        with tf.GradientTape() as tape:
            tape.watch([emb, proxies])
            value = loss(labels, kd.ops.cosine_similarity(emb, proxies))
        return value, tape.gradient(value, [emb, proxies])
    return step


def pair_step(loss, jit):
    @tf.function(jit_compile=jit)
    def step(emb, labels, proxies):
        del proxies
        with tf.GradientTape() as tape:
            tape.watch(emb)
            value = loss(labels, emb)
        return value, tape.gradient(value, emb)
    return step


def time_step(step, args, repeats):
    step(*args)                      # trace + compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = step(*args)
        tf.nest.map_structure(lambda t: t.numpy(), out)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
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
    ]
    pair_losses = [
        ("TripletLoss (semihard)", kd.losses.TripletLoss()),
        ("TripletLoss (all)", kd.losses.TripletLoss(mining="all")),
        ("ContrastiveLoss", kd.losses.ContrastiveLoss()),
        ("MultiSimilarityLoss", kd.losses.MultiSimilarityLoss()),
        ("NPairLoss", kd.losses.NPairLoss()),
        ("LiftedStructureLoss", kd.losses.LiftedStructureLoss()),
    ]

    print(f"forward+backward per step, batch {batch}, dim {dim}, "
          f"TF {tf.__version__}, {os.cpu_count()} CPU cores; median of {repeats}\n")
    print("| loss | C | proxies | tf.function ms | + jit_compile ms |")
    print("|---|---|---|---|---|")
    for name, loss, per_class in proxy_losses:
        for classes in class_counts:
            proxies = tf.constant(rng.normal(size=(classes * per_class, dim)), tf.float32)
            row = [time_step(proxy_step(loss, classes * per_class, jit),
                             (emb, labels, proxies), repeats) for jit in (False, True)]
            print(f"| {name} | {classes} | {classes * per_class} | {row[0]:.2f} | {row[1]:.2f} |")
    dummy = tf.zeros([1, dim])
    for name, loss in pair_losses:
        row = [time_step(pair_step(loss, jit), (emb, labels, dummy), repeats)
               for jit in (False, True)]
        print(f"| {name} | - | - | {row[0]:.2f} | {row[1]:.2f} |")


if __name__ == "__main__":
    main()
