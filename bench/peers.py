"""keras_dml against its peers, side by side in one run, on the same inputs.

    python bench/peers.py            # the papers' / today's benches' sizes (< 15 min, 2 cores)
    python bench/peers.py --quick    # small sizes (a minute or two)
    python bench/peers.py --tiny     # tiny sizes, one timed repeat
    python bench/peers.py --tiny --inline   # the same in one process (the test)
    python bench/peers.py --rows proxy_anchor,log_ratio

Rows (keras_dml under TensorFlow, the peer in its own framework):

  proxy_anchor   ProxyAnchorLoss forward + backward (d/d embeddings and d/d
                 proxies), B=180, D=512, C=100 and 11,318 (CUB / SOP), against
                 pytorch-metric-learning's ProxyAnchorLoss(margin=0.1, alpha=32)
  multi_similarity  MultiSimilarityLoss (+ its miner, epsilon 0.1) forward +
                 backward, B=180, D=512, against PML's MultiSimilarityMiner +
                 MultiSimilarityLoss(2, 50, 0.5)
  retrieval      Recall@1/2/4/8 self-retrieval, 40k x 256 (and SOP's 60k x 512
                 for the memory figure), kd.evaluation.retrieval_metrics against
                 faiss.IndexFlatIP (top 9) + numpy
  log_ratio      LogRatioLoss(anchors="all") forward + backward w.r.t. the
                 embeddings, B=256 and 128, D=128, labels [B, 3], against the
                 authors' per-anchor formula (their LogRatioLoss.forward, one
                 anchor per call) looped over every anchor, in torch
  index          exact search, 1000 queries, k=10, 100k and 1M x 128 (clustered
                 synthetic data of bench/index.py), kd.retrieval.Index against
                 faiss.IndexFlatIP: queries/s
  train_step     ResNet-50 (keras.applications layout) -> GAP+GMP -> Dense(512)
                 -> L2 -> Proxies(100) -> Proxy Anchor, AdamW (proxies 100x lr),
                 gradient values clipped at 10, 224 px, batch 32:
                 ``MetricModel.train_on_batch`` against the same network, loss
                 and optimiser in PyTorch + PML (the torch side's weights are
                 copied into the Keras model first)

Every (row, side) runs in a fresh subprocess, the peer first. The peer saves
its result (loss value and gradients, metrics, neighbour ids, first-step
loss); the keras_dml side computes the same thing on the same inputs (same
seeds, same weights) and asserts it is close *before* it times anything: a
row whose two sides disagree fails instead of printing a time. Times are the
median of --repeats after --warmup calls (the first of which traces /
compiles). Peak memory: the growth of the subprocess's peak RSS (ru_maxrss)
over its RSS just before the first call (imports and inputs already in
memory), so it is the work's own extra memory. "ratio" is keras_dml's time
over the peer's (< 1: keras_dml is faster); for the index rows it is the
peer's q/s over keras_dml's, i.e. the same sense.

Ours runs the default code path a user gets: the losses as ``MetricModel``
computes them (an XLA-compiled loss-and-gradient function), the retrieval
metrics and the index through their public functions with default arguments,
the train step through ``MetricModel.compile`` defaults.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ROWS = ("proxy_anchor", "multi_similarity", "retrieval", "log_ratio", "index",
        "train_step")

# Per mode: sizes of each row, warm-up calls and timed repeats.
SIZES = {
    "full": dict(proxy_anchor=[(180, 512, 100), (180, 512, 11318)],
                 multi_similarity=[(180, 512)],
                 retrieval=[(40_000, 256, 3), (60_000, 512, 1)],
                 log_ratio=[(256, 128), (128, 128)],
                 index=[(100_000, 1000, 3), (1_000_000, 1000, 3)],
                 train_step=(32, 224, 100, 3),
                 warmup=3, repeats=20),
    "quick": dict(proxy_anchor=[(180, 512, 100), (180, 512, 2000)],
                  multi_similarity=[(180, 512)],
                  retrieval=[(5_000, 256, 3)],
                  log_ratio=[(128, 128)],
                  index=[(50_000, 500, 3)],
                  train_step=(4, 64, 20, 2),
                  warmup=2, repeats=5),
    "tiny": dict(proxy_anchor=[(12, 8, 5)],
                 multi_similarity=[(12, 8)],
                 retrieval=[(300, 16, 1)],
                 log_ratio=[(12, 8)],
                 index=[(2_000, 20, 1)],
                 # 64 px: at 32 px the last BatchNorm normalises 2 values
                 # per channel, too ill-conditioned to compare frameworks.
                 train_step=(4, 64, 10, 1),
                 warmup=1, repeats=1),
}
LABEL_DIM = 3            # continuous labels of the Log-ratio rows
INDEX_DIM, INDEX_K = 128, 10
RETRIEVAL_KS = (1, 2, 4, 8)


# --- shared helpers ----------------------------------------------------------

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def median_ms(call, warmup, repeats):
    """Median wall ms of ``call()`` (which must block until done)."""
    for _ in range(max(warmup - 1, 0)):
        call()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def assert_close(name, ours, theirs, rtol, atol=0.0):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape or not np.allclose(ours, theirs, rtol=rtol, atol=atol):
        diff = (np.max(np.abs(ours - theirs)) if ours.shape == theirs.shape
                else f"shapes {ours.shape} vs {theirs.shape}")
        raise AssertionError(f"{name}: keras_dml and the peer differ (max abs "
                             f"difference {diff}, rtol {rtol}, atol {atol}).")


def proxy_inputs(b, d, c, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, b).astype(np.int64)
    proxies = rng.standard_normal((c, d)).astype(np.float32)
    emb = (proxies[labels] + 1.5 * rng.standard_normal((b, d))).astype(np.float32)
    return emb, labels, proxies


def ms_inputs(b, d, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(b // 3), 3)[:b].astype(np.int64)   # 3 per class
    centres = rng.standard_normal((b // 3 + 1, d)).astype(np.float32)
    emb = (centres[labels] + 1.5 * rng.standard_normal((b, d))).astype(np.float32)
    return emb, labels


def log_ratio_inputs(b, d, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((b, d)).astype(np.float32),
            rng.uniform(size=(b, LABEL_DIM)).astype(np.float32))


def retrieval_inputs(n, d, per_class=5, seed=0):
    """Clustered L2-normalised embeddings, ~per_class items per class (SOP-like)."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from evaluation import make_data
    return make_data(n, d, per_class, seed)


