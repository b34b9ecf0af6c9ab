"""``import keras_dml`` registers every Keras-serialisable class without
importing Keras, TensorFlow or the command line (issue 17.2): a model saved
as ``.keras`` loads in a new process after only ``import keras_dml``.

Runs in the TensorFlow pass (it starts its own interpreters).
"""

import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np

import keras_dml as kd
from keras_dml import _registration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DECORATOR = re.compile(r"^\s*@keras\.saving\.register_keras_serializable", re.M)


def _python(script, backend="tensorflow", cwd=ROOT):
    env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="",
               TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def registering_modules():
    """Every keras_dml module whose source registers a Keras class."""
    found = set()
    package = os.path.join(ROOT, "keras_dml")
    for folder, _, files in os.walk(package):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".py") and DECORATOR.search(open(path).read()):
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found.add(re.sub(r"\.__init__$", "", module))
    return sorted(found)


def test_import_keras_dml_registers_every_class_without_heavy_imports():
    modules = registering_modules()
    assert "keras_dml.models.metric_model" in modules and len(modules) > 15
    out = _python(f"""
        import sys
        sys.modules["tensorflow"] = None            # any import of it fails
        import keras_dml
        heavy = [m for m, v in sys.modules.items() if v is not None and (
                 m.split(".")[0] in ("keras", "tensorflow", "jax")
                 or m.startswith(("keras_dml.cli", "keras_dml.data", "keras_dml.training")))]
        assert heavy == [], heavy
        import keras                                # the hook registers now
        missing = [m for m in {modules!r} if m not in sys.modules]
        assert missing == [], missing
        names = sorted(k for k in keras.saving.get_custom_objects() if k.startswith("keras_dml>"))
        assert {{"keras_dml>MetricModel", "keras_dml>Embedder", "keras_dml>Proxies",
                 "keras_dml>ProxyAnchorLoss", "keras_dml>ParameterGroupOptimizer",
                 "keras_dml>RandomResizedCrop", "keras_dml>CeilMaxPool2D"}} <= set(names), names
        print(len(names))
    """, backend="jax")
    assert int(out.split()[-1]) >= 20


def test_saved_model_loads_in_a_new_process_after_only_import_keras_dml(tmp_path):
    # Issue 17.2: load_model("best.keras") failed with "Could not locate class
    # 'MetricModel'" unless kd.models had been touched.
    backbone = kd.backbones.get("small_cnn", input_shape=(16, 16, 3))
    embedder = kd.models.build_embedder(backbone, embedding_dim=4,
                                        eval_transform=kd.data.eval_transform(16, rgb=True))
    model = kd.models.MetricModel(embedder, proxies=kd.layers.Proxies(3))
    model.compile(keras.optimizers.AdamW(1e-3), kd.losses.ProxyAnchorLoss(),
                  proxy_lr_multiplier=10.0)
    x = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", keras.ops.convert_to_numpy(model(x)))
    model.save(tmp_path / "best.keras")
    out = _python("""
        import sys
        import keras_dml
        assert not [m for m in sys.modules if m.startswith("keras_dml.cli")]
        import keras, numpy as np
        model = keras.models.load_model("best.keras")
        assert type(model).__name__ == "MetricModel", type(model)
        assert model.embedder.eval_transform is not None
        y = keras.ops.convert_to_numpy(model(np.load("x.npy")))
        np.testing.assert_allclose(y, np.load("y.npy"), atol=1e-5)
        print("LOADED", type(model.loss).__name__)
    """, cwd=tmp_path)
    assert "LOADED ProxyAnchorLoss" in out


def test_registration_hook_is_spent_and_lists_every_registering_module():
    # In this process Keras is loaded: no hook is left waiting for it.
    assert not [f for f in sys.meta_path if type(f).__name__ in _registration._HOOKS]
    listed = set(_registration.REGISTERING_MODULES)
    for module in registering_modules():
        # A module is covered when it, or a package that imports it, is listed.
        assert any(module == m or module.startswith(m + ".") for m in listed), module


FIRST_TOUCHES = [f"kd.{name}" for name in kd._LAZY] + [
    "kd.losses.available()", "kd.losses.ProxyAnchorLoss", "kd.layers.Proxies",
    "kd.ops.cosine_similarity",
    "__import__('keras_dml.losses', fromlist=['ProxyAnchorLoss']).ProxyAnchorLoss",
    "__import__('keras_dml.ops', fromlist=['cosine_similarity']).cosine_similarity",
    "__import__('keras_dml.models.metric_model', fromlist=['MetricModel']).MetricModel",
]


def test_first_touch_of_any_submodule_imports_and_registers_in_a_new_process():
    # A submodule that imports Keras must finish before registration imports
    # the modules that depend on it: `kd.losses.available()` as the first call
    # of a process was a circular ImportError ("partially initialized module").
    # One interpreter per case (each must be the first touch); they run two at
    # a time.
    script = textwrap.dedent("""
        import sys
        import keras_dml as kd
        value = eval(sys.argv[1])
        assert value is not None
        import keras
        names = set(keras.saving.get_custom_objects())
        assert {"keras_dml>MetricModel", "keras_dml>Proxies", "keras_dml>ProxyAnchorLoss",
                "keras_dml>ParameterGroupOptimizer"} <= names, sorted(names)
        assert not [f for f in sys.meta_path if "Hook" in type(f).__name__
                    or "Counter" in type(f).__name__], sys.meta_path
        print("OK")
    """)
    env = dict(os.environ, KERAS_BACKEND="jax", CUDA_VISIBLE_DEVICES="",
               TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    failures = []
    for start in range(0, len(FIRST_TOUCHES), 2):
        running = [(case, subprocess.Popen([sys.executable, "-c", script, case], env=env,
                                           cwd=ROOT, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True))
                   for case in FIRST_TOUCHES[start:start + 2]]
        for case, process in running:
            out, err = process.communicate(timeout=300)
            if process.returncode != 0 or "OK" not in out:
                failures.append(f"{case}: {err.strip().splitlines()[-1:] or out}")
    assert failures == [], "\n".join(failures)
