"""The experiment runner: recipe -> split -> fit -> evaluate -> report -> export.

    import keras_dml as kd
    recipe = kd.training.Recipe.from_flagfile("fashion_mnist_proxy_anchor")
    result = kd.training.run(recipe, kd.data.load_fashion_mnist(), "runs/demo")
    result.metrics["recall@1"], result.history["val_recall@1"], result.paths

``Recipe`` (recipe.py) holds what a flagfile holds; ``run`` (runner.py) is
the one runner for class and continuous-label retrieval the apps call;
``Task`` / ``task_for`` say what a data set's labels need beyond the recipe
(label distance, image transforms); ``gallery`` writes a run's test gallery
as ``index/`` and as the Embedding Projector run ``logs/projector``.
"""

from keras_dml.training.recipe import (  # noqa: F401
    Recipe, RecipeError, packaged_recipes, parse_flagfile, recipe_path)
from keras_dml.training.runner import (  # noqa: F401
    RunResult, Task, TASKS, run, task_for)
from keras_dml.training import gallery  # noqa: F401,E402

__all__ = ["Recipe", "RecipeError", "RunResult", "TASKS", "Task", "gallery", "packaged_recipes",
           "parse_flagfile", "recipe_path", "run", "task_for"]