def index_inputs(n, nq):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import index as index_bench
    index_bench.NUM_QUERIES = nq
    return index_bench.synthetic(n, INDEX_DIM)


# --- the peers (torch, PML, faiss, numpy) ------------------------------------

def torch_value_and_grads(fn, tensors):
    import torch
    leaves = [t.detach().requires_grad_(True) for t in tensors]
    value = fn(*leaves)
    return value.detach(), torch.autograd.grad(value, leaves)


def peer_proxy_anchor(size, warmup, repeats):
    import torch
    from pytorch_metric_learning import losses
    b, d, c = size
    emb, labels, proxies = proxy_inputs(b, d, c)
    loss = losses.ProxyAnchorLoss(c, d, margin=0.1, alpha=32)
    e, y, p = torch.tensor(emb), torch.tensor(labels), torch.tensor(proxies)

    def step():
        loss.proxies = torch.nn.Parameter(p.detach().clone())
        leaf = e.detach().requires_grad_(True)
        value = loss(leaf, y)
        return value.detach(), torch.autograd.grad(value, [leaf, loss.proxies])
    base = rss_mb()
    value, (ge, gp) = step()
    ms = median_ms(step, warmup, repeats)
    return ms, peak_mb() - base, dict(value=value.numpy(), ge=ge.numpy(), gp=gp.numpy())


