"""A tiny served pair for the service tests: class folders of PNGs, a small
SavedModel (small_cnn backbone, 16-d) and its index made by `keras-dml
index`; and a real uvicorn server on a free 127.0.0.1 port."""

import contextlib
import io
import os
import socket
import subprocess
import sys
import time

import numpy as np
import requests
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
           "Ärmel": (200, 200, 30)}


def png_bytes(color, size=32, seed=0, stripes=False):
    rng = np.random.default_rng(seed)
    img = np.clip(np.asarray(color)[None, None] + rng.normal(0, 12, (size, size, 3)), 0, 255)
    if stripes:
        img[::4] = 255 - img[::4]
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_gallery(root, per_class=5):
    for c, (name, color) in enumerate(CLASSES.items()):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            with open(os.path.join(root, name, f"{i:02d}.png"), "wb") as f:
                f.write(png_bytes(color, seed=100 * c + i, stripes=i % 2 == 1))
    return root


def export_tiny_model(path, seed=0):
    import keras

    import keras_dml as kd
    keras.utils.set_random_seed(seed)
    backbone = kd.backbones.get("small_cnn", input_shape=(32, 32, 3))
    model = kd.models.build_embedder(backbone, embedding_dim=16)
    kd.export.export_saved_model(model, path, image_shape=(32, 32, 3))
    return path


def make_pair(base):
    """(model dir, index dir, gallery dir) under ``base``."""
    from keras_dml.cli import index as cli_index
    gallery = write_gallery(os.path.join(base, "gallery"))
    model = export_tiny_model(os.path.join(base, "saved_model"))
    out = os.path.join(base, "index")
    args = cli_index.parser().parse_args(
        ["--model", model, "--images", gallery, "--index", out, "--verbose", "0",
         "--batch_size", "8", "--checkpoint_every", "8"])
    cli_index.build(args)
    return model, out, gallery


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(model, index, *extra, timeout=120):
    """``keras-dml serve`` in a subprocess on a free port; yields its base URL."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    log = open(os.path.join(os.path.dirname(index), f"serve_{port}.log"), "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "keras_dml", "serve", f"--model={model}", f"--index={index}",
         f"--port={port}", "--log_level=warning", *extra],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"serve exited with {proc.returncode}:\n{log.read()}")
            try:
                if requests.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"serve did not start in {timeout} s:\n{log.read()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
