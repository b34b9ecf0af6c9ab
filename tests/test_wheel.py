"""The installed package, as a user gets it: build the wheel, install it
(not editable) into a fresh virtualenv, and run ``keras-dml`` outside the
checkout.

Offline and quick: the venv has no pip and no packages of its own; a .pth
file points at a view of this interpreter's site-packages without any
keras_dml (so the installed copy is the only one), and the wheel is
installed with ``--no-deps --no-index`` by this interpreter's pip
(``pip --python``). The demo run uses the fixture Fashion-MNIST files and a
tiny model.
"""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import app_fixtures
import keras_dml as kd

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 600
pytestmark = pytest.mark.wheel


def sh(argv, cwd, env=None, check=True):
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)
    if check:
        assert proc.returncode == 0, (argv, proc.stdout[-3000:], proc.stderr[-6000:])
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    # Build from a copy of the sources: an in-tree build leaves build/ and
    # *.egg-info in the checkout.
    src = root / "src"
    src.mkdir()
    (src / "setup.py").write_bytes((REPO / "setup.py").read_bytes())
    import shutil
    shutil.copytree(REPO / "keras_dml", src / "keras_dml",
                    ignore=shutil.ignore_patterns("__pycache__"))
    sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--no-index", "-q", "-w", root / "dist", src], cwd=root)
    wheel, = (root / "dist").glob("keras_dml-*.whl")

    env_dir = root / "venv"
    sh([sys.executable, "-m", "venv", "--without-pip", env_dir], cwd=root)
    python = env_dir / "bin" / "python"
    purelib = Path(sh([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                       "['purelib'])"], cwd=root).stdout.strip())
    # This interpreter's packages, minus keras_dml and its editable hooks.
    deps = root / "deps"
    deps.mkdir()
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        name = entry.name.lower()
        if name.startswith(("keras_dml", "__editable__", "apps")) or name.endswith(".pth"):
            continue
        (deps / entry.name).symlink_to(entry)
    (purelib / "deps.pth").write_text(f"{deps}\n")
    sh([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
        "--no-index", "--no-cache-dir", wheel], cwd=root)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL", "VIRTUAL_ENV")}
    env.update(CUDA_VISIBLE_DEVICES="-1", PATH=f"{env_dir / 'bin'}:{env.get('PATH', '')}")
    outside = root / "elsewhere"
    outside.mkdir()
    return dict(root=root, wheel=wheel, python=python, bin=env_dir / "bin", env=env,
                cwd=outside)


def test_wheel_holds_keras_dml_its_recipes_and_the_console_script(venv):
    with zipfile.ZipFile(venv["wheel"]) as z:
        names = z.namelist()
        entry_points = next(z.read(n).decode() for n in names
                            if n.endswith("entry_points.txt"))
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"keras_dml"}, tops
    cfgs = {Path(n).stem for n in names if n.startswith("keras_dml/flags/")}
    assert cfgs == set(kd.training.packaged_recipes())
    assert "keras-dml = keras_dml.cli:main" in entry_points


def test_installed_package_outside_the_checkout(venv):
    py, env, cwd = venv["python"], venv["env"], venv["cwd"]
    where = sh([py, "-c", "import keras_dml, sys; print(keras_dml.__file__)"], cwd, env)
    assert where.stdout.strip().startswith(str(venv["root"] / "venv")), where.stdout
    no_apps = sh([py, "-c", "import apps"], cwd, env, check=False)
    assert no_apps.returncode != 0 and "No module named 'apps'" in no_apps.stderr

    listing = sh([venv["bin"] / "keras-dml", "--help"], cwd, env)
    for name in ("fashion_mnist", "cub200", "cars196", "sop", "inshop", "pose", "layout",
                 "captions", "search"):
        assert f"  {name} " in listing.stdout, listing.stdout
    search_help = sh([venv["bin"] / "keras-dml", "search", "--help"], cwd, env)
    assert "usage: keras-dml search" in search_help.stdout
    assert all(f in search_help.stdout for f in ("--model", "--index", "--image", "--k"))

    helpfull = sh([venv["bin"] / "keras-dml", "cub200", "--recipe=proxy_anchor",
                   "--helpfull"], cwd, env)
    text = " ".join(helpfull.stdout.split())
    recipe = kd.training.Recipe.from_flagfile("cub200_proxy_anchor")
    for flag, default in (("lr", "0.0001"), ("freeze_bn", "true"), ("lr_decay_epochs", "10"),
                          ("backbone", "bn_inception"), ("embedding_dim", "512"),
                          ("batch_size", "180"), ("recipe", "proxy_anchor")):
        assert f"{flag}:" in text and f"(default: '{default}')" in text, flag
    assert recipe.lr == 1e-4 and recipe.freeze_bn and recipe.lr_decay_epochs == (10,)
    triplet = " ".join(sh([venv["bin"] / "keras-dml", "cub200", "--recipe=triplet",
                           "--helpfull"], cwd, env).stdout.split())
    assert "(default: 'triplet')" in triplet and "m_per_class:" in triplet


def test_installed_demo_writes_its_reports_with_a_quiet_console(venv, tmp_path):
    data = tmp_path / "fashion"
    app_fixtures.write_fashion_mnist(str(data))
    out = tmp_path / "demo"
    proc = sh([venv["bin"] / "keras-dml", "fashion_mnist", f"--output_dir={out}",
               "--epochs=1", f"--fashion_mnist_dir={data}", "--source=files",
               "--backbone=small_cnn", "--weights=none", "--image_size=32",
               "--embedding_dim=16", "--batch_size=16", "--steps_per_epoch=2",
               "--warmup_epochs=0"], venv["cwd"], venv["env"])
    for name in ("metrics.json", "recall_curve.png", "retrievals.png", "history.csv",
                 "saved_model/saved_model.pb", "index/manifest.json",
                 "logs/projector/projector_config.pbtxt"):
        assert (out / name).exists(), name
    console = proc.stdout + proc.stderr
    assert "1/1" in proc.stdout or "Epoch 1/1" in proc.stdout, proc.stdout[-2000:]
    assert "test metrics:" in console
    # Nor TensorFlow's load noise, cuInit, or Keras' shuffle warning (issue 17.8).
    for noise in ("service.cc", "signature_serialization.py", "Assets written to",
                  "cudart_stub", "cuInit", "All log messages before absl",
                  "This TensorFlow binary is optimized", "shuffle=True"):
        assert noise not in console, (noise, console[-4000:])
