"""The run directory: one name for every file a run writes, and its I/O.

    paths = RunPaths("runs/demo")
    paths.metrics, paths.history, paths.best_weights, paths.index, ...

A run directory holds::

    recipe.cfg          the recipe that ran, as a flagfile
    history.csv         per-epoch logs (appended across resumes)
    best.weights.h5     the checkpoint selected on the validation metric
    run_time.json       wall time summed over the run's processes
    backup/             BackupAndRestore state while a run is unfinished
    logs/               TensorBoard (logs/projector: the Embedding Projector run)
    metrics.json        the test report
    recall_curve.png    validation metrics per epoch
    retrievals.png      test queries and their nearest neighbours
    index/              the test gallery as a kd.retrieval.Index (class labels)
    saved_model/        images -> embeddings (TensorFlow backend)
    final.weights.h5    the selected weights when the SavedModel is skipped
"""

import csv
import dataclasses
import json
import os
from typing import Dict, List, Union


class OutputDirError(RuntimeError):
    """output_dir holds an interrupted run and resume was not asked for."""


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """Every file and directory of the run directory ``root``."""

    root: str

    def __post_init__(self):
        object.__setattr__(self, "root", os.fspath(self.root))

    def _join(self, *names: str) -> str:
        return os.path.join(self.root, *names)

    @property
    def recipe(self) -> str:
        return self._join("recipe.cfg")

    @property
    def history(self) -> str:
        return self._join("history.csv")

    @property
    def best_weights(self) -> str:
        return self._join("best.weights.h5")

    @property
    def final_weights(self) -> str:
        return self._join("final.weights.h5")

    @property
    def run_time(self) -> str:
        return self._join("run_time.json")

    @property
    def backup(self) -> str:
        return self._join("backup")

    @property
    def logs(self) -> str:
        return self._join("logs")

    @property
    def projector(self) -> str:
        return self._join("logs", "projector")

    @property
    def metrics(self) -> str:
        return self._join("metrics.json")

    @property
    def recall_curve(self) -> str:
        return self._join("recall_curve.png")

    @property
    def retrievals(self) -> str:
        return self._join("retrievals.png")

    @property
    def index(self) -> str:
        return self._join("index")

    @property
    def saved_model(self) -> str:
        return self._join("saved_model")

    @property
    def interrupted(self) -> bool:
        """An unfinished run is here (its ``backup/`` exists)."""
        return os.path.isdir(self.backup)

    def prepare(self, resume: bool) -> bool:
        """Create the directory; refuse to clobber an interrupted run unless
        ``resume``. Returns whether an interrupted run is continued."""
        interrupted = self.interrupted
        if interrupted and not resume:
            raise OutputDirError(
                f"{self.root} holds an interrupted run ({self.backup}); pass --resume "
                "(resume=True) to continue it, or choose another output directory.")
        os.makedirs(self.root, exist_ok=True)
        return interrupted

    def read_history(self) -> Dict[str, List[float]]:
        """Per-epoch logs of the whole run (also across resumes), from history.csv."""
        if not os.path.exists(self.history):
            return {}
        with open(self.history) as f:
            rows = list(csv.DictReader(f))
        hist: Dict[str, List[float]] = {}
        for row in rows:
            for key, value in row.items():
                if key == "epoch" or value in ("", None, "NA"):  # NA: val_* without validation
                    continue
                hist.setdefault(key, []).append(float(value))
        return hist


def write_json(path: Union[str, os.PathLike], obj) -> None:
    """``obj`` as indented JSON, replacing ``path`` atomically."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def write_text(path: Union[str, os.PathLike], text: str) -> None:
    """``text`` into ``path``, replacing it atomically."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)

