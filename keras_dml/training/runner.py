"""One experiment runner for class-label and continuous-label retrieval.

    result = kd.training.run(recipe, data, "runs/cub")       # -> RunResult

``run`` reads prepare -> build -> fit -> evaluate -> report -> export:

1. prepare (``training.prepare``): a random subset of the training data
   (``max_train_examples``), then a validation hold-out used only to pick
   the checkpoint (whole classes, or random examples; continuous labels:
   examples); the test split is looked at once, at the end. K is checked
   against the split sizes before the run directory is created;
2. build (``training.build``): backbone -> embedding head (-> proxies when
   the loss takes them) and the recipe's optimiser (lr schedule, proxy lr
   multiplier, warm-up, clipping, frozen BatchNorm);
3. fit with progress bars, TensorBoard, ``history.csv``, validation metrics,
   best-checkpoint saving and ``BackupAndRestore`` (for ``resume=True``);
4. evaluate (``training.report``): restore the best weights and embed the
   test split (or query/gallery) once;
5. report: ``metrics.json``, ``recall_curve.png``, ``retrievals.png``; class
   labels: the test gallery as ``index/`` (a ``kd.retrieval.Index`` that
   ``keras-dml search`` queries) and the Projector run ``logs/projector``;
6. export ``saved_model/`` (``export=False`` skips it).

Every file of the run directory is named by ``training.rundir.RunPaths``.
What the labels need beyond the recipe (label distance, image transforms)
is a :class:`~keras_dml.training.tasks.Task`, looked up from
``data.label_type`` by default.
"""

import dataclasses
import os
import shutil
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Union

import keras
from absl import logging

from keras_dml import _backend
from keras_dml.training import build, prepare, report
from keras_dml.training.clock import RunClock
from keras_dml.training.recipe import Recipe
from keras_dml.training.rundir import RunPaths, write_text
from keras_dml.training.tasks import Task, task_for

if TYPE_CHECKING:    # kd.data imports TensorFlow; the runner needs it only at run time
    from keras_dml.data.core import RetrievalData


@dataclasses.dataclass
class RunResult:
    """What a run produced.

    Attributes:
      metrics: the ``metrics.json`` report (test metrics and run facts).
      history: per-epoch logs of the whole run (also across resumes).
      output_dir: the run directory.
      paths: ``{"metrics", "history", "recipe", "logs", "best_weights",
        "recall_curve", "retrievals", "index", "projector", "saved_model"}``
        of what was written ("projector": its projector_config.pbtxt;
        "final_weights" instead of "saved_model" off TensorFlow).
      model: the trained ``MetricModel`` with the selected weights.
    """

    metrics: dict
    history: Dict[str, List[float]]
    output_dir: str
    paths: Dict[str, str]
    model: object = None


def run(recipe: Recipe, data: "RetrievalData", output_dir: Union[str, os.PathLike], *,
        task: Optional[Task] = None, resume: bool = False, overwrite: bool = False,
        export: bool = True, index: bool = True, verbose: int = 1,
        callbacks: Iterable[keras.callbacks.Callback] = ()) -> RunResult:
    """Train, select, evaluate, report and export one recipe on ``data``.

    Args:
      recipe: a :class:`Recipe`.
      data: a ``kd.data.RetrievalData`` (train plus test, or query/gallery).
      output_dir: the run directory (created; an interrupted run in it is
        refused with ``OutputDirError`` unless ``resume``, a finished one
        unless ``overwrite``).
      task: a :class:`Task`; default ``task_for(data)``.
      resume: continue an interrupted run in ``output_dir``.
      overwrite: replace the run in ``output_dir`` (its files are deleted
        first, so two runs' TensorBoard events and reports never mix).
      export: write ``saved_model/`` (images -> embeddings). TensorFlow
        backend only: under JAX / PyTorch the run logs why it skips the
        export and writes ``final.weights.h5`` instead.
      index: class labels: write ``index/``, the test gallery as a
        ``kd.retrieval.Index`` (the Projector run is written either way).
      verbose: Keras verbosity (1: progress bars, 0: silent).
      callbacks: extra Keras callbacks, called after the runner's own.

    Returns:
      :class:`RunResult`.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"run takes a kd.training.Recipe; got {type(recipe).__name__}.")
    task = task or task_for(data)
    loss = build.build_loss(recipe, task)
    keras.utils.set_random_seed(recipe.seed)
    sets = prepare.split_data(recipe, data, task)       # refuses bad K before any file
    paths = RunPaths(os.fspath(output_dir))
    clock = RunClock(paths.run_time, continuing=paths.prepare(resume, overwrite))
    write_text(paths.recipe, recipe.to_flagfile())
    try:
        pipes = prepare.pipelines(recipe, data, task, loss, sets)
        model = build.build_model(recipe, loss, sets.num_classes,
                                  preprocessing=pipes.normalization,
                                  eval_transform=pipes.eval_transform)
        build.compile_model(model, recipe, loss, pipes.steps_per_epoch)
        val_cb = build.validation_callback(
            recipe, task, None if sets.val is None else pipes.eval(sets.val))
        model.fit(pipes.train, epochs=recipe.epochs, verbose=verbose,
                  steps_per_epoch=recipe.steps_per_epoch,
                  callbacks=build.standard_callbacks(paths, val_cb, resume) +
                  [clock, *callbacks])
        if val_cb is not None and os.path.exists(paths.best_weights):
            model.load_weights(paths.best_weights)
        test = report.evaluate(model, recipe, task, sets, pipes.eval, verbose)
        metrics, written = report.write_report(paths, recipe, data, task, sets, test, val_cb,
                                               clock.seconds(), index=index)
        if export:
            written.update(export_model(model, paths, recipe, data, pipes))
    finally:
        clock.save()
    return RunResult(metrics=metrics, history=paths.read_history(), output_dir=paths.root,
                     paths={"metrics": paths.metrics, "history": paths.history,
                            "recipe": paths.recipe, "logs": paths.logs,
                            "best_weights": paths.best_weights, **written},
                     model=model)


def export_model(model: Any, paths: RunPaths, recipe: Recipe, data: "RetrievalData",
                 pipes: prepare.Pipelines) -> Dict[str, str]:
    """``saved_model/`` (images -> embeddings, the eval transform inside);
    off TensorFlow, ``final.weights.h5`` and a warning saying why."""
    from keras_dml import export
    if not _backend.is_tensorflow():
        # The SavedModel's serving functions trace the model with
        # TensorFlow; a JAX/PyTorch model's weights are backend-neutral.
        model.save_weights(paths.final_weights)
        logging.warning(
            "SavedModel export skipped: it needs KERAS_BACKEND=tensorflow "
            "(this run used %s). The weights are in %s: build the same "
            "recipe's model under the TensorFlow backend, load them and "
            "call kd.export.export_saved_model.", _backend.name(),
            paths.final_weights)
        return {"final_weights": paths.final_weights}
    if os.path.isdir(paths.saved_model):
        shutil.rmtree(paths.saved_model)
    # The model carries its normalisation and eval transform (build_model):
    # the export's defaults are exactly what the evaluation applied.
    export.export_saved_model(
        model, paths.saved_model, image_shape=data.train.image_shape,
        resize_to=(recipe.image_size, recipe.image_size))
    logging.info("exported %s", paths.saved_model)
    return {"saved_model": paths.saved_model}
