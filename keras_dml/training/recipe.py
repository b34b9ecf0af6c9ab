"""A training recipe: everything a flagfile holds, as a validated dataclass.

    recipe = kd.training.Recipe.from_flagfile("cub200_proxy_anchor")   # packaged
    recipe = kd.training.Recipe.from_flagfile("my_recipe.cfg")         # a file
    recipe = kd.training.Recipe.from_dict({"loss": "triplet", "epochs": 5})
    recipe = recipe.replace(epochs=1, backbone="small_cnn")

The packaged flagfiles (``keras_dml/flags/*.cfg``, also ``flags/`` in a
checkout) are the papers' recipes; ``packaged_recipes()`` lists their names.
A flagfile is absl's format: ``--name=value``, ``--name`` / ``--noname`` for
booleans, ``#`` comments. The dataclass defaults are the Proxy Anchor
CUB-200 recipe without frozen BatchNorm.
"""

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

FLAGS_DIR = Path(__file__).resolve().parents[1] / "flags"
OPTIMIZERS = ("adamw", "sgd")
SAMPLERS = ("auto", "label_space", "random")
# Loss arguments the runner sets from the task; a recipe cannot override them.
RUNNER_LOSS_ARGS = ("label_distance", "label_distance_kwargs", "name", "reduction", "dtype")
VAL_SPLITS = ("auto", "classes", "examples")


class RecipeError(ValueError):
    """A recipe that cannot be read or does not make sense."""


