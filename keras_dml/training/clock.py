"""``RunClock``: a run's wall time summed over all its processes."""

import json
import os
import time
from typing import Any, Dict, Optional

import keras

from keras_dml.training.rundir import write_json


class RunClock(keras.callbacks.Callback):
    """Wall time of a run summed over all its processes (``resume``): kept
    in ``path`` (the run's ``run_time.json``), saved every ``every`` seconds
    of training and at each epoch's end, so a killed process loses little."""

    def __init__(self, path: str, continuing: bool, every: float = 10.0) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.every = every
        self.base = 0.0
        if continuing and os.path.exists(self.path):
            with open(self.path) as f:
                self.base = float(json.load(f)["seconds"])
        self.start = self._saved = time.monotonic()

    def seconds(self) -> float:
        return self.base + time.monotonic() - self.start

    def save(self) -> None:
        write_json(self.path, {"seconds": round(self.seconds(), 3)})
        self._saved = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        if time.monotonic() - self._saved >= self.every:
            self.save()

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self.save()
