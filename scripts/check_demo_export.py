"""Reproduce the demo's test metrics through its exported SavedModel.

    python scripts/check_demo_export.py --output_dir=runs/demo

Run in a fresh process: loads ``saved_model/`` with ``tf.saved_model.load``
(no Keras model, no keras_dml layers), feeds the raw uint8 [N, 28, 28, 1]
test images of classes 5-9 to ``serving_default``, recomputes the retrieval
metrics and compares them with ``metrics.json``. Exits non-zero on mismatch.
"""

import argparse
import json
import os
import sys

import numpy as np
import tensorflow as tf


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--fashion_mnist_dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--tolerance", type=float, default=2e-3,
                        help="max |difference| of any metric (float rounding may "
                             "flip a near-tie)")
    args = parser.parse_args()
    with open(os.path.join(args.output_dir, "metrics.json")) as f:
        reported = json.load(f)

    served = tf.saved_model.load(os.path.join(args.output_dir, "saved_model"))
    serve = served.signatures["serving_default"]

    from keras_dml.data.fashion_mnist import load_fashion_mnist  # idx reader only
    from keras_dml.evaluation import retrieval_metrics
    test = load_fashion_mnist(root=args.fashion_mnist_dir, source="files").test
    images = np.stack([x.numpy() for x, _ in test.dataset()])
    if len(images) != reported["num_queries"]:
        sys.exit(f"metrics.json has {reported['num_queries']} queries, the test split "
                 f"{len(images)}: the demo ran on a subset (--max_test_examples).")
    emb = np.concatenate([serve(images=tf.constant(images[i:i + 500]))["embeddings"].numpy()
                          for i in range(0, len(images), 500)])
    ks = sorted(int(k.split("@")[1]) for k in reported if k.startswith("recall@"))
    metrics = retrieval_metrics(emb, test.labels, ks=ks)
    worst = 0.0
    print(f"{'metric':<14}{'metrics.json':>14}{'SavedModel':>14}")
    for key, value in metrics.items():
        diff = abs(float(value) - reported[key])
        worst = max(worst, diff)
        print(f"{key:<14}{reported[key]:>14.4f}{float(value):>14.4f}")
    print(f"embeddings {emb.shape}, unit norm: "
          f"{np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)}; max |diff| {worst:.2e}")
    if worst > args.tolerance:
        sys.exit("mismatch")


if __name__ == "__main__":
    main()
