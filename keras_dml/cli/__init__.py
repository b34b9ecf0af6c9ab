"""The ``keras-dml`` command line: one app per benchmark and task.

    keras-dml --help                                   # lists the apps
    keras-dml fashion_mnist --output_dir=DIR           # the offline demo
    keras-dml cub200 --recipe=proxy_anchor --data_dir=TFDS_DIR --output_dir=DIR
    keras-dml search --model=DIR/saved_model --index=DIR/index --image=PATH --k=5

An app is flags -> ``kd.training.Recipe`` -> ``kd.training.run``: the
flags' defaults are the values of its packaged recipe (``--recipe``, a
packaged name or a flagfile path), ``--flagfile`` and the flags after it
override them. ``apps.py`` holds the table of apps -> loaders, ``command.py``
the command, ``search.py`` the ``search`` sub-command (argparse, not an app),
``quiet.py`` which TensorFlow logs a run shows.

This package imports no TensorFlow at import time; the entry points below
call ``quiet.before_tensorflow`` before anything imports Keras (``import
keras_dml`` imports no Keras), so a run's console has no TensorFlow load
noise unless ``--verbosity=1``.
"""


def main(argv=None):
    """The ``keras-dml`` console script."""
    import sys

    from keras_dml.cli import quiet
    quiet.before_tensorflow(sys.argv[1:] if argv is None else list(argv))
    from keras_dml.cli.command import main as _main
    return _main(argv)


def run_module(path):
    """Run the app of a shim ``apps/<name>.py`` (``python -m apps.<name>``) and
    exit with its status."""
    import os
    import sys

    from keras_dml.cli import quiet
    quiet.before_tensorflow(sys.argv[1:])
    from keras_dml.cli.command import run_app
    name = os.path.splitext(os.path.basename(path))[0]
    sys.exit(run_app(name, sys.argv[1:], prog=f"python -m apps.{name}"))