def peer_multi_similarity(size, warmup, repeats):
    import torch
    from pytorch_metric_learning import losses, miners
    b, d = size
    emb, labels = ms_inputs(b, d)
    loss, miner = losses.MultiSimilarityLoss(2, 50, 0.5), miners.MultiSimilarityMiner(0.1)
    e, y = torch.tensor(emb), torch.tensor(labels)
    fn = lambda x: loss(x, y, miner(x, y))  # noqa: E731

    def step():
        return torch_value_and_grads(fn, [e])
    base = rss_mb()
    value, (ge,) = step()
    ms = median_ms(step, warmup, repeats)
    return ms, peak_mb() - base, dict(value=value.numpy(), ge=ge.numpy())


def authors_log_ratio(embeddings, label_dist, eps=1e-6):
    """The authors' LogRatioLoss.forward (one anchor: row 0 is the anchor, the
    other rows its pairs, uniform weights over the pairs i < j), written from
    their formula, applied to every sample as the anchor in turn and averaged.
    Squared Euclidean distances (the paper's; the authors' code takes the
    square root, ``LogRatioLoss(squared=False)`` here)."""
    import torch
    b = embeddings.shape[0]
    m = b - 1
    device = embeddings.device
    idx = torch.arange(m, device=device)
    upper = (idx[:, None] < idx[None, :]).to(embeddings.dtype)
    weight = upper / upper.sum()
    losses = []
    for a in range(b):                      # one forward per anchor
        others = torch.cat([torch.arange(a, device=device),
                            torch.arange(a + 1, b, device=device)])
        dist = torch.sum((embeddings[others] - embeddings[a]) ** 2, 1)
        log_dist = torch.log(dist + eps)
        log_gt = torch.log(label_dist[a, others] + eps)
        diff = (log_dist[:, None] - log_dist[None, :]) - (log_gt[:, None] - log_gt[None, :])
        losses.append((diff.pow(2) * weight).sum())
    return torch.stack(losses).mean()


def peer_log_ratio(size, warmup, repeats):
    import torch
    b, d = size
    emb, labels = log_ratio_inputs(b, d)
    y = torch.tensor(labels)
    label_dist = torch.sum((y[:, None, :] - y[None, :, :]) ** 2, -1)   # squared L2
    e = torch.tensor(emb)

    def step():
        return torch_value_and_grads(lambda x: authors_log_ratio(x, label_dist), [e])
    base = rss_mb()
    value, (ge,) = step()
    ms = median_ms(step, warmup, repeats)
    return ms, peak_mb() - base, dict(value=value.numpy(), ge=ge.numpy())


def faiss_recalls(x, labels, ks):
    import faiss
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from evaluation import r_per_query
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, idx = index.search(x, max(ks) + 1)
    is_self = idx == np.arange(len(x))[:, None]          # remove the query itself
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    idx = idx[~is_self].reshape(len(x), max(ks))
    same = labels[idx] == labels[:, None]
    has = r_per_query(labels) > 0
    return {f"recall@{k}": float(np.mean(np.any(same[has, :k], axis=1))) for k in ks}


def peer_retrieval(size, warmup, repeats):
    n, d, reps = size
    x, labels = retrieval_inputs(n, d)
    faiss_recalls(x[:200], labels[:200], (1,))                  # start-up
    base = rss_mb()
    out = {}
    ms = median_ms(lambda: out.update(faiss_recalls(x, labels, RETRIEVAL_KS)),
                   1, min(repeats, reps))
    return ms, peak_mb() - base, {k: np.float64(v) for k, v in out.items()}


