"""keras_dml.cli in-process: the app table, the listing, argv peeking for the
log level, and the errors a bad command line gets (the runs themselves are
in tests/apps/test_apps.py and tests/test_wheel.py)."""

import json
import logging
import os
import pathlib
import subprocess
import sys

import keras_dml as kd
from keras_dml.cli import apps, quiet
from keras_dml.cli import command as main


def test_every_app_has_its_packaged_recipe_and_is_listed(capsys):
    assert set(apps.APPS) == {"train", "fashion_mnist", "cub200", "cars196", "sop", "inshop",
                              "pose", "layout", "captions", "glyphs"}
    for name, spec in apps.APPS.items():
        recipe = kd.training.Recipe.from_flagfile(
            kd.training.recipe_path(spec.recipe, app=name))
        assert recipe.loss == spec.recipe
    assert main.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in apps.APPS)
    assert "commands:" in out and all(f"  {c} " in out for c in ("search", "index", "serve"))


SEARCH_HELP = """
import json, sys
from keras_dml.cli import command
try:
    command.main(["search", "--help"])
except SystemExit as exit_:
    code = exit_.code
print(json.dumps({"code": code, "tensorflow": "tensorflow" in sys.modules}))
"""


def test_search_help_needs_no_tensorflow_search(capsys):
    import pytest
    with pytest.raises(SystemExit) as exit_:
        main.main(["search", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--model", "--index", "--image", "--k", "--output"))
    # In a fresh process whose Keras backend does not load TensorFlow (Keras'
    # numpy backend), the help of `search` imports no TensorFlow.
    repo = pathlib.Path(__file__).resolve().parents[2]  # tests/cli/ -> the checkout
    env = {**os.environ, "KERAS_BACKEND": "numpy",
           "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", SEARCH_HELP], capture_output=True, text=True,
                          env=env, cwd=repo, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"code": 0, "tensorflow": False}


def test_bad_command_lines_say_why(capsys):
    assert main.main(["nope"]) == 2
    assert "unknown app 'nope'" in capsys.readouterr().err
    assert main.run_app("cub200", ["--recipe=missing"]) == 2
    err = capsys.readouterr().err
    assert "no flagfile or packaged recipe 'missing'" in err and "proxy_anchor" in err
    assert main.main([]) == 2


def test_argv_peeks():
    assert quiet.argv_verbosity(["--verbosity=1"]) == 1
    assert quiet.argv_verbosity(["-v", "2", "--x"]) == 2
    assert quiet.argv_verbosity(["--v=-1"]) == -1
    assert quiet.argv_verbosity(["-v"]) == 0 and quiet.argv_verbosity(["-v", "tests"]) == 0
    assert main.argv_value(["--recipe", "triplet", "--x"], "recipe") == "triplet"
    assert main.argv_value(["--recipe=a", "--recipe=b"], "recipe") == "b"
    assert main.argv_value(["--recipes=a"], "recipe") is None


def test_tensorflow_info_records_are_dropped_but_not_ours():
    drop = quiet.DropTensorFlowInfo(quiet.package_dirs())
    tf_file = quiet.package_dirs(["tensorflow"])[0] + "python/saved_model/builder_impl.py"

    def record(path, level=logging.INFO):
        return logging.LogRecord("absl", level, path, 1, "m", (), None)

    assert not drop.filter(record(tf_file))
    assert drop.filter(record(tf_file, logging.WARNING))
    assert drop.filter(record(kd.training.runner.__file__))