def _field(default, help, choices=None):
    return dataclasses.field(default=default,
                             metadata={"help": help, "choices": choices})


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Model, optimiser, batches, validation and evaluation of one run."""

    loss: str = _field("proxy_anchor", "Loss, by its short name (kd.losses.available()).")
    loss_kwargs: str = _field("", "Loss arguments as name=value pairs separated by commas "
                              "(e.g. 'alpha=16,margin=0.2'); empty: the loss's defaults.")
    backbone: str = _field("bn_inception", "Backbone name (kd.backbones.available()).")
    weights: str = _field("imagenet", "Backbone weights: 'imagenet', 'none' or a path "
                          "to a weights file.")
    image_size: int = _field(224, "Training / test crop size.")
    embedding_dim: int = _field(512, "Embedding size.")
    memory_size: int = _field(0, "Cross-batch memory (XBM): compare each batch with the "
                              "last N training embeddings (0: off; pair losses only, "
                              "N >= batch_size).")
    batch_size: int = _field(180, "Global batch size.")
    epochs: int = _field(60, "Training epochs.")
    optimizer: str = _field("adamw", "AdamW (Proxy Anchor recipe) or SGD with momentum "
                            "0.9 (log-ratio recipe).", OPTIMIZERS)
    lr: float = _field(1e-4, "Learning rate.")
    weight_decay: float = _field(1e-4, "Weight decay.")
    lr_inverse_decay: float = _field(0.0, "If > 0: lr / (1 + this * step) (the log-ratio "
                                     "authors' --lr-decay) instead of step decay.")
    proxy_lr_multiplier: float = _field(100.0, "Proxies learn at lr times this (proxy "
                                        "losses only).")
    warmup_epochs: int = _field(1, "Epochs with a frozen backbone.")
    freeze_bn: bool = _field(False, "BatchNorm layers of the backbone in inference mode "
                             "with frozen weights.")
    clip_value: float = _field(10.0, "Gradient value clipping (0: off).")
    lr_decay_epochs: Tuple[int, ...] = _field((10,), "One value: decay every N epochs; "
                                              "several: at those epochs; none: no decay.")
    lr_decay_gamma: float = _field(0.5, "Learning-rate decay factor.")
    m_per_class: int = _field(0, "Batches of P classes x M images (0: random batches for "
                              "proxy losses, M=3 for pair losses).")
    sampler: str = _field("auto", "Training batches: auto (label-space batches for "
                          "continuous labels, P x M class batches for pair losses, random "
                          "for proxy losses), label_space (continuous labels only) or "
                          "random (shuffled examples, for any loss).", SAMPLERS)
    ks: Tuple[int, ...] = _field((1, 2, 4, 8), "K of the reported Recall@K / metrics@K; "
                                 "the first selects the checkpoint.")
    val_fraction: float = _field(0.1, "Fraction of the training classes (or examples) "
                                 "held out for checkpoint selection; 0 keeps the last "
                                 "epoch.")
    val_split: str = _field("auto", "Hold out whole classes (class-disjoint, as the "
                            "test) or random examples; auto: classes for class labels, "
                            "examples for continuous labels.", VAL_SPLITS)
    steps_per_epoch: Optional[int] = _field(None, "Steps of an epoch (the training batches "
                                            "repeat if one pass is shorter); unset: one "
                                            "pass.")
    max_train_examples: Optional[int] = _field(None, "Use a random subset of the "
                                               "training examples.")
    max_test_examples: Optional[int] = _field(None, "Use a random subset of the test "
                                              "(query) examples.")
    cache: bool = _field(False, "Cache decoded training images in memory.")
    eval_batch_size: int = _field(256, "Batch size for embedding.")
    num_plot_queries: int = _field(8, "Queries in retrievals.png.")
    seed: int = _field(0, "Random seed (splits, batches, initialisation).")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _convert(f, getattr(self, f.name)))
        self._validate()

    # -- construction -------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "Recipe":
        """A recipe from ``{field: value}`` (strings are parsed as in a
        flagfile; unknown keys are refused)."""
        if not isinstance(values, dict):
            raise RecipeError(f"from_dict takes a dict; got {type(values).__name__}.")
        unknown = sorted(set(values) - set(field_names()))
        if unknown:
            raise RecipeError(f"unknown recipe field(s) {unknown}; known: "
                              f"{', '.join(field_names())}.")
        return cls(**values)

    @classmethod
    def from_flagfile(cls, path_or_name: Union[str, os.PathLike], **overrides: Any) -> "Recipe":
        """A recipe from a flagfile path or a packaged name (e.g.
        "cub200_proxy_anchor"); ``overrides`` replace fields after it."""
        path = recipe_path(path_or_name)
        values = parse_flagfile(path)
        values.update(overrides)
        try:
            return cls.from_dict(values)
        except RecipeError as err:
            raise RecipeError(f"{path}: {err}") from None

    def replace(self, **changes: Any) -> "Recipe":
        """A copy with ``changes`` (validated)."""
        return dataclasses.replace(self, **changes)

    def loss_arguments(self) -> Dict[str, Any]:
        """``loss_kwargs`` parsed: ``{name: int, float, bool or str}``."""
        return parse_loss_kwargs(self.loss_kwargs)

    def to_dict(self) -> Dict[str, Any]:
        """``{field: value}`` with lists for the tuples (JSON-friendly)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    def to_flagfile(self) -> str:
        """The recipe as flagfile text (every field; None fields omitted)."""
        lines = []
        for name, value in self.to_dict().items():
            if value is None:
                continue
            if isinstance(value, bool):
                lines.append(f"--{'' if value else 'no'}{name}")
            elif isinstance(value, list):
                lines.append(f"--{name}={','.join(str(v) for v in value)}")
            else:
                lines.append(f"--{name}={value}")
        return "\n".join(lines) + "\n"

    # -- validation ---------------------------------------------------------
    def _validate(self):
        from keras_dml import losses
        if self.loss not in losses.available():
            raise RecipeError(f"loss {self.loss!r} is not a known loss; available: "
                              f"{', '.join(losses.available())}.")
        for name in ("image_size", "embedding_dim", "batch_size", "epochs",
                     "eval_batch_size"):
            if getattr(self, name) < 1:
                raise RecipeError(f"{name} must be >= 1; got {getattr(self, name)}.")
        for name in ("warmup_epochs", "m_per_class", "num_plot_queries"):
            if getattr(self, name) < 0:
                raise RecipeError(f"{name} must be >= 0; got {getattr(self, name)}.")
        for name in ("steps_per_epoch", "max_train_examples", "max_test_examples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise RecipeError(f"{name} must be >= 1 or unset; got "
                                  f"{getattr(self, name)}.")
        if not self.lr > 0:
            raise RecipeError(f"lr must be > 0; got {self.lr}.")
        for name in ("weight_decay", "lr_inverse_decay", "clip_value"):
            if getattr(self, name) < 0:
                raise RecipeError(f"{name} must be >= 0; got {getattr(self, name)}.")
        if not self.proxy_lr_multiplier > 0 or not self.lr_decay_gamma > 0:
            raise RecipeError("proxy_lr_multiplier and lr_decay_gamma must be > 0; got "
                              f"{self.proxy_lr_multiplier}, {self.lr_decay_gamma}.")
        if not 0.0 <= self.val_fraction < 1.0:
            raise RecipeError(f"val_fraction must be in [0, 1); got {self.val_fraction}.")
        self._validate_loss_kwargs(losses)
        if self.memory_size < 0:
            raise RecipeError(f"memory_size must be >= 0; got {self.memory_size}.")
        if self.memory_size:
            if not getattr(type(losses.get(self.loss)), "supports_references", False):
                raise RecipeError(f"memory_size (cross-batch memory) needs a pair loss "
                                  f"(contrastive, multi_similarity, triplet, circle); "
                                  f"got {self.loss!r}.")
            if self.memory_size < self.batch_size:
                raise RecipeError(f"memory_size ({self.memory_size}) must be >= "
                                  f"batch_size ({self.batch_size}).")
        if not self.ks or min(self.ks) < 1 or len(set(self.ks)) != len(self.ks):
            raise RecipeError(f"ks must be distinct positive integers; got {list(self.ks)}.")
        if any(e < 1 for e in self.lr_decay_epochs) or (
                len(self.lr_decay_epochs) > 1 and list(self.lr_decay_epochs)
                != sorted(set(self.lr_decay_epochs))):
            raise RecipeError("lr_decay_epochs must be one period or increasing epochs "
                              f">= 1; got {list(self.lr_decay_epochs)}.")


    def _validate_loss_kwargs(self, losses):
        import inspect
        kwargs = self.loss_arguments()
        if not kwargs:
            return
        cls = type(losses.get(self.loss))
        accepted = [p for p in inspect.signature(cls.__init__).parameters
                    if p not in ("self", "kwargs") and p not in RUNNER_LOSS_ARGS]
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise RecipeError(f"loss_kwargs {unknown} are not arguments of {cls.__name__} "
                              f"({self.loss!r}); it takes: {', '.join(accepted)}.")
        try:
            losses.get(self.loss, **kwargs)
        except (TypeError, ValueError) as err:
            raise RecipeError(f"loss_kwargs {self.loss_kwargs!r}: {err}") from None