def peer_index(size, warmup, repeats):
    import faiss
    n, nq, reps = size
    gallery, queries = index_inputs(n, nq)
    base = rss_mb()
    index = faiss.IndexFlatIP(INDEX_DIM)
    index.add(gallery)
    out = {}

    def search():
        out["scores"], out["ids"] = index.search(queries, INDEX_K)
    search()
    ms = median_ms(search, 1, min(repeats, reps))
    return ms, peak_mb() - base, dict(ids=out["ids"], scores=out["scores"])


# --- ResNet-50 in PyTorch, laid out like keras.applications.ResNet50 ---------

BLOCKS = (("conv2", 64, 3, 1), ("conv3", 128, 4, 2), ("conv4", 256, 6, 2),
          ("conv5", 512, 3, 2))
BN_EPS = 1.001e-5          # keras.applications' ResNet epsilon


def torch_resnet50():
    """Keras' ResNet50 (v1: the stride on the first 1x1 conv, convs with
    biases), as an ``nn.ModuleDict`` named like the Keras layers."""
    from torch import nn
    layers = {"conv1_conv": nn.Conv2d(3, 64, 7, 2, 3),
              "conv1_bn": nn.BatchNorm2d(64, eps=BN_EPS)}
    cin = 64
    for stage, f, n, stride in BLOCKS:
        for i in range(1, n + 1):
            p = f"{stage}_block{i}_"
            s = stride if i == 1 else 1
            if i == 1:
                layers[p + "0_conv"] = nn.Conv2d(cin, 4 * f, 1, s)
                layers[p + "0_bn"] = nn.BatchNorm2d(4 * f, eps=BN_EPS)
            layers[p + "1_conv"] = nn.Conv2d(cin, f, 1, s)
            layers[p + "1_bn"] = nn.BatchNorm2d(f, eps=BN_EPS)
            layers[p + "2_conv"] = nn.Conv2d(f, f, 3, 1, 1)
            layers[p + "2_bn"] = nn.BatchNorm2d(f, eps=BN_EPS)
            layers[p + "3_conv"] = nn.Conv2d(f, 4 * f, 1, 1)
            layers[p + "3_bn"] = nn.BatchNorm2d(4 * f, eps=BN_EPS)
            cin = 4 * f
    return nn.ModuleDict(layers)


def torch_resnet50_forward(net, x):
    import torch.nn.functional as F
    x = F.relu(net["conv1_bn"](net["conv1_conv"](x)))
    x = F.max_pool2d(x, 3, 2, 1)
    for stage, _, n, _ in BLOCKS:
        for i in range(1, n + 1):
            p = f"{stage}_block{i}_"
            short = net[p + "0_bn"](net[p + "0_conv"](x)) if i == 1 else x
            h = F.relu(net[p + "1_bn"](net[p + "1_conv"](x)))
            h = F.relu(net[p + "2_bn"](net[p + "2_conv"](h)))
            h = net[p + "3_bn"](net[p + "3_conv"](h))
            x = F.relu(h + short)
    return x


def train_inputs(b, size, c, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, size=(b, size, size, 3)).astype(np.float32)
    return images, (np.arange(b) % c).astype(np.int64)


