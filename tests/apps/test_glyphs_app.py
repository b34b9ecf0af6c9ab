"""``keras-dml glyphs``: the glyph benchmark app end to end on three small
Debian CJK fonts (two designs plus a proportional variant: the tiny
version of the benchmark), a pair-loss recipe, and the error that names
the font packages when the fonts are missing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from references import unavailable

REPO = Path(__file__).resolve().parents[2]  # tests/apps/ -> the checkout
RUNNER = str(REPO / "tests" / "app_runner.py")
FONTS = ["/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
         "/usr/share/fonts/opentype/ipafont-gothic/ipagp.ttf",
         "/usr/share/fonts/truetype/sawarabi-gothic/sawarabi-gothic-medium.ttf",
         "/usr/share/fonts/truetype/sawarabi-mincho/sawarabi-mincho-medium.ttf"]
TINY = ["--backbone=small_cnn", "--weights=none", "--image_size=16", "--epochs=1",
        "--steps_per_epoch=2", "--embedding_dim=8", "--batch_size=12", "--eval_batch_size=64",
        "--warmup_epochs=0", "--ks=1,2", "--noexport", "--noindex", "--verbose=0"]


def run_app(tmp_path, flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1",
               KERAS_DML_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, RUNNER, "glyphs", "--", *flags], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_glyphs_app_pair_loss_recipe(tmp_path):
    missing = [p for p in FONTS if not os.path.exists(p)]
    if missing:
        unavailable(f"CJK test fonts missing: {missing} (scripts/setup.sh installs them).")
    out = tmp_path / "run"
    proc = run_app(tmp_path, ["--recipe=multi_similarity", *TINY, "--glyph_classes=40",
                              "--glyph_min_designs=3", f"--glyph_fonts={','.join(FONTS)}",
                              f"--output_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-5000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["recall@1"] <= metrics["recall@2"] <= 1 and "map@r" in metrics
    recipe = (out / "recipe.cfg").read_text().splitlines()
    # The packaged pair-loss recipe: P classes x 3 images per batch.
    assert "--loss=multi_similarity" in recipe and "--m_per_class=3" in recipe


def test_glyphs_app_without_fonts_names_the_packages(tmp_path):
    dejavu = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    if not os.path.exists(dejavu):
        pytest.skip("needs a non-CJK font file (fonts-dejavu-core) to stand for 'no CJK fonts'")
    proc = run_app(tmp_path, [*TINY, f"--glyph_fonts={dejavu}", f"--output_dir={tmp_path / 'x'}"])
    assert proc.returncode != 0
    assert "apt-get install -y fonts-ipafont-gothic" in proc.stderr
    assert "Traceback" not in proc.stderr