def parse_loss_kwargs(text: str) -> Dict[str, Any]:
    """``"alpha=16,margin=0.2"`` -> ``{"alpha": 16, "margin": 0.2}``: ints,
    floats, true/false and none are converted, anything else stays a string."""
    out = {}
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            continue
        name, eq, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not name.isidentifier():
            raise RecipeError(f"loss_kwargs must be name=value pairs separated by commas; "
                              f"got {item!r} in {text!r}.")
        if name in out:
            raise RecipeError(f"loss_kwargs sets {name!r} twice: {text!r}.")
        out[name] = _literal(value)
    return out


def _literal(value):
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def field_names() -> List[str]:
    return [f.name for f in dataclasses.fields(Recipe)]


def fields() -> Tuple[dataclasses.Field, ...]:
    """The recipe's dataclass fields (type, default, metadata help/choices)."""
    return dataclasses.fields(Recipe)


def field_kind(f: dataclasses.Field) -> Tuple[Any, bool, bool]:
    """(scalar type, is a tuple of them, may be None) of a recipe field."""
    args = [a for a in typing.get_args(f.type) if a is not type(None)]
    if typing.get_origin(f.type) is tuple:
        return args[0], True, False
    if typing.get_origin(f.type) is typing.Union:
        return args[0], False, True
    return f.type, False, False