def peer_train_step(size, warmup, repeats, weights_path, device="cpu", sync=None):
    """The PyTorch + PML step (on ``device``; ``sync()`` after each step on
    an accelerator); saves its initial weights to ``weights_path``."""
    import torch
    import torch.nn.functional as F
    from pytorch_metric_learning import losses
    b, px, c, steps = size
    torch.manual_seed(0)
    net = torch_resnet50()
    head = torch.nn.Linear(2048, 512)
    loss_fn = losses.ProxyAnchorLoss(c, 512, margin=0.1, alpha=32)
    state = {f"{k}": v.detach().numpy().copy() for k, v in net.state_dict().items()}
    state["head.weight"] = head.weight.detach().numpy().copy()
    state["head.bias"] = head.bias.detach().numpy().copy()
    state["proxies"] = loss_fn.proxies.detach().numpy().copy()
    np.savez(weights_path, **state)
    images, labels = train_inputs(b, px, c)
    net.to(device), head.to(device), loss_fn.to(device)
    x = torch.tensor(images).permute(0, 3, 1, 2).contiguous().to(device)
    y = torch.tensor(labels).to(device)
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW([{"params": params, "lr": 1e-4},
                             {"params": [loss_fn.proxies], "lr": 1e-2}],
                            weight_decay=1e-4)
    net.train()

    def step():
        opt.zero_grad(set_to_none=True)
        f = torch_resnet50_forward(net, x)
        f = f.mean((2, 3)) + f.amax((2, 3))                  # GAP + GMP
        emb = F.normalize(head(f), dim=1)
        loss = loss_fn(emb, y)
        loss.backward()
        torch.nn.utils.clip_grad_value_(params + [loss_fn.proxies], 10.0)
        opt.step()
        if sync is not None:
            sync()
        return float(loss.detach())
    base = rss_mb()
    first = step()
    ms = median_ms(step, warmup, min(repeats, steps))
    return ms, peak_mb() - base, dict(value=np.float64(first))


# --- keras_dml (TensorFlow) --------------------------------------------------

def compiled_loss_step(loss, n_diff):
    """The loss and its gradients as ``MetricModel`` computes them by default
    (``keras_dml.models.metric_model.compiled_loss``: XLA where the loss
    allows it)."""
    import tensorflow as tf

    from keras_dml.models.metric_model import compiled_loss
    value_of = compiled_loss(loss)

    @tf.function
    def step(*args):
        diff = list(args[:n_diff])
        with tf.GradientTape() as tape:
            tape.watch(diff)
            value = value_of(*args)
        return value, tape.gradient(value, diff)
    return step


def check_and_time(step, args, peer, checks, warmup, repeats):
    """Run ``step(*args)`` once, compare (value, grads) with the peer's
    (``checks``: (name, peer key, rtol, atol) for the value then each
    gradient), then the median ms and the peak extra MB."""
    import tensorflow as tf
    base = rss_mb()
    value, grads = step(*args)
    for (name, key, rtol, atol), ours in zip(checks, [value, *grads]):
        assert_close(name, ours.numpy(), peer[key], rtol, atol)
    ms = median_ms(lambda: [t.numpy() for t in tf.nest.flatten(step(*args))],
                   warmup, repeats)
    return ms, peak_mb() - base


def ours_proxy_anchor(size, warmup, repeats, peer):
    import tensorflow as tf

    import keras_dml as kd
    b, d, c = size
    emb, labels, proxies = proxy_inputs(b, d, c)
    loss = kd.losses.ProxyAnchorLoss(alpha=32.0, margin=0.1)
    step = compiled_loss_step(
        lambda e, p, y: loss(y, kd.ops.cosine_similarity(e, p)), 2)
    args = (tf.constant(emb), tf.constant(proxies), tf.constant(labels.astype(np.int32)))
    return check_and_time(step, args, peer, [
        ("Proxy Anchor loss", "value", 1e-4, 0.0),
        ("Proxy Anchor d/d embeddings", "ge", 1e-3, 1e-6),
        ("Proxy Anchor d/d proxies", "gp", 1e-3, 1e-6)], warmup, repeats)


def ours_multi_similarity(size, warmup, repeats, peer):
    import tensorflow as tf

    import keras_dml as kd
    b, d = size
    emb, labels = ms_inputs(b, d)
    loss = kd.losses.MultiSimilarityLoss(2.0, 50.0, 0.5, 0.1)
    step = compiled_loss_step(lambda e, y: loss(y, e), 1)
    args = (tf.constant(emb), tf.constant(labels.astype(np.int32)))
    return check_and_time(step, args, peer, [
        ("multi-similarity loss", "value", 1e-4, 0.0),
        ("multi-similarity d/d embeddings", "ge", 1e-3, 1e-6)], warmup, repeats)


