"""bench/peers.py, keras_dml against its peers, at its tiniest sizes, in this
process (``--tiny --inline``): the one table has every row, each with both
sides' figures, and no row failed its same-result check. Times are not
asserted (the machine is shared); that the two sides agree is, by the bench
itself, before it times a row.

Not marked ``backends``: keras_dml's side of the bench is TensorFlow's.
"""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from references import reference

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def peers():
    for module in ("torch", "pytorch_metric_learning", "faiss"):
        reference(module, "bench/peers.py's peers")
    spec = importlib.util.spec_from_file_location("bench_peers", REPO / "bench" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_peers"] = module
    spec.loader.exec_module(module)
    return module


def table_rows(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


LIGHT = ("proxy_anchor", "multi_similarity", "retrieval", "log_ratio", "index")


def check_table(peers, capsys, rows_arg, labels):
    status = peers.main(["--tiny", "--inline", "--rows", ",".join(rows_arg)])
    out = capsys.readouterr().out
    assert status == 0, out
    rows = table_rows(out)
    assert rows[0] == ["work", "size", "keras_dml", "peer", "peer time",
                       "ratio (ours/peer)", "keras_dml extra MB", "peer extra MB"]
    body = rows[1:]
    expected = [(label, size_label) for _, label, _, size_label, _
                in peers.cases("tiny", rows_arg)]
    assert [(r[0], r[1]) for r in body] == expected
    assert {label for label, _ in expected} == labels
    for work, _size, ours, _peer, theirs, ratio, ours_mb, peer_mb in body:
        assert "failed" not in ours, (work, ours)
        unit = r"[\d,]+ q/s" if work.startswith("exact index") else r"[\d.]+ (ms|s)"
        assert re.fullmatch(unit, ours) and re.fullmatch(unit, theirs), (work, ours, theirs)
        assert re.match(r"\d+\.\d\dx", ratio), (work, ratio)
        float(ours_mb), float(peer_mb)
    assert re.search(rf"{len(expected)} rows, 0 failed", out)


def test_tiny_run_has_every_loss_and_search_row_checked_and_timed(peers, capsys):
    check_table(peers, capsys, LIGHT, {
        "Proxy Anchor fwd+bwd", "multi-similarity (+ miner) fwd+bwd",
        "Recall@1/2/4/8, self-retrieval", "Log-ratio, every sample an anchor, fwd+bwd",
        "exact index search, k=10"})


def test_tiny_train_step_row_same_first_loss_then_timed(peers, capsys):
    """The ResNet-50 row: the torch network's weights copied into the Keras
    model give the same first loss (checked by the bench), then both time."""
    assert set(peers.ROWS) == set(LIGHT) | {"train_step"}
    check_table(peers, capsys, ("train_step",), {"ResNet-50 + Proxy Anchor train step"})


def test_a_disagreeing_side_fails_its_row(peers):
    """The same-result check is real: a peer result that differs is refused
    before anything is timed."""
    emb, labels, proxies = peers.proxy_inputs(12, 8, 5)
    ms, extra, result = peers.peer_proxy_anchor((12, 8, 5), 1, 1)
    peers.ours_proxy_anchor((12, 8, 5), 1, 1, result)        # agrees
    result["value"] = result["value"] * 1.01
    with pytest.raises(AssertionError, match="Proxy Anchor loss"):
        peers.ours_proxy_anchor((12, 8, 5), 1, 1, result)
