"""bench/device.py, the JAX/PyTorch accelerator benchmark, at its tiniest
sizes with TensorFlow blocked: every row under KERAS_BACKEND=jax, the loss
rows under KERAS_BACKEND=torch; each run prints the one table, every row
timed.

Not marked ``backends``: it launches its own JAX process, so it runs in the
TensorFlow pass of the suite.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from references import unavailable

REPO = Path(__file__).resolve().parents[1]

# Blocks TensorFlow (an import of it raises), then runs the script as __main__.
RUNNER = """
import runpy, sys
sys.modules["tensorflow"] = None
sys.argv = ["bench/device.py", *sys.argv[1:]]
runpy.run_path("bench/device.py", run_name="__main__")
"""

ROWS = {
    "Proxy Anchor fwd+bwd (keras_dml)": ("jax (jit)", ["B=8 D=16 C=4", "B=8 D=16 C=50"]),
    "Log-ratio fwd+bwd (keras_dml)": ("jax (jit)", ["B=8 D=16", "B=16 D=16"]),
    "Proxy Anchor fwd+bwd (pytorch-metric-learning)": (
        "torch (eager)", ["B=8 D=16 C=4", "B=8 D=16 C=50"]),
    "ResNet-50 + EmbeddingHead + Proxies + Proxy Anchor train step": (
        "jax (jit)", ["B=2 32px C=4"]),
    # bench/peers.py's rows
    "multi-similarity fwd+bwd (keras_dml)": ("jax (jit)", ["B=12 D=16"]),
    "multi-similarity fwd+bwd (pytorch-metric-learning)": ("torch (eager)", ["B=12 D=16"]),
    "Log-ratio per anchor, the authors' formula (torch)": ("torch (eager)", ["B=8 D=16"]),
    "Recall@1/2/4/8 self-retrieval (keras_dml)": ("jax (jit)", ["300 x 16"]),
    "exact index search, k=10 (keras_dml)": ("jax (jit)", ["2,000 x 128"]),
    "ResNet-50 + Proxy Anchor train step (PyTorch + PML)": ("torch (eager)", ["B=2 32px C=4"]),
}
JAX_LOSS_ROWS = ("Proxy Anchor fwd+bwd (keras_dml)", "Log-ratio fwd+bwd (keras_dml)",
                 "Proxy Anchor fwd+bwd (pytorch-metric-learning)")
QUERIES = {"2,000 x 128": 20}     # bench/device.py's smoke index: 20 queries


def run_bench(*args, backend="jax"):
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def table_rows(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def needs(*modules):
    # Looked up, not imported: this process is the TensorFlow pass.
    for module in modules:
        if importlib.util.find_spec(module) is None:
            unavailable(f"{module} is missing (bench/device.py needs it); "
                        "scripts/setup.sh --test installs it.")


def check_table(proc, expected):
    """The one table: header, ``expected`` rows {row: (backend, [sizes])}, each
    with a time and the rate it implies."""
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-6000:])
    rows = table_rows(proc.stdout)
    assert rows[0] == ["row", "backend", "device", "dtype", "size", "ms/step",
                       "images/s or steps/s", "peak memory"]
    body = rows[1:]
    found = {}
    for row, backend, device, dtype, size, ms, rate, peak in body:
        found.setdefault(row, []).append(size)
        assert backend == expected[row][0], (row, backend)
        assert device == "cpu" and dtype == "float32", (row, device, dtype)
        assert float(ms) > 0, (row, ms)
        unit = ("images/s" if "train step" in row
                else "queries/s" if "index search" in row else "steps/s")
        assert re.fullmatch(rf"[\d,]+\.\d {unit}", rate), (row, rate)
        # The rate is the ms cell's: B images (or 1 step, or the queries)
        # per ms / 1000, within the rounding of both cells.
        per_step = (int(re.match(r"B=(\d+)", size).group(1))
                    if "train step" in row else QUERIES.get(size, 1)
                    if "index search" in row else 1)
        implied = per_step * 1e3 / float(ms)
        half_unit = 0.5 * 10.0 ** -len(ms.partition(".")[2])
        assert abs(float(rate.split()[0].replace(",", "")) - implied) \
            <= 0.05 + implied * half_unit / float(ms) * 1.01, (row, ms, rate)
        assert peak == "n/a", (row, peak)     # a CPU reports no peak memory
    assert found == {row: sizes for row, (_, sizes) in expected.items()}
    assert "tensorflow imported: no" in proc.stdout


def test_loss_rows_under_jax_without_tensorflow():
    # The train step row runs in the PyTorch test: compiling ResNet-50's
    # gradient under XLA:CPU costs ~35 s of CPU (the JAX train step itself is
    # tested in tests/models/test_backend_training.py).
    needs("jax", "torch", "pytorch_metric_learning")
    expected = {row: sizes for row, sizes in ROWS.items() if row in JAX_LOSS_ROWS}
    check_table(run_bench("--quick", "--smoke", "--strict",
                          "--rows=proxy_anchor,log_ratio,pml"), expected)


def test_all_rows_under_torch_without_tensorflow():
    needs("torch", "pytorch_metric_learning")
    expected = {row: ("torch (eager)", sizes) for row, (_, sizes) in ROWS.items()}
    check_table(run_bench("--quick", "--smoke", "--strict", backend="torch"), expected)


def test_refuses_the_tensorflow_backend():
    proc = run_bench("--quick", "--smoke", backend="tensorflow")
    assert proc.returncode != 0
    assert "set KERAS_BACKEND=jax or KERAS_BACKEND=torch" in proc.stderr
