"""Transformer backbones from keras-hub: DINOv2, ViT, DeiT, CLIP and SigLIP vision towers.

``kd.backbones.get("dinov2_small", input_shape=(224, 224, 3), weights=W)``
returns a Keras model image -> tokens [B, T, C] (the SigLIP tower, which
pools with its own attention head: [B, C]); ``EmbeddingHead(pooling="cls")``
takes the class token, ``pooling="mean"`` the mean of the tokens.

``weights``:

* None: random initialisation of the named architecture (no download);
* "pretrained" (or "imagenet"): the keras-hub preset of that name
  (``PRESETS``; downloaded from Kaggle / Hugging Face where there is
  internet, cached by keras-hub);
* any other string: a keras-hub preset handle ("kaggle://...",
  "hf://...", a preset name) or a local preset directory written by
  ``backbone.save_to_preset(DIR)`` / ``keras_hub_model(...).save_to_preset``
  (offline). A CLIP or SigLIP preset of the whole two-tower model gives its
  vision tower.

keras-hub (and tensorflow-text, which it requires) is the ``[hub]`` extra:
``pip install keras-dml[hub]``. It is imported only when one of these
backbones is built.
"""

import collections

import keras

HubSpec = collections.namedtuple(
    "HubSpec", ["family", "preset", "config", "preprocessing", "pooling"])

_VIT_BASE = dict(patch_size=16, num_layers=12, num_heads=12, hidden_dim=768)
# Architectures (the keras-hub presets' configurations), so that weights=None
# builds the same network offline.
SPECS = {
    "dinov2_small": HubSpec("dinov2", "dinov2_small", dict(
        patch_size=14, num_layers=12, hidden_dim=384, num_heads=6,
        intermediate_dim=1536, layer_scale_init_value=1.0,
        position_embedding_shape=(518, 518, 3)), "torch_imagenet", "cls"),
    "dinov2_base": HubSpec("dinov2", "dinov2_base", dict(
        patch_size=14, num_layers=12, hidden_dim=768, num_heads=12,
        intermediate_dim=3072, layer_scale_init_value=1.0,
        position_embedding_shape=(518, 518, 3)), "torch_imagenet", "cls"),
    "vit_base_patch16_224": HubSpec("vit", "vit_base_patch16_224_imagenet", dict(
        _VIT_BASE, mlp_dim=3072), "inception", "cls"),
    "vit_large_patch16_224": HubSpec("vit", "vit_large_patch16_224_imagenet", dict(
        patch_size=16, num_layers=24, num_heads=16, hidden_dim=1024, mlp_dim=4096),
        "inception", "cls"),
    "deit_small_patch16_224": HubSpec(
        "deit", "deit_small_distilled_patch16_224_imagenet", dict(
            patch_size=16, num_layers=12, num_heads=6, hidden_dim=384,
            intermediate_dim=1536), "torch_imagenet", "cls"),
    "deit_base_patch16_224": HubSpec(
        "deit", "deit_base_distilled_patch16_224_imagenet", dict(
            _VIT_BASE, intermediate_dim=3072), "torch_imagenet", "cls"),
    "clip_vit_base_patch16": HubSpec("clip", "clip_vit_base_patch16", dict(
        patch_size=16, hidden_dim=768, num_layers=12, num_heads=12,
        intermediate_dim=3072), "clip", "cls"),
    "siglip_base_patch16_224": HubSpec("siglip", "siglip_base_patch16_224", dict(
        patch_size=16, hidden_dim=768, num_layers=12, num_heads=12,
        intermediate_dim=3072), "inception", "none"),
}
_CLASSES = {"dinov2": "DINOV2Backbone", "vit": "ViTBackbone", "deit": "DeiTBackbone",
            "clip": "CLIPVisionEncoder", "siglip": "SigLIPVisionEncoder"}


def keras_hub():
    """The keras_hub module, or an ImportError saying how to install it."""
    try:
        import keras_hub as hub
    except ImportError as e:
        raise ImportError(
            "the keras-hub backbones need keras-hub: pip install 'keras-dml[hub]' "
            f"({e})") from None
    return hub


def hub_model(name, input_shape=(224, 224, 3), weights=None, **overrides):
    """The keras-hub backbone itself.

    ``overrides`` replace entries of the architecture for ``weights=None``
    (tests build each family at a tiny size: ``num_layers=1, hidden_dim=8``).
    """
    spec = SPECS[name]
    hub = keras_hub()
    if weights is None:
        cls = getattr(hub.models, _CLASSES[spec.family])
        config = dict(spec.config, **overrides)
        return cls(image_shape=tuple(input_shape), **config)
    if overrides:
        raise ValueError("architecture overrides apply to weights=None only.")
    handle = spec.preset if weights in ("pretrained", "imagenet") else str(weights)
    kwargs = {}
    if spec.family in ("dinov2", "vit", "deit"):
        kwargs["image_shape"] = tuple(input_shape)
    model = hub.models.Backbone.from_preset(handle, **kwargs)
    # A two-tower CLIP / SigLIP preset: its vision tower.
    model = getattr(model, "vision_encoder", model)
    got = tuple(model.input_shape["images"][1:] if isinstance(model.input_shape, dict)
                else model.input_shape[1:])
    if got != tuple(input_shape):
        raise ValueError(f"preset {handle!r} takes images of shape {got}; "
                         f"asked for {tuple(input_shape)}.")
    return model


def build(name, input_shape=(224, 224, 3), weights=None, **overrides):
    """``kd.backbones.get`` for the keras-hub backbones: a Keras model
    image [B, H, W, 3] -> tokens [B, T, C] ([B, C] for SigLIP), named
    ``name``, with the keras-hub backbone as its one layer."""
    tower = hub_model(name, input_shape, weights, **overrides)
    images = keras.Input(tuple(input_shape), name="images")
    # DINOv2, CLIP and SigLIP take {"images": x}, ViT and DeiT the tensor.
    dict_input = isinstance(tower.input_shape, dict)
    outputs = tower({"images": images} if dict_input else images)
    return keras.Model(images, outputs, name=name)
