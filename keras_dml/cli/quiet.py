"""TensorFlow's INFO logs stay out of an app's console unless asked for.

TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL`` once, when it loads, so the C++
level (XLA's ``service.cc`` lines, ...) is set here, before Keras imports
TensorFlow, and only in a command-line process (``keras-dml``, ``python -m
apps.<name>``, ``python -m keras_dml``): a library user's process is left
alone. absl's ``--verbosity`` is not parsed yet at that point, so it is
read from ``sys.argv``. The Python-side ``tensorflow`` logger
(``signature_serialization.py``, "Assets written to") is set after flag
parsing by ``after_flags``. Stdlib only.
"""

import logging
import os
import sys

# TF_CPP_MIN_LOG_LEVEL: 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR.
HIDE_INFO = "1"
_VERBOSITY_FLAGS = ("--verbosity", "-v", "--v")


def command_line_process():
    """True in a keras-dml command-line process."""
    prog = os.path.basename(sys.argv[0]) if sys.argv else ""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    main_name = getattr(spec, "name", "") or ""
    # "-m": keras_dml is being imported while ``python -m keras_dml`` is located.
    return (prog in ("keras-dml", "-m")
            or main_name.startswith(("apps.", "keras_dml")))


def argv_verbosity(argv=None):
    """absl's --verbosity / -v value in ``argv`` (0 when absent or unreadable)."""
    argv = sys.argv[1:] if argv is None else argv
    value = None
    for i, arg in enumerate(argv):
        name, eq, rest = arg.partition("=")
        if name in _VERBOSITY_FLAGS:
            value = rest if eq else (argv[i + 1] if i + 1 < len(argv) else None)
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def before_tensorflow():
    """Hide TensorFlow's C++ INFO lines in a command-line process, unless
    ``--verbosity`` >= 1 or TF_CPP_MIN_LOG_LEVEL is already set."""
    if command_line_process() and argv_verbosity() < 1:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", HIDE_INFO)


def after_flags(verbosity):
    """The ``tensorflow`` Python logger at WARNING unless ``verbosity`` >= 1."""
    logging.getLogger("tensorflow").setLevel(
        logging.WARNING if verbosity < 1 else logging.DEBUG)
