"""Run one keras_dml app (apps/<name>.py) the way its command line does,
with the data sources a test machine lacks replaced by fixtures.

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

Then ``absl.app.run(apps.<APP>.main, argv=[APP, *app flags])``: flag
parsing (including --flagfile), main, and the exit code are absl's.
Run from the repository root (relative flagfile paths).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


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

    import importlib
    import contextlib
    from absl import app, flags
    module = importlib.import_module(f"apps.{args.app}")
    from apps import common

    if args.interrupt_after:
        import keras
        original = common.callbacks

        class Interrupt(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch + 1 >= args.interrupt_after:
                    raise SimulatedInterruption(f"interrupted after epoch {epoch + 1}")

        # After BackupAndRestore in the list: the epoch is backed up first.
        common.callbacks = lambda out, val_cb: original(out, val_cb) + [Interrupt()]

    if args.bow_encoder:
        import app_fixtures
        from keras_dml.data import text_encoders
        text_encoders.MiniLMEncoder = lambda *a, **k: app_fixtures.BagOfWordsEncoder()

    def run_main(argv):
        if args.dump_flags:
            values = {k: v for k, v in flags.FLAGS.flag_values_dict().items()
                      if isinstance(v, (str, int, float, bool, list, type(None)))}
            with open(args.dump_flags, "w") as f:
                json.dump(values, f)
        return module.main(argv)

    context = contextlib.nullcontext()
    if args.tfds_mock:
        import tensorflow_datasets as tfds
        import app_fixtures
        context = tfds.testing.mock_data(
            as_dataset_fn=app_fixtures.tfds_as_dataset_fn(args.app))
    with context:
        app.run(run_main, argv=[f"apps/{args.app}.py", *app_argv])


if __name__ == "__main__":
    main()
