"""keras-hub transformer backbones (kd.backbones.hub), offline: each family
at a tiny random configuration, a round trip through a local preset
directory, CLS / mean pooling, the families' preprocessing and a few
MetricModel steps. Backend-neutral (the TensorFlow and JAX passes are the
ones the issue asks for; PyTorch runs them too)."""

import keras
import numpy as np
import pytest

import keras_dml as kd
from backend_tools import to_numpy
from references import reference

pytestmark = pytest.mark.backends

reference("keras_hub", "the keras-hub backbones (the [hub] extra)")

SHAPE = (16, 16, 3)
_T = dict(num_layers=1, num_heads=2, hidden_dim=8, patch_size=4)
TINY = {
    "dinov2_small": dict(_T, intermediate_dim=16, position_embedding_shape=(16, 16, 3)),
    "vit_base_patch16_224": dict(_T, mlp_dim=16),
    "deit_small_patch16_224": dict(_T, intermediate_dim=16),
    "clip_vit_base_patch16": dict(_T, intermediate_dim=16),
    "siglip_base_patch16_224": dict(_T, intermediate_dim=16),
}
# Tokens: 16 patches of 4x4, plus the class token (DeiT: and the
# distillation token); SigLIP's tower pools with its attention head.
TOKENS = {"deit_small_patch16_224": 18, "siglip_base_patch16_224": None}


def images(n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n,) + SHAPE).astype("float32")


def test_every_hub_backbone_is_registered():
    assert sorted(TINY) == sorted(n for n in kd.backbones.hub.SPECS
                                  if n.endswith(("small", "224", "patch16"))
                                  and not n.startswith(("vit_large", "deit_base")))
    for name in kd.backbones.hub.SPECS:
        info = kd.backbones.info(name)
        assert info.pooling in ("cls", "none")
        assert callable(kd.backbones.preprocessing_for(name))


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_family_and_local_preset_round_trip(name, tmp_path):
    keras.utils.set_random_seed(0)
    tower = kd.backbones.hub.hub_model(name, SHAPE, None, **TINY[name])
    model = kd.backbones.hub.build(name, SHAPE, None, **TINY[name])
    x = images()
    out = to_numpy(model(x))
    tokens = TOKENS.get(name, 17)
    assert out.shape == ((2, 8) if tokens is None else (2, tokens, 8))
    # save_to_preset, then kd.backbones.get(..., weights=DIR): same outputs.
    tower.save_to_preset(str(tmp_path / "preset"))
    loaded = kd.backbones.get(name, input_shape=SHAPE, weights=str(tmp_path / "preset"))
    inputs = {"images": x} if isinstance(tower.input_shape, dict) else x
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(tower(inputs)))
    # A different random tower differs (the comparison is not vacuous).
    other = kd.backbones.hub.build(name, SHAPE, None, **TINY[name])
    assert np.max(np.abs(to_numpy(other(x)) - to_numpy(loaded(x)))) > 1e-4


def test_preset_of_another_shape_is_refused(tmp_path):
    tower = kd.backbones.hub.hub_model("clip_vit_base_patch16", SHAPE, None,
                                       **TINY["clip_vit_base_patch16"])
    tower.save_to_preset(str(tmp_path / "p"))
    with pytest.raises(ValueError, match="takes images of shape"):
        kd.backbones.get("clip_vit_base_patch16", input_shape=(32, 32, 3),
                         weights=str(tmp_path / "p"))


def test_cls_and_mean_pooling():
    tokens = np.random.default_rng(1).normal(size=(3, 5, 4)).astype("float32")
    for pooling, pooled in (("cls", tokens[:, 0]), ("mean", tokens.mean(axis=1))):
        head = kd.layers.EmbeddingHead(2, pooling=pooling, normalize=False)
        out = to_numpy(head(tokens))
        kernel, bias = (to_numpy(w) for w in head.dense.weights)
        np.testing.assert_allclose(out, pooled @ kernel + bias, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="tokens"):
        kd.layers.EmbeddingHead(2, pooling="cls")(np.zeros((2, 4, 4, 3), "float32"))


def test_preprocessing_of_each_family():
    x = np.array([[[[0.0, 127.5, 255.0]]]], "float32")
    clip = to_numpy(kd.backbones.preprocessing_for("clip_vit_base_patch16")(x))
    mean = np.array([0.48145466, 0.4578275, 0.40821073])
    std = np.array([0.26862954, 0.26130258, 0.27577711])
    np.testing.assert_allclose(clip, (x / 255.0 - mean) / std, rtol=1e-6)
    dino = to_numpy(kd.backbones.preprocessing_for("dinov2_small")(x))
    np.testing.assert_allclose(
        dino, (x / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225], rtol=1e-6)
    for name in ("vit_base_patch16_224", "siglip_base_patch16_224"):
        np.testing.assert_allclose(
            to_numpy(kd.backbones.preprocessing_for(name)(x)), x / 127.5 - 1, rtol=1e-6)


@pytest.mark.parametrize("name", ["dinov2_small", "siglip_base_patch16_224"])
def test_metric_model_trains_a_few_steps(name):
    keras.utils.set_random_seed(0)
    backbone = kd.backbones.hub.build(name, SHAPE, None, **TINY[name])
    embedder = kd.models.build_embedder(backbone, embedding_dim=4,
                                        pooling=kd.backbones.info(name).pooling)
    model = kd.models.MetricModel(embedder, proxies=kd.layers.Proxies(3))
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=kd.losses.ProxyAnchorLoss(),
                  proxy_lr_multiplier=10.0)
    x, y = images(12), np.arange(12) % 3
    before = [to_numpy(v).copy() for v in backbone.trainable_variables]
    history = model.fit(x, y, batch_size=6, epochs=1, shuffle=False, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    moved = max(float(np.max(np.abs(to_numpy(v) - b)))
                for v, b in zip(backbone.trainable_variables, before))
    assert moved > 1e-5
    assert to_numpy(model(x)).shape == (12, 4)