def ours_log_ratio(size, warmup, repeats, peer):
    import tensorflow as tf

    import keras_dml as kd
    b, d = size
    emb, labels = log_ratio_inputs(b, d)
    loss = kd.losses.LogRatioLoss(anchors="all")
    step = compiled_loss_step(lambda e, y: loss(y, e), 1)
    args = (tf.constant(emb), tf.constant(labels))
    return check_and_time(step, args, peer, [
        ("Log-ratio loss", "value", 1e-4, 0.0),
        ("Log-ratio d/d embeddings", "ge", 1e-3, 1e-7)], warmup, repeats)


def ours_retrieval(size, warmup, repeats, peer):
    import keras_dml as kd
    n, d, reps = size
    x, labels = retrieval_inputs(n, d)
    kd.evaluation.retrieval_metrics(x[:200], labels[:200], ks=(1,), metrics=("recall",))
    base = rss_mb()
    out = {}

    def run():
        out.update(kd.evaluation.retrieval_metrics(x, labels, ks=RETRIEVAL_KS,
                                                   metrics=("recall",)))
    run()
    for k in RETRIEVAL_KS:
        # Exact ties aside (none in these data), the same neighbours.
        assert_close(f"Recall@{k}", out[f"recall@{k}"], peer[f"recall@{k}"], 0, 1e-4)
    ms = median_ms(run, 1, min(repeats, reps))
    return ms, peak_mb() - base


def ours_index(size, warmup, repeats, peer):
    import keras_dml as kd
    n, nq, reps = size
    gallery, queries = index_inputs(n, nq)
    kd.retrieval.Index(4).add(np.eye(4, dtype=np.float32))       # import TF
    base = rss_mb()
    index = kd.retrieval.Index(INDEX_DIM)
    index.add(gallery)
    out = {}

    def search():
        out["result"] = index.search(queries, INDEX_K)
    search()
    ids = np.asarray(out["result"].ids)
    same = np.mean(ids == peer["ids"])
    if same < 0.999:
        raise AssertionError(f"exact search: only {same:.4f} of the neighbour ids "
                             "equal faiss Flat's.")
    assert_close("exact search scores", out["result"].scores, peer["scores"], 0, 1e-5)
    ms = median_ms(search, 1, min(repeats, reps))
    return ms, peak_mb() - base


def load_torch_resnet_into_keras(model, state):
    """Copy the torch side's weights (``peer_train_step``) into ``model``."""
    backbone = model.embedder.backbone
    for layer in backbone.layers:
        name = layer.name
        if name.endswith("_conv"):
            layer.set_weights([state[name + ".weight"].transpose(2, 3, 1, 0),
                               state[name + ".bias"]])
        elif name.endswith("_bn"):
            layer.set_weights([state[name + ".weight"], state[name + ".bias"],
                               state[name + ".running_mean"],
                               state[name + ".running_var"]])
    dense = [v for v in model.embedder.head.weights]
    kernel = [v for v in dense if len(v.shape) == 2][0]
    bias = [v for v in dense if len(v.shape) == 1][0]
    kernel.assign(state["head.weight"].T)
    bias.assign(state["head.bias"])
    model.proxies.proxies.assign(state["proxies"])


def ours_train_step(size, warmup, repeats, peer, weights_path):
    import keras

    import keras_dml as kd
    b, px, c, steps = size
    backbone = keras.applications.ResNet50(weights=None, include_top=False,
                                           input_shape=(px, px, 3))
    embedder = kd.models.build_embedder(backbone, embedding_dim=512)
    model = kd.models.MetricModel(embedder, proxies=kd.layers.Proxies(c))
    model.compile(optimizer=keras.optimizers.AdamW(1e-4, weight_decay=1e-4),
                  loss=kd.losses.ProxyAnchorLoss(alpha=32.0, margin=0.1),
                  proxy_lr_multiplier=100.0, clip_value=10.0)
    load_torch_resnet_into_keras(model, dict(np.load(weights_path)))
    images, labels = train_inputs(b, px, c)
    x = keras.ops.convert_to_tensor(images)
    y = keras.ops.convert_to_tensor(labels.astype(np.int32))
    base = rss_mb()
    first = model.train_on_batch(x, y, return_dict=True)["loss"]
    assert_close("train step: first loss", first, peer["value"], 2e-3)
    ms = median_ms(lambda: model.train_on_batch(x, y), warmup, min(repeats, steps))
    return ms, peak_mb() - base


