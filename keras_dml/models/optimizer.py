"""Moved to ``keras_dml.optimizers`` (``MetricOptimizer`` is now
``ParameterGroupOptimizer``).

Kept so that configs saved before the move, which name this module, still
deserialise; new code imports ``keras_dml.optimizers``.
"""

from keras_dml.optimizers import (  # noqa: F401
    GROUPS, ParameterGroupOptimizer, ScaledSchedule, step_decay)

MetricOptimizer = ParameterGroupOptimizer
