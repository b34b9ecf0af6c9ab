"""``python -m keras_dml APP ...``: the keras-dml command (see ``--help``)."""

import sys

from keras_dml.cli import main

sys.exit(main())
