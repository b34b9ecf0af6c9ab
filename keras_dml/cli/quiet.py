"""TensorFlow's INFO logs stay out of an app's console unless asked for.

TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL`` once, when it loads, so the C++
level (XLA's ``service.cc`` lines, ...) is set here, before Keras imports
TensorFlow, and only by the command line's entry points (``keras-dml``,
``python -m apps.<name>``, ``python -m keras_dml``: ``keras_dml.cli.main`` /
``run_module`` call ``before_tensorflow`` first; ``import keras_dml`` imports
no Keras, so nothing has loaded TensorFlow yet): a library user's process is
left alone. absl's ``--verbosity`` is not parsed yet at that point, so it is
read from ``sys.argv``. TensorFlow's Python INFO lines
(``signature_serialization.py``, "Assets written to") go through absl's
logger, as the app's own lines do, so ``after_flags`` filters them by the
file that logged them. Stdlib only.

A few C++ INFO lines (``port.cc``, ``cudart_stub.cc``) are written while
TensorFlow loads, before its logging reads ``TF_CPP_MIN_LOG_LEVEL``;
``before_tensorflow`` therefore imports TensorFlow with the stderr file
descriptor captured and writes back every line but those INFO lines; it
also lists the physical devices inside the capture, so that a machine
without a CUDA driver does not print ``failed call to cuInit`` at the first
op. ``--verbosity=1`` (or a preset ``TF_CPP_MIN_LOG_LEVEL``) shows it all.
"""

import logging
import os
import re
import sys
import tempfile

# TF_CPP_MIN_LOG_LEVEL: 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR.
HIDE_INFO = "1"
# Log records from these packages are TensorFlow's, not the app's.
TENSORFLOW_PACKAGES = ("tensorflow", "tensorflow_datasets", "keras", "tf_keras")


def argv_value(argv, name, *aliases):
    """The last value of ``--NAME=V`` / ``--NAME V`` in ``argv`` for NAME in
    ``(name, *aliases)`` (a one-letter NAME also as ``-N``), or None: a flag
    read before absl parses the command line."""
    flags = set()
    for n in (name, *aliases):
        flags.add(f"--{n}")
        if len(n) == 1:
            flags.add(f"-{n}")
    value = None
    for i, arg in enumerate(argv):
        flag, eq, rest = arg.partition("=")
        if flag in flags:
            value = rest if eq else (argv[i + 1] if i + 1 < len(argv) else None)
    return value


def argv_verbosity(argv=None):
    """absl's --verbosity / -v value in ``argv`` (0 when absent or unreadable)."""
    argv = sys.argv[1:] if argv is None else argv
    value = argv_value(argv, "verbosity", "v")
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


# absl C++ INFO lines ("I0000 00:00:..."), absl's note that precedes them,
# the CPU-instructions banner's second line, and the missing-CUDA-driver
# error of a machine without a GPU.
_IMPORT_NOISE = re.compile(
    r"^(I\d{4} \d\d:\d\d:|WARNING: All log messages before absl::InitializeLog"
    r"|To enable the following instructions:"
    r"|E\d{4} \d\d:\d\d:\S+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit)")


def before_tensorflow(argv=None):
    """Hide TensorFlow's C++ INFO lines and load-time noise in a command-line
    process (called by the entry points before anything imports Keras),
    unless ``--verbosity`` >= 1 in ``argv`` or TF_CPP_MIN_LOG_LEVEL is
    already set. Imports TensorFlow (when installed) with stderr filtered."""
    if argv_verbosity(argv) >= 1 or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = HIDE_INFO
    import importlib.util
    if "tensorflow" not in sys.modules and importlib.util.find_spec("tensorflow"):
        import_filtering_stderr("tensorflow", _IMPORT_NOISE, then=_list_devices)


def _list_devices(tf):
    # Initialises the platforms (cuInit) while stderr is still captured.
    tf.config.list_physical_devices()


def import_filtering_stderr(module, drop, then=None):
    """Import ``module`` (then call ``then(module)``) with file descriptor 2
    captured, then write back the captured lines that ``drop`` does not
    match (errors stay visible)."""
    import importlib
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            imported = importlib.import_module(module)
            if then is not None:
                then(imported)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(True):
                if not drop.match(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def package_dirs(names=TENSORFLOW_PACKAGES):
    """The installed directories of packages ``names`` (found, not imported)."""
    import importlib.util
    dirs = []
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        dirs += [os.path.join(d, "") for d in (spec and spec.submodule_search_locations) or ()]
    return tuple(dirs)


class DropTensorFlowInfo(logging.Filter):
    """Drops INFO (and DEBUG) records logged from files in ``dirs``."""

    def __init__(self, dirs):
        super().__init__()
        self.dirs = dirs

    def filter(self, record):
        return record.levelno >= logging.WARNING or not (
            record.pathname or "").startswith(self.dirs)


def after_flags(verbosity):
    """Unless ``verbosity`` >= 1, keep TensorFlow's Python INFO records out
    of every root handler (absl's among them); warnings still show."""
    if verbosity >= 1:
        return
    drop = DropTensorFlowInfo(package_dirs())
    # absl's root handler (TensorFlow modules that log through absl) and the
    # "tensorflow" logger itself (tf_logging; it may have its own handler).
    for target in [*logging.root.handlers, logging.getLogger("tensorflow")]:
        if not any(isinstance(f, DropTensorFlowInfo) for f in target.filters):
            target.addFilter(drop)
