"""Transforms of keras_dml.data.augment against their definitions.

References: torchvision's RandomResizedCrop / Resize / CenterCrop semantics
(area fraction in scale, aspect ratio w/h in ratio; shorter side to size
with the long side int(size * long / short); centre crop offsets
int(round((H - h) / 2))), computed here with PIL, which is what torchvision
uses on PIL images.
"""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_dml.data import augment


def coordinate_image(h, w):
    """uint8 image whose channel 0 is the row, channel 1 the column."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.uint8)


def test_random_resized_crop_boxes_follow_scale_and_ratio():
    h, w = 120, 200
    image = coordinate_image(h, w)
    layer = augment.RandomResizedCrop(48, 48, scale=(0.08, 1.0),
                                      ratio=(3 / 4, 4 / 3),
                                      interpolation="nearest",
                                      antialias=False, seed=3)
    areas, ratios = [], []
    for _ in range(60):
        out = layer(image).numpy()
        assert out.shape == (48, 48, 3) and out.dtype == np.float32
        # Nearest sampling of a coordinate image: the crop box is read back.
        r0, r1 = out[..., 0].min(), out[..., 0].max()
        c0, c1 = out[..., 1].min(), out[..., 1].max()
        bh, bw = r1 - r0 + 1, c1 - c0 + 1
        # Rows/cols increase monotonically inside the crop (no flip here).
        assert np.all(np.diff(out[:, 0, 0]) >= 0)
        assert np.all(np.diff(out[0, :, 1]) >= 0)
        areas.append(bh * bw / (h * w))
        ratios.append(bw / bh)
    areas, ratios = np.array(areas), np.array(ratios)
    # Nearest sampling of a 48-pixel output can miss up to ~1 source
    # row/column per 48-pixel step at each end, hence a little slack.
    assert areas.min() >= 0.06 and areas.max() <= 1.0
    whole = areas > 0.999            # fallback: the whole image
    assert (~whole).sum() >= 50      # fallbacks are rare with 10 attempts
    assert ratios[~whole].min() >= 0.7 and ratios[~whole].max() <= 1.4
    assert areas.std() > 0.1         # really random
    assert areas.min() < 0.3 and areas.max() > 0.6


def test_random_resized_crop_batch_and_eval_mode():
    images = np.stack([coordinate_image(64, 80)] * 4)
    layer = augment.RandomResizedCrop(32, 24, seed=1)
    out = layer(images).numpy()
    assert out.shape == (4, 32, 24, 3)
    # Different boxes per image of the batch.
    assert len({float(o[..., 0].mean()) for o in out}) > 1
    full = layer(images, training=False).numpy()
    ref = tf.image.resize(images.astype(np.float32), (32, 24),
                          antialias=True).numpy()
    np.testing.assert_allclose(full, ref, atol=1e-4)


def test_random_resized_crop_config_round_trip():
    layer = augment.RandomResizedCrop(10, 12, scale=(0.2, 0.9),
                                      ratio=(0.5, 2.0), seed=4)
    clone = augment.RandomResizedCrop.from_config(layer.get_config())
    assert (clone.height, clone.width, clone.scale, clone.ratio) == \
        (10, 12, (0.2, 0.9), (0.5, 2.0))
    with pytest.raises(ValueError, match="scale"):
        augment.RandomResizedCrop(10, 10, scale=(0.5, 1.5))
    with pytest.raises(ValueError, match="ratio"):
        augment.RandomResizedCrop(10, 10, ratio=(2.0, 1.0))


@pytest.mark.parametrize("hw", [(300, 400), (500, 300), (256, 257),
                                (224, 224)])
def test_eval_transform_matches_pil_resize_and_centre_crop(hw, rng):
    h, w = hw
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    # Smooth the noise a bit so both resamplers see the same signal.
    image = np.asarray(Image.fromarray(image).resize((w // 4, h // 4))
                       .resize((w, h), Image.BILINEAR))
    ours = augment.eval_transform(224)(image).numpy()
    assert ours.shape == (224, 224, 3) and ours.dtype == np.float32
    # torchvision Resize(256): short side 256, long side int(256*long/short).
    if w <= h:
        nw, nh = 256, int(256 * h / w)
    else:
        nw, nh = int(256 * w / h), 256
    ref = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR),
                     np.float32)
    top, left = int(round((nh - 224) / 2.0)), int(round((nw - 224) / 2.0))
    ref = ref[top:top + 224, left:left + 224]
    # Keras CenterCrop offsets (H - h) // 2 may differ from round() by one
    # pixel; PIL rounds its output to uint8.
    assert np.abs(ours - ref).mean() < 1.5


def test_resize_shorter_side_shapes():
    layer = augment.ResizeShorterSide(256)
    for (h, w) in [(300, 400), (400, 300), (100, 100), (333, 1000)]:
        out = layer(np.zeros((h, w, 3), np.uint8))
        short, long_ = min(h, w), max(h, w)
        expect_long = int(256 * long_ / short)
        expect = (256, expect_long) if h <= w else (expect_long, 256)
        assert tuple(out.shape[:2]) == expect


def test_default_resize_uses_authors_pairs():
    assert augment.default_resize(224) == 256
    assert augment.default_resize(256) == 292
    assert augment.default_resize(32) == 36
    with pytest.raises(ValueError):
        augment.eval_transform(224, resize=200)


def test_train_transform_in_tf_data_is_random_per_element_and_epoch():
    image = coordinate_image(40, 40)
    ds = tf.data.Dataset.from_tensors(image).repeat(16).map(
        augment.train_transform(20, seed=0))
    first = np.stack(list(ds.as_numpy_iterator()))
    second = np.stack(list(ds.as_numpy_iterator()))
    assert first.shape == (16, 20, 20, 3)
    # Different crops within an epoch and between epochs.
    assert len({round(float(x[..., 0].mean()), 3) for x in first}) > 8
    assert not np.allclose(first, second)
    # Horizontal flips: the column channel decreases along x in some.
    slopes = np.sign(first[:, 10, -1, 1] - first[:, 10, 0, 1])
    assert (slopes < 0).any() and (slopes > 0).any()


def test_grey_to_rgb():
    grey = np.full((28, 28, 1), 7, np.uint8)
    out = augment.train_transform(32, rgb=True)(grey).numpy()
    assert out.shape == (32, 32, 3)
    np.testing.assert_allclose(out, 7.0, atol=1e-3)
    out = augment.eval_transform(32, resize=0, rgb=True)(grey).numpy()
    assert out.shape == (32, 32, 3)
    with pytest.raises(TypeError, match="crop_impl"):     # keras-cv's crop is gone
        augment.train_transform(16, crop_impl="keras_cv")


def test_normalization_by_name_uses_backbone_preprocessing():
    x = np.array([[[10.0, 20.0, 30.0]]], np.float32)
    bgr = augment.get_normalization("bn_inception")(x).numpy()
    np.testing.assert_allclose(bgr[0, 0], [30 - 104, 20 - 117, 10 - 128])
    lite = augment.get_normalization("efficientnet_lite")(x).numpy()
    np.testing.assert_allclose(lite[0, 0], (x[0, 0] - 127) / 128)
    fn = lambda t: t * 2  # noqa: E731
    assert augment.get_normalization(fn) is fn
    with pytest.raises(ValueError, match="unknown preprocessing"):
        augment.get_normalization("nope")
