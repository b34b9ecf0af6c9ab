"""Run one keras_dml app the way its command line does (``python -m
apps.<APP>``: the checkout shim -> keras_dml.cli -> kd.training.run), with
the data sources a test machine lacks replaced by fixtures.

    python tests/app_runner.py APP [runner options] -- [app flags]

Runner options:
  --tfds_mock            serve tests/app_fixtures.tfds_examples(APP) through
                         ``tfds.testing.mock_data(as_dataset_fn=...)``
                         (cub200, cars196, sop);
  --bow_encoder          captions: a deterministic bag-of-words sentence
                         encoder instead of the offline MiniLM one;
  --interrupt_after=N    raise after the N-th epoch has been backed up
                         (simulates a killed run: backup/ stays behind);
  --dump_flags=PATH      write the parsed app flags as JSON (to check a
                         --flagfile and the overrides after it).

Then ``runpy.run_module("apps.<APP>", run_name="__main__")`` with
``sys.argv = [apps/<APP>.py, *app flags]``: flag parsing (including
--flagfile and --recipe), main, and the exit code are the app's own. The
hooks wrap ``kd.training.run``, which the app calls after parsing its flags.
Run from the repository root (relative flagfile paths).
"""

import argparse
import json
import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
# tests/ for the fixtures; the checkout first, so its apps/ and keras_dml/
# are run (not an installed or editable copy from elsewhere).
sys.path[:0] = [TESTS, os.path.dirname(TESTS)]


class SimulatedInterruption(RuntimeError):
    pass


def main():
    if "--" in sys.argv:
        cut = sys.argv.index("--")
        own, app_argv = sys.argv[1:cut], sys.argv[cut + 1:]
    else:
        own, app_argv = sys.argv[1:], []
    parser = argparse.ArgumentParser()
    parser.add_argument("app")
    parser.add_argument("--tfds_mock", action="store_true")
    parser.add_argument("--bow_encoder", action="store_true")
    parser.add_argument("--interrupt_after", type=int, default=0)
    parser.add_argument("--dump_flags", default=None)
    args = parser.parse_args(own)

    import contextlib
    import functools
    import runpy

    # What the entry point (keras_dml.cli.run_module) does first, before this
    # harness's own imports load Keras and TensorFlow.
    from keras_dml.cli import quiet
    quiet.before_tensorflow(app_argv)
    from absl import flags

    from keras_dml import training

    original_run = training.run

    def run(*a, **kw):
        if args.dump_flags:
            values = {k: v for k, v in flags.FLAGS.flag_values_dict().items()
                      if isinstance(v, (str, int, float, bool, list, type(None)))}
            with open(args.dump_flags, "w") as f:
                json.dump(values, f)
        if args.interrupt_after:
            import keras

            class Interrupt(keras.callbacks.Callback):
                def on_epoch_end(self, epoch, logs=None):
                    if epoch + 1 >= args.interrupt_after:
                        raise SimulatedInterruption(f"interrupted after epoch {epoch + 1}")

            # Extra callbacks run after BackupAndRestore: the epoch is backed up first.
            kw["callbacks"] = [*kw.get("callbacks", ()), Interrupt()]
        return original_run(*a, **kw)

    training.run = functools.wraps(original_run)(run)

    if args.bow_encoder:
        import app_fixtures
        from keras_dml.data import text_encoders
        text_encoders.MiniLMEncoder = lambda *a, **k: app_fixtures.BagOfWordsEncoder()

    context = contextlib.nullcontext()
    if args.tfds_mock:
        import tensorflow_datasets as tfds

        import app_fixtures
        context = tfds.testing.mock_data(
            as_dataset_fn=app_fixtures.tfds_as_dataset_fn(args.app))
    sys.argv = [f"apps/{args.app}.py", *app_argv]
    with context:
        runpy.run_module(f"apps.{args.app}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
