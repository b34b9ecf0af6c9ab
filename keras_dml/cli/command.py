"""``keras-dml APP [flags]``: flags -> Recipe -> kd.training.run.

``keras-dml --help`` lists the apps; ``keras-dml APP --help`` shows the
app's own flags, whose defaults are the values of the recipe chosen with
``--recipe`` (read from argv before the flags are defined, so the help shows
them); ``--helpfull`` adds absl's flags (``--verbosity``, ``--flagfile``,
...). Commands that are not training apps are in ``COMMANDS`` (``keras-dml
search``, ``cli/search.py``).

Expected errors (data not found, a recipe or run directory that cannot run,
unavailable weights, a corrupt image) print one ``PROG: error: ...`` line
naming the flag or file and exit with status 2; ``--verbosity=1`` raises
them with their traceback instead.
"""

import re
import sys

from absl import app as absl_app
from absl import flags, logging

from keras_dml.cli import quiet
from keras_dml.cli.apps import APPS
from keras_dml.cli.quiet import argv_value
from keras_dml.training import recipe as recipes

FLAGS = flags.FLAGS
PROG = "keras-dml"


def _search(argv):
    from keras_dml.cli import search  # argparse; TensorFlow only when it searches
    return search.main(argv)


def _index(argv):
    from keras_dml.cli import index  # argparse; TensorFlow only when it embeds
    return index.main(argv)


def _serve(argv):
    from keras_dml.cli import serve  # argparse; the [serve] extra when it serves
    return serve.main(argv)


# Other sub-commands: name -> (summary, main(argv) -> exit code).
COMMANDS = {
    "search": ("Nearest neighbours of an image in a run's test gallery "
               "(--model=DIR/saved_model --index=DIR/index --image=PATH --k=5).", _search),
    "index": ("Embed a gallery of images (a folder or a CSV) into an index, resumable "
              "(--model=DIR/saved_model --images=ROOT_OR_CSV --index=OUT "
              "[--backend=exact|faiss|milvus [--uri=URI] [--collection=NAME]]).", _index),
    "serve": ("Serve image search over HTTP with a web page (--model=DIR/saved_model "
              "--index=DIR/index [--host=127.0.0.1] [--port=8000] [--threshold=T]).", _serve),
}
HELP_FLAGS = {"-h", "-?", "--help", "--helpfull", "--helpshort", "--helpxml"}
# Help that lists only the app's own flags (--helpfull: absl's too).
SHORT_HELP_FLAGS = {"-h", "-?", "--help", "--helpshort"}
# The library's argument names in error messages -> the command line's flags.
_FLAG_NAMES = ((re.compile(r"\bdownload=True\b"), "--download"),
               (re.compile(r"\bsource='(\w+)'"), r"--source=\1"),
               (re.compile(r"\bdata_dir=<"), "--data_dir=<"))
# tf.debugging.Assert's message of a corrupt image (kd.data.core), and its end.
_CORRUPT_IMAGE = re.compile(r"keras_dml\.data: cannot read or decode image.*?\)", re.S)


class CommandLineError(Exception):
    """A command line that cannot run; printed without a traceback."""


def expected_errors():
    """The exception types an app reports in one line (exit status 2)."""
    from keras_dml import training
    from keras_dml.backbones.common import WeightsUnavailableError
    from keras_dml.data.core import DataNotFoundError
    errors = (recipes.RecipeError, training.OutputDirError, DataNotFoundError,
              FileNotFoundError, WeightsUnavailableError, CommandLineError)
    import tensorflow as tf
    return errors + (tf.errors.InvalidArgumentError,)


def error_line(err):
    """The message of an expected error, in the command line's words: flags
    instead of the library's argument names, a corrupt image's TensorFlow
    assertion cut to the sentence naming the file."""
    text = getattr(err, "message", None) or str(err)
    found = _CORRUPT_IMAGE.search(text)
    if found:
        text = " ".join(found.group(0).split())
    elif type(err).__name__ == "InvalidArgumentError":
        return None     # not one of ours: a real failure, keep the traceback
    for pattern, flag in _FLAG_NAMES:
        text = pattern.sub(flag, text)
    return text.strip()


def listing():
    """The text of ``keras-dml --help``."""
    width = max(map(len, [*APPS, *COMMANDS]))
    lines = [f"usage: {PROG} APP [--flags]   ({PROG} APP --help: the app's flags)", "",
             "apps:"]
    lines += [f"  {name:<{width}}  {spec.summary}" for name, spec in APPS.items()]
    if COMMANDS:
        lines += ["", "commands:"]
        lines += [f"  {name:<{width}}  {summary}" for name, (summary, _) in COMMANDS.items()]
    lines += ["", f"example: {PROG} fashion_mnist --output_dir=runs/demo"]
    return "\n".join(lines)


def define_recipe_flags(defaults, losses):
    """One flag per Recipe field, defaulting to ``defaults``' values."""
    for f in recipes.fields():
        kind, is_tuple, _ = recipes.field_kind(f)
        value, text = getattr(defaults, f.name), f.metadata["help"]
        choices = losses if f.name == "loss" else f.metadata.get("choices")
        if choices:
            flags.DEFINE_enum(f.name, value, list(choices), text)
        elif is_tuple:
            flags.DEFINE_list(f.name, [str(v) for v in value], text)
        else:
            define = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer,
                      float: flags.DEFINE_float, str: flags.DEFINE_string}[kind]
            define(f.name, value, text)


