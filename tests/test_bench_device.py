"""bench/device.py, the JAX/PyTorch accelerator benchmark, at its tiniest
sizes under KERAS_BACKEND=jax with TensorFlow blocked: every row runs and the
one table is printed.

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
}


def run_bench(*args, backend="jax"):
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def table_rows(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_smoke_under_jax_without_tensorflow():
    # Looked up, not imported: this process is the TensorFlow pass.
    for module in ("jax", "torch", "pytorch_metric_learning"):
        if importlib.util.find_spec(module) is None:
            unavailable(f"{module} is missing (bench/device.py needs it); "
                        "scripts/setup.sh installs it.")
    proc = run_bench("--quick", "--smoke", "--strict")
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-6000:])
    rows = table_rows(proc.stdout)
    assert rows[0] == ["row", "backend", "device", "dtype", "size", "ms/step",
                       "images/s or steps/s", "peak memory"]
    body = rows[1:]
    found = {}
    for row, backend, device, dtype, size, ms, rate, peak in body:
        found.setdefault(row, []).append(size)
        assert backend == ROWS[row][0], (row, backend)
        assert device == "cpu" and dtype == "float32", (row, device, dtype)
        assert float(ms) > 0, (row, ms)
        unit = "images/s" if "train step" in row else "steps/s"
        assert re.fullmatch(rf"[\d,]+\.\d {unit}", rate), (row, rate)
        # The rate is the ms cell's: B images (or 1 step) per ms / 1000,
        # within the rounding of both cells.
        per_step = 2 if "train step" in row else 1
        expected = per_step * 1e3 / float(ms)
        half_unit = 0.5 * 10.0 ** -len(ms.partition(".")[2])
        assert abs(float(rate.split()[0].replace(",", "")) - expected) \
            <= 0.05 + expected * half_unit / float(ms) * 1.01, (row, ms, rate)
        assert peak == "n/a", (row, peak)     # a CPU reports no peak memory
    assert found == {row: sizes for row, (_, sizes) in ROWS.items()}
    assert "tensorflow imported: no" in proc.stdout


def test_refuses_the_tensorflow_backend():
    proc = run_bench("--quick", "--smoke", backend="tensorflow")
    assert proc.returncode != 0
    assert "set KERAS_BACKEND=jax or KERAS_BACKEND=torch" in proc.stderr
