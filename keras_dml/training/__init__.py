"""The experiment runner: recipe -> split -> fit -> evaluate -> report -> export.

    import keras_dml as kd
    recipe = kd.training.Recipe.from_flagfile("fashion_mnist_proxy_anchor")
    result = kd.training.run(recipe, kd.data.load_fashion_mnist(), "runs/demo")
    result.metrics["recall@1"], result.history["val_recall@1"], result.paths

``Recipe`` (recipe.py) holds what a flagfile holds; ``run`` (runner.py) is
the one runner for class and continuous-label retrieval the apps call, in
six steps: ``prepare`` (splits, K checks, pipelines), ``build`` (loss,
model, optimiser, callbacks), fit, ``report`` (test metrics, plots, the
gallery) and export. ``Task`` / ``task_for`` (tasks.py) say what a data
set's labels need beyond the recipe (label distance, image transforms);
``RunPaths`` (rundir.py) names every file of a run directory; ``gallery``
writes a run's test gallery as ``index/`` and as the Embedding Projector run
``logs/projector``.
"""

from keras_dml.training import gallery  # noqa: F401,E402
from keras_dml.training.recipe import (  # noqa: F401
    Recipe,
    RecipeError,
    packaged_recipes,
    parse_flagfile,
    recipe_path,
)
from keras_dml.training.rundir import OutputDirError, RunPaths  # noqa: F401
from keras_dml.training.runner import RunResult, run  # noqa: F401
from keras_dml.training.tasks import TASKS, Task, task_for  # noqa: F401

__all__ = ["OutputDirError", "Recipe", "RecipeError", "RunPaths", "RunResult", "TASKS", "Task",
           "gallery", "packaged_recipes", "parse_flagfile", "recipe_path", "run", "task_for"]