def define_app(name, argv, prog=None):
    """Define app ``name``'s flags (defaults: the recipe that ``argv``'s
    ``--recipe`` names, or the app's own) and return its ``main(argv)``."""
    prog = prog or f"{PROG} {name}"
    from keras_dml import losses
    spec = APPS[name]
    chosen = argv_value(argv, "recipe") or spec.recipe
    defaults = recipes.Recipe.from_flagfile(recipes.recipe_path(chosen, app=name))
    continuous = defaults.loss in losses.available(continuous_labels=True)
    define_recipe_flags(defaults, losses.available(continuous_labels=continuous))
    flags.DEFINE_string("recipe", chosen, "The recipe giving the defaults: a packaged name "
                        f"(with or without '{name}_': "
                        f"{', '.join(recipes.packaged_recipes(name))}) or a flagfile path; "
                        "--flagfile and later flags override it.")
    flags.DEFINE_string("output_dir", None, "Where logs, checkpoints, metrics.json, plots "
                        "and the SavedModel go.", required=True)
    flags.DEFINE_string("data_dir", None, spec.data_dir or spec.data_dir_help)
    flags.DEFINE_boolean("resume", False, "Continue an interrupted run in output_dir.")
    flags.DEFINE_boolean("overwrite", False, "Replace the run already in output_dir (its "
                         "files are deleted first); without it a finished run is refused.")
    flags.DEFINE_boolean("export", True, "Export output_dir/saved_model (--noexport skips).")
    flags.DEFINE_boolean("index", True, "Class-label apps: write output_dir/index, the test "
                         "gallery for `keras-dml search` (--noindex skips).")
    flags.DEFINE_integer("verbose", 1, "Keras verbosity (1: progress bars).")
    if spec.define_flags:
        spec.define_flags()

    def main(argv):
        del argv
        from keras_dml import training
        quiet.after_flags(FLAGS.verbosity)
        try:
            if spec.data_dir and not FLAGS.data_dir:
                raise CommandLineError(f"--data_dir ({spec.data_dir}) is required.")
            recipe = recipes.Recipe.from_dict(
                {f: FLAGS[f].value for f in recipes.field_names()})
            result = training.run(recipe, spec.load(FLAGS), FLAGS.output_dir,
                                  **run_options(FLAGS), verbose=FLAGS.verbose)
        except expected_errors() as err:
            # Data, recipe, run directory, weights or an image that cannot be
            # used: one line naming the flag or file; --verbosity=1 traceback.
            line = error_line(err)
            if FLAGS.verbosity >= 1 or line is None:
                raise
            print(f"{prog}: error: {line}", file=sys.stderr)
            return 2
        logging.info("wrote %s", ", ".join(sorted(result.paths)))
        return 0

    return main


def run_options(F):
    """``kd.training.run``'s keyword arguments from the run flags."""
    return dict(resume=F.resume, overwrite=F.overwrite, export=F.export, index=F.index)


def app_help(name, prog):
    """``PROG APP --help``: the usage line, then the app's own flags (recipe
    and run flags, with the recipe's values as defaults)."""
    from keras_dml.cli import apps as apps_module
    text = [sys.modules["__main__"].__doc__.strip(), ""]
    for module in (sys.modules[__name__], apps_module):
        helped = FLAGS.module_help(module)
        # absl heads each block with the module's name: say what it is instead.
        text.append(helped.replace(f"{module.__name__}:", "flags:" if module is not
                                   apps_module else f"{name} data flags:", 1))
    text += ["", "absl's flags (--verbosity, --flagfile, --logtostderr, ...): --helpfull"]
    return "\n".join(t for t in text if t.strip() or t == "")


def run_app(name, args, prog=None):
    """Run app ``name`` on the command-line ``args`` (absl parses them;
    exits with absl's exit code). ``prog``: the command's name in messages."""
    prog = prog or f"{PROG} {name}"
    if name not in APPS:
        print(f"{prog}: unknown app {name!r}\n\n{listing()}", file=sys.stderr)
        return 2
    try:
        main = define_app(name, args, prog)
    except recipes.RecipeError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    # absl prints the main module's docstring as the usage of --help.
    sys.modules["__main__"].__doc__ = (
        f"{prog}: {APPS[name].summary}\n\n"
        f"  {prog} --output_dir=DIR"
        f"{' --data_dir=DIR' if APPS[name].data_dir else ''} [--recipe=NAME] [--flags]")
    if SHORT_HELP_FLAGS & set(args):
        print(app_help(name, prog))
        return 0
    try:
        absl_app.run(main, argv=[prog, *args])
    except SystemExit as exit_:
        # absl exits with 1 after printing --help/--helpfull; asking for help is no error.
        if exit_.code == 1 and HELP_FLAGS & set(args):
            raise SystemExit(0) from None
        raise


def main(argv=None):
    """The console script: ``keras-dml APP [flags]`` or ``keras-dml --help``."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "--helpfull", "help"):
        print(listing())
        return 0 if args else 2
    if args[0] in COMMANDS:
        return COMMANDS[args[0]][1](args[1:])
    return run_app(args[0], args[1:])