# --- the parent: subprocesses and the table ----------------------------------

def cases(mode, rows):
    """(row, label, size) of every row of the table, in order."""
    s = SIZES[mode]
    out = []
    for size in s["proxy_anchor"] if "proxy_anchor" in rows else ():
        out.append(("proxy_anchor", "Proxy Anchor fwd+bwd", "PML ProxyAnchorLoss",
                    "B={} D={} C={:,}".format(*size), size))
    for size in s["multi_similarity"] if "multi_similarity" in rows else ():
        out.append(("multi_similarity", "multi-similarity (+ miner) fwd+bwd",
                    "PML MS miner + loss", "B={} D={}".format(*size), size))
    for size in s["retrieval"] if "retrieval" in rows else ():
        out.append(("retrieval", "Recall@1/2/4/8, self-retrieval",
                    "faiss IndexFlatIP + numpy", "{:,} x {}".format(*size[:2]), size))
    for size in s["log_ratio"] if "log_ratio" in rows else ():
        out.append(("log_ratio", "Log-ratio, every sample an anchor, fwd+bwd",
                    "authors' formula per anchor (torch)", "B={} D={}".format(*size), size))
    for size in s["index"] if "index" in rows else ():
        out.append(("index", "exact index search, k=10",
                    "faiss IndexFlatIP", "{:,} x 128, {} queries".format(*size[:2]), size))
    if "train_step" in rows:
        size = s["train_step"]
        out.append(("train_step", "ResNet-50 + Proxy Anchor train step",
                    "PyTorch + PML", "B={} {}px C={}".format(*size[:3]), size))
    return out


def run_side(row, side, size, mode, workdir, case_id, timeout):
    spec = dict(row=row, side=side, size=size, mode=mode, workdir=workdir,
                case=case_id)
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                           json.dumps(spec)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": tail[:200]}
    return json.loads(lines[-1])


def run_inline(row, side, size, mode, workdir, case_id):
    """``run_side`` in this process (``--inline``: the tests; the memory
    figures then include whatever earlier rows left allocated)."""
    import contextlib
    import io
    spec = dict(row=row, side=side, size=size, mode=mode, workdir=workdir,
                case=case_id)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            child(spec)
    except Exception as e:  # noqa: BLE001 (the table says which row failed)
        return {"error": f"{type(e).__name__}: {e}"[:200]}
    return json.loads(out.getvalue().strip().splitlines()[-1])


def child(spec):
    row, side, size, mode = spec["row"], spec["side"], spec["size"], spec["mode"]
    size = tuple(size)
    warmup, repeats = SIZES[mode]["warmup"], SIZES[mode]["repeats"]
    repeats = int(os.environ.get("PEERS_REPEATS", repeats))
    result_path = os.path.join(spec["workdir"], f"{spec['case']}.npz")
    weights_path = os.path.join(spec["workdir"], f"{spec['case']}.weights.npz")
    if side == "peer":
        fn = globals()[f"peer_{row}"]
        if row == "train_step":
            ms, extra, result = fn(size, warmup, repeats, weights_path)
        else:
            ms, extra, result = fn(size, warmup, repeats)
        np.savez(result_path, **result)
    else:
        # TensorFlow is imported before the baseline RSS, like the peers' libraries.
        import keras_dml  # noqa: F401
        peer = dict(np.load(result_path))
        fn = globals()[f"ours_{row}"]
        if row == "train_step":
            ms, extra = fn(size, warmup, repeats, peer, weights_path)
        else:
            ms, extra = fn(size, warmup, repeats, peer)
    print(json.dumps({"ms": ms, "extra_mb": extra}))


