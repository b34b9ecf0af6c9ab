"""Checkout shims: ``python -m apps.<name>`` runs ``keras-dml <name>``.

Not installed (the wheel holds ``keras_dml`` and the ``keras-dml`` script
only); the apps themselves live in ``keras_dml/cli``.
"""