def _scalar(kind, value, name):
    if kind is bool:
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
        elif isinstance(value, (bool, int)) and value in (0, 1):
            return bool(value)
        raise RecipeError(f"{name} must be a boolean; got {value!r}.")
    try:
        if kind is int:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, bool) or int(number) != number:
                raise ValueError
            return int(number)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
    except (TypeError, ValueError):
        raise RecipeError(f"{name} must be {'an integer' if kind is int else 'a number'}; "
                          f"got {value!r}.") from None
    if not isinstance(value, str):
        raise RecipeError(f"{name} must be a string; got {value!r}.")
    return value


def _convert(f, value):
    kind, is_tuple, optional = field_kind(f)
    if is_tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_scalar(int, v, f.name) for v in value)
    if optional and (value is None or (isinstance(value, str)
                                       and value.strip().lower() in ("", "none"))):
        return None
    value = _scalar(kind, value, f.name)
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise RecipeError(f"{f.name} must be one of {list(choices)}; got {value!r}.")
    return value


# ------------------------------------------------------------- flagfiles
def packaged_recipes(prefix: Optional[str] = None) -> List[str]:
    """Sorted names of the packaged flagfiles (those starting with
    ``prefix + "_"`` when given)."""
    names = sorted(p.stem for p in FLAGS_DIR.glob("*.cfg"))
    return [n for n in names if prefix is None or n.startswith(prefix + "_")]


def recipe_path(path_or_name: Union[str, os.PathLike], app: Optional[str] = None) -> Path:
    """The flagfile for a path, a packaged name, or (with ``app``) a packaged
    name without the app prefix ("proxy_anchor" -> "cub200_proxy_anchor")."""
    text = os.fspath(path_or_name)
    if os.path.isfile(text):
        return Path(text)
    candidates = ([f"{app}_{text}"] if app else []) + [text, text.removesuffix(".cfg")]
    for name in candidates:
        if (FLAGS_DIR / f"{name}.cfg").is_file() and "/" not in name:
            return FLAGS_DIR / f"{name}.cfg"
    own = packaged_recipes(app) if app else []
    hint = (f"{app}'s recipes: {', '.join(n[len(app) + 1:] for n in own)}; " if app and own else "")
    raise RecipeError(f"no flagfile or packaged recipe {text!r}; {hint}packaged: "
                      f"{', '.join(packaged_recipes())}.")


def parse_flagfile(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """``{field: string or bool}`` of an absl flagfile, refusing unknown or
    repeated flags (a value set twice is a recipe written twice)."""
    known = {f.name: f for f in dataclasses.fields(Recipe)}
    values: Dict[str, Any] = {}
    lines_of: Dict[str, int] = {}
    with open(path) as fh:
        lines = fh.read().splitlines()
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        if not line.startswith("--"):
            raise RecipeError(f"{where}: expected --name=value; got {line!r}.")
        name, eq, value = line[2:].partition("=")
        if not eq:
            is_bool = name in known and field_kind(known[name])[0] is bool
            if not is_bool and name.startswith("no") and name[2:] in known:
                name, value = name[2:], "false"
            else:
                value = "true"
        if name not in known:
            raise RecipeError(f"{where}: unknown recipe flag --{name}; known: "
                              f"{', '.join(known)}.")
        if name in values:
            raise RecipeError(f"{where}: --{name} is set twice (first on line "
                              f"{lines_of[name]}).")
        values[name], lines_of[name] = value, number
    return values
