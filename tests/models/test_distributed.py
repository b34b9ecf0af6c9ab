"""MetricModel under MirroredStrategy and MultiWorkerMirroredStrategy equals
one device on the global batch.

TensorFlow's device layout is fixed when it initialises, so each run is a
subprocess (tests/distributed_worker.py): one that splits the CPU into two
logical devices, and two worker processes talking over 127.0.0.1.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

# The worker sits in tests/ with the other helpers; this file in tests/models/.
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(TESTS, "distributed_worker.py")
REPO = os.path.dirname(TESTS)


def _env():
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.pop("TF_CONFIG", None)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (REPO, env.get("PYTHONPATH")) if p)
    return env


def _tail(text, n=4000):
    return text[-n:] if text else ""


def _finish(proc, timeout=900):
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start every subprocess at once (TensorFlow start-up and tracing are
    mostly single-threaded, so they overlap well); tests wait for theirs."""
    tmp = tmp_path_factory.mktemp("distributed")
    popen = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                 env=_env())
    out = tmp / "mirrored.json"
    started = {"mirrored": (subprocess.Popen(
        [sys.executable, WORKER, "mirrored", str(out)], **popen), out)}
    ports = ",".join(str(p) for p in _free_ports(2))
    workers = [subprocess.Popen(
        [sys.executable, WORKER, "multiworker", str(i), ports, str(tmp)],
        **popen) for i in range(2)]
    started["multiworker"] = (workers, tmp)
    yield started
    for proc in [started["mirrored"][0]] + workers:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_mirrored_two_devices_equals_one_device(runs):
    proc, out = runs["mirrored"]
    output = _finish(proc)
    assert proc.returncode == 0, _tail(output)
    results = json.loads(out.read_text())
    for name in ("proxy_anchor", "triplet", "multi_similarity", "log_ratio",
                 "proxy_anchor_sync_bn", "multi_similarity_xbm"):
        assert name in results, f"case {name} did not run: {sorted(results)}"
        r = results[name]
        assert r["replicas"] == 2
        # Training moved the weights, so equality is not trivial...
        assert r["moved"] > 1e-3, (name, r)
        # ...and both runs end with the same weights and optimiser state
        # (every group's slots and step counters, BN statistics).
        assert r["max_abs_diff"] < 1e-5, (name, r)
        np.testing.assert_allclose(r["dist_loss"], r["single_loss"],
                                   rtol=1e-5, err_msg=name)
    # Control: the same run where each replica computes the loss on its own
    # half batch (what plain Keras does) ends somewhere else.
    control = results["proxy_anchor_no_gather"]
    assert control["max_abs_diff"] > 1e-2, control


def _free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multi_worker_two_processes_equal_single_process(runs):
    procs, tmp_path = runs["multiworker"]
    outputs = [_finish(proc) for proc in procs]
    for i, proc in enumerate(procs):
        assert proc.returncode == 0, f"worker {i}:\n" + _tail(outputs[i])
    w0 = np.load(tmp_path / "worker0.npz")
    w1 = np.load(tmp_path / "worker1.npz")
    single = np.load(tmp_path / "single.npz")
    assert int(w0["__replicas__"]) == 2 and int(w1["__replicas__"]) == 2
    keys = [k for k in single.files]
    assert keys and sorted(keys) == sorted(k for k in w0.files if k != "__replicas__")
    for k in keys:
        np.testing.assert_array_equal(w0[k], w1[k], err_msg=k)
    diffs = {k: float(np.max(np.abs(w0[k] - single[k]))) if single[k].size else 0.0
             for k in keys}
    assert max(diffs.values()) < 1e-5, diffs
    initial = np.load(tmp_path / "initial.npz")
    moved = max(float(np.max(np.abs(single[k] - initial[k])))
                for k in initial.files)
    assert moved > 1e-3, moved
