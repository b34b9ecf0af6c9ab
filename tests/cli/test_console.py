"""What a person sees on the console of ``keras-dml`` (issue 17.5, 17.7,
17.8): ``APP --help`` lists the app's own flags with the recipe's values,
expected errors are one line naming the flag or file with exit status 2
(``--verbosity=1``: the traceback), and TensorFlow's load noise (absl INFO
lines, the CPU banner, cuInit) stays off stderr. Real subprocesses, no
TF_CPP_MIN_LOG_LEVEL set. The noise of a whole training run is checked on
the fashion_mnist run of tests/apps/test_apps.py.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]  # tests/cli/ -> the checkout
# What TensorFlow prints unless the command line quiets it.
NOISE = ("cuInit", "cudart_stub", "All log messages before absl", "I0000",
         "This TensorFlow binary is optimized", "shuffle=True")


def keras_dml(*args, cwd=REPO, module="keras_dml"):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def quiet(proc):
    noisy = [line for line in proc.stderr.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, proc.stderr[-3000:]


def test_app_help_lists_its_own_flags_with_the_recipe_defaults():
    proc = keras_dml("--help", module="apps.fashion_mnist")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "Try --helpfull" not in out
    # Recipe flags with the packaged recipe's values, run flags, the app's data flags.
    for needle in ("--loss", "--epochs", "(default: '3')", "--embedding_dim",
                   "(default: 'efficientnet_lite0')", "--output_dir", "--[no]resume",
                   "--fashion_mnist_dir", "--data_dir", "--helpfull"):
        assert needle in out, (needle, out)
    # absl's and TPU's flags are --helpfull's business.
    assert "  --verbosity:" not in out and "--tpu" not in out, out
    quiet(proc)


def test_missing_data_is_one_line_naming_the_flag_and_exit_2(tmp_path):
    # Issue 17.7: a 12-frame traceback, then a message naming download=True.
    proc = keras_dml("cub200", "--data_dir=/nonexistent", f"--output_dir={tmp_path / 'o'}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) <= 2, proc.stderr
    assert lines[0].startswith("keras-dml cub200: error:"), lines
    assert "/nonexistent" in proc.stderr and "--download" in proc.stderr
    assert "download=True" not in proc.stderr and "Traceback" not in proc.stderr
    verbose = keras_dml("cub200", "--data_dir=/nonexistent", "--verbosity=1",
                        f"--output_dir={tmp_path / 'o'}")
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr


def test_fashion_mnist_data_dir_is_honoured_or_refused(tmp_path):
    # Issue 17.5: --data_dir=/my/folder trained on the Debian copy instead.
    folder = tmp_path / "pngs"
    folder.mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(folder / "000.png")
    proc = keras_dml("fashion_mnist", f"--data_dir={folder}",
                     f"--output_dir={tmp_path / 'o'}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"--data_dir={folder}" in lines[0], proc.stderr
    assert "train-images-idx3-ubyte.gz" in lines[0] and "--source=tfds" in lines[0]
    assert not (tmp_path / "o").exists()
    quiet(proc)