def fmt_time(ms):
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.1f} ms" if ms >= 10 else f"{ms:.2f} ms"


def table(results):
    """Markdown table of ``results``: (label, peer, size, row, ours, theirs)."""
    lines = ["| work | size | keras_dml | peer | peer time | ratio (ours/peer) "
             "| keras_dml extra MB | peer extra MB |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for label, peer_name, size_label, row, size, ours, theirs in results:
        cells = [label, size_label]
        if "error" in ours or "error" in theirs:
            err = ours.get("error") or theirs.get("error")
            cells += [f"failed: {err}".replace("|", "/"), peer_name, "", "", "", ""]
        elif row == "index":
            nq = size[1]
            q_ours, q_peer = nq * 1e3 / ours["ms"], nq * 1e3 / theirs["ms"]
            cells += [f"{q_ours:,.0f} q/s", peer_name, f"{q_peer:,.0f} q/s",
                      f"{q_peer / q_ours:.2f}x",
                      f"{ours['extra_mb']:.0f}", f"{theirs['extra_mb']:.0f}"]
        else:
            ratio = ours["ms"] / theirs["ms"]
            cells += [fmt_time(ours["ms"]), peer_name, fmt_time(theirs["ms"]),
                      f"{ratio:.2f}x" + (f" ({1 / ratio:.0f}x faster)" if ratio < 0.1 else ""),
                      f"{ours['extra_mb']:.0f}", f"{theirs['extra_mb']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny sizes, one repeat (smoke test)")
    parser.add_argument("--rows", default=",".join(ROWS),
                        help="comma-separated subset of " + ", ".join(ROWS))
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds per subprocess")
    parser.add_argument("--max-n", type=int, default=None,
                        help="leave out the retrieval and index rows with more "
                             "items than this (a loaded machine)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats (default: the mode's; the retrieval "
                             "and index rows take at most their own)")
    parser.add_argument("--inline", action="store_true",
                        help="run every row in this process (no per-row "
                             "memory figure; the smoke test)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = set(rows) - set(ROWS)
    if unknown:
        parser.error(f"unknown --rows {sorted(unknown)}")
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    if args.repeats:
        os.environ["PEERS_REPEATS"] = str(args.repeats)
    start = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        todo = [c for c in cases(mode, rows) if args.max_n is None
                or c[0] not in ("retrieval", "index") or c[4][0] <= args.max_n]
        for i, (row, label, peer_name, size_label, size) in enumerate(todo):
            if args.inline:
                side = lambda s: run_inline(row, s, size, mode, workdir, i)  # noqa: E731
            else:
                side = lambda s: run_side(row, s, size, mode, workdir, i, args.timeout)  # noqa: E731
            theirs = side("peer")
            ours = side("ours") if "error" not in theirs else {"error": "peer failed"}
            results.append((label, peer_name, size_label, row, size, ours, theirs))
            print(f"  {label} {size_label}: ours {ours}, peer {theirs}",
                  file=sys.stderr, flush=True)
    import torch
    print(f"keras_dml (TensorFlow) vs peers, {mode} sizes, {os.cpu_count()} CPU cores, "
          f"median of {os.environ.get('PEERS_REPEATS', SIZES[mode]['repeats'])} after {SIZES[mode]['warmup']} warm-up "
          f"(retrieval, index, train step: fewer, see SIZES), torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads)\n")
    print(table(results))
    failed = sum("error" in o or "error" in t for *_, o, t in results)
    print(f"\n{len(results)} rows, {failed} failed, "
          f"{time.perf_counter() - start:.0f} s in all")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
