"""Split / pipelines of keras_dml.data.core on image files written here."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_dml.data import augment, core
from keras_dml.data.core import Split, make_eval_pipeline, make_train_pipeline
from keras_dml.data.samplers import MPerClassSampler


def write_images(tmp_path, n, size=(6, 5), fmt="PNG", value_of=lambda i: i):
    """n images whose pixels all equal value_of(i) (identifies the image)."""
    paths = []
    for i in range(n):
        p = tmp_path / f"im{i}.{fmt.lower()}"
        Image.fromarray(np.full((*size, 3), value_of(i), np.uint8)).save(
            p, format=fmt)
        paths.append(str(p))
    return paths


def ids_of(images):
    """The identifying pixel value of each image in a batch."""
    return np.round(np.asarray(images)[:, 0, 0, 0]).astype(int)


def test_split_from_files_decodes_in_order(tmp_path, rng):
    paths = []
    arrays = []
    for i in range(5):
        a = rng.integers(0, 256, (7 + i, 9, 3), dtype=np.uint8)
        p = tmp_path / f"{i}.png"
        Image.fromarray(a).save(p)
        paths.append(str(p))
        arrays.append(a)
    grey = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    paths.append(str(tmp_path / "grey.png"))
    arrays.append(np.repeat(grey[..., None], 3, -1))
    split = Split.from_files("train", paths, np.arange(6) * 10)
    assert len(split) == 6 and split.image_shape == (None, None, 3)
    out = list(split.dataset().as_numpy_iterator())
    for (image, label), ref, lab in zip(out, arrays, np.arange(6) * 10):
        assert image.dtype == np.uint8
        np.testing.assert_array_equal(image, ref)
        assert label == lab


def corrupt_set(tmp_path):
    paths = write_images(tmp_path, 6, fmt="JPEG", value_of=lambda i: 40 * i)
    good = open(paths[1], "rb").read()
    with open(paths[1], "wb") as f:          # truncated JPEG
        f.write(good[:len(good) // 2])
    with open(paths[3], "wb") as f:          # empty file
        f.write(b"")
    os.remove(paths[4])                      # missing file
    return paths


def test_corrupt_images_raise_naming_the_file(tmp_path):
    paths = corrupt_set(tmp_path)
    split = Split.from_files("train", paths, np.arange(6))
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        list(split.dataset().as_numpy_iterator())
    assert "im1.jpeg" in str(err.value)
    assert "cannot read or decode image" in str(err.value)
    # The same inside a training pipeline (shuffled, augmented, batched).
    ds = make_train_pipeline(split, 2, augment=augment.train_transform(4))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"im[134]\.jpeg"):
        list(ds)


def test_corrupt_images_skip_and_verify(tmp_path, capfd):
    paths = corrupt_set(tmp_path)
    split = Split.from_files("train", paths, np.arange(6))
    labels = [int(y) for _, y in split.dataset(on_corrupt="skip")]
    assert labels == [0, 2, 5]
    err = capfd.readouterr().err
    for bad in ("im1.jpeg", "im3.jpeg", "im4.jpeg"):
        assert bad in err
    assert sorted(os.path.basename(p) for p in split.verify()) == \
        ["im1.jpeg", "im3.jpeg", "im4.jpeg"]
    with pytest.raises(ValueError, match="on_corrupt"):
        split.dataset(on_corrupt="ignore")


def test_from_encoded_and_from_arrays(tmp_path):
    blobs = []
    for i in range(4):
        buf = io.BytesIO()
        Image.fromarray(np.full((3, 4, 3), 10 * i, np.uint8)).save(
            buf, format="PNG")
        blobs.append(buf.getvalue())
    blobs[2] = b"not an image"
    split = Split.from_encoded("test", blobs, [0, 1, 2, 3],
                               names=["a", "b", "c", "d"])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\bc\b"):
        list(split.dataset())
    got = [(int(x[0, 0, 0]), int(y)) for x, y in
           split.dataset(on_corrupt="skip")]
    assert got == [(0, 0), (10, 1), (30, 3)]

    images = np.arange(5, dtype=np.uint8)[:, None, None, None] * \
        np.ones((1, 2, 3, 1), np.uint8)
    arr = Split.from_arrays("a", images, np.arange(5) % 2)
    assert arr.image_shape == (2, 3, 1) and arr.fixed_shape
    out = list(arr.dataset().as_numpy_iterator())
    assert [int(x[0, 0, 0]) for x, _ in out] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="uint8"):
        Split.from_arrays("a", images.astype(np.float32), np.arange(5))


def test_big_tables_go_through_numpy_lookup(tmp_path, monkeypatch):
    monkeypatch.setattr(core, "_MAX_CONSTANT_BYTES", 1)
    paths = write_images(tmp_path, 4)
    labels = np.arange(8, dtype=np.float32).reshape(4, 2)
    split = Split.from_files("t", paths, labels)
    out = list(split.dataset().as_numpy_iterator())
    np.testing.assert_array_equal(np.stack([y for _, y in out]), labels)
    assert [int(x[0, 0, 0]) for x, _ in out] == [0, 1, 2, 3]


def test_train_pipeline_shuffles_indices_every_epoch(tmp_path):
    n = 23
    paths = write_images(tmp_path, n)
    split = Split.from_files("train", paths, np.arange(n, dtype=np.int32),
                             image_shape=(6, 5))
    ds = make_train_pipeline(split, 5, drop_remainder=False, seed=1)
    epochs = []
    for _ in range(2):
        ids, labels = [], []
        for x, y in ds:
            assert x.dtype == tf.float32 and y.dtype == tf.int32
            ids.extend(ids_of(x))
            labels.extend(y.numpy())
        assert ids == labels                    # images match their labels
        assert sorted(ids) == list(range(n))    # every example once
        epochs.append(ids)
    assert epochs[0] != epochs[1]               # reshuffled
    assert epochs[0] != list(range(n))
    # drop_remainder (training default): only full batches.
    sizes = [int(x.shape[0]) for x, _ in make_train_pipeline(split, 5)]
    assert sizes == [5, 5, 5, 5]


def test_train_pipeline_cache_and_normalize(tmp_path):
    n = 12
    paths = write_images(tmp_path, n, value_of=lambda i: 10 * i)
    split = Split.from_files("train", paths, np.arange(n), image_shape=(6, 5))
    ds = make_train_pipeline(split, 4, cache=True, normalize="inception",
                             seed=0, drop_remainder=False)
    uncached = make_train_pipeline(split, 4, cache=False, seed=0, drop_remainder=False)
    seen = []
    for epoch in range(2):
        ids = []
        for x, y in ds:
            np.testing.assert_allclose(
                x.numpy()[:, 0, 0, 0], 10 * y.numpy() / 127.5 - 1, atol=1e-6)
            ids.extend(y.numpy())
        assert sorted(ids) == list(range(n))
        seen.append(ids)
        if epoch == 0:
            # Cached: the second epoch reads memory, not the files.
            for path in paths:
                os.remove(path)
    assert seen[0] != seen[1]
    with pytest.raises(tf.errors.InvalidArgumentError, match="cannot read or decode"):
        list(uncached)                                     # cache=False reads them


def test_train_pipeline_with_m_per_class_sampler(tmp_path):
    labels = np.repeat(np.arange(6), 5).astype(np.int32)   # 6 classes x 5
    paths = write_images(tmp_path, len(labels))
    split = Split.from_files("train", paths, labels)
    sampler = MPerClassSampler(labels, m=3, batch_size=9,
                               batches_per_epoch=4, seed=0)
    ds = make_train_pipeline(split, 9, augment=augment.train_transform(4),
                             sampler=sampler)
    batches = list(ds)
    assert len(batches) == 4
    for x, y in batches:
        assert x.shape == (9, 4, 4, 3)
        counts = np.bincount(y.numpy(), minlength=6)
        assert sorted(counts[counts > 0]) == [3, 3, 3]
        # Each image is the one its label says (pixel value = index).
        np.testing.assert_array_equal(labels[ids_of(x)], y.numpy())
    assert len(list(ds)) == 4                  # a fresh epoch per iteration


def test_train_pipeline_with_plain_iterable_sampler(tmp_path):
    paths = write_images(tmp_path, 8)
    split = Split.from_files("train", paths, np.arange(8), image_shape=(6, 5))
    order = [[7, 0, 3], [2, 2, 5]]
    ds = make_train_pipeline(split, 3, sampler=order)
    got = [list(ids_of(x)) for x, _ in ds]
    assert got == order
    with pytest.raises(Exception, match="outside"):
        list(make_train_pipeline(split, 3, sampler=[[0, 1, 99]]))
    with pytest.raises(Exception, match="batch of 2"):
        list(make_train_pipeline(split, 3, sampler=[[0, 1]]))


def test_pipeline_argument_errors(tmp_path):
    paths = [str(p) for p in write_images(tmp_path, 3)]
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / "big.png")
    varying = Split.from_files("v", paths + [str(tmp_path / "big.png")],
                               np.arange(4))
    with pytest.raises(ValueError, match="varying size"):
        make_train_pipeline(varying, 2)
    with pytest.raises(ValueError, match="varying size"):
        make_eval_pipeline(varying, 2)
    # A declared size is enforced like a decoding failure.
    declared = Split.from_files("d", paths + [str(tmp_path / "big.png")],
                                np.arange(4), image_shape=(6, 5))
    assert declared.fixed_shape
    with pytest.raises(tf.errors.InvalidArgumentError, match="big.png"):
        list(make_eval_pipeline(declared, 2))
    sampler = MPerClassSampler(np.array([0, 0, 1, 1]), m=2, batch_size=4)
    with pytest.raises(ValueError, match="batches of 4"):
        make_train_pipeline(varying, 2, augment=augment.train_transform(4),
                            sampler=sampler)
    with pytest.raises(ValueError, match="cache"):
        make_train_pipeline(varying, 4, augment=augment.train_transform(4),
                            sampler=sampler, cache=True)
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((4, 2, 2, 3)),
                                             np.arange(4)))
    with pytest.raises(ValueError, match="Split"):
        make_train_pipeline(ds, 2, sampler=sampler)
    with pytest.raises(TypeError):
        make_train_pipeline([1, 2], 2)
    with pytest.raises(ValueError, match="batch_size"):
        make_eval_pipeline(varying, 0)


def test_eval_pipeline_keeps_order_and_last_batch(tmp_path):
    paths = write_images(tmp_path, 7, size=(30, 40))
    split = Split.from_files("test", paths, np.arange(7))
    ds = make_eval_pipeline(split, 3, transform=augment.eval_transform(16),
                            normalize="torch_imagenet")
    sizes, ids = [], []
    for x, y in ds:
        sizes.append(int(x.shape[0]))
        assert x.shape[1:] == (16, 16, 3)
        ids.extend(y.numpy())
    assert sizes == [3, 3, 1] and ids == list(range(7))
    # A plain tf.data source works too.
    plain = tf.data.Dataset.from_tensor_slices(
        (np.zeros((5, 4, 4, 3), np.uint8), np.arange(5)))
    assert [int(x.shape[0]) for x, _ in make_eval_pipeline(plain, 2)] == \
        [2, 2, 1]


def test_subset_and_remap_labels(tmp_path):
    paths = write_images(tmp_path, 6)
    split = Split.from_files("train", paths, np.array([5, 9, 5, 7, 9, 5]))
    sub = split.subset([4, 1, 0])
    assert list(sub.labels) == [9, 9, 5]
    assert [int(x[0, 0, 0]) for x, _ in sub.dataset()] == [4, 1, 0]
    new, classes = core.remap_labels(split.labels)
    assert list(new) == [0, 2, 0, 1, 2, 0] and list(classes) == [5, 7, 9]
    assert split.num_classes == 3


def test_pipelines_declare_their_number_of_batches(tmp_path):
    paths = write_images(tmp_path, 10)
    split = Split.from_files("t", paths, np.arange(10) % 2, image_shape=(6, 5))
    card = lambda ds: int(ds.cardinality())  # noqa: E731
    assert card(make_train_pipeline(split, 3)) == 3
    assert card(make_train_pipeline(split, 3, drop_remainder=False)) == 4
    assert card(make_eval_pipeline(split, 4)) == 3
    sampler = MPerClassSampler(split.labels, m=2, batch_size=4,
                               batches_per_epoch=5)
    assert card(make_train_pipeline(split, 4, sampler=sampler)) == 5
    # With skipping the count is unknown, and not declared.
    assert card(make_train_pipeline(split, 3, on_corrupt="skip")) < 0
    assert len(list(make_train_pipeline(split, 3))) == 3


def test_train_pipeline_feeds_keras_fit(tmp_path):
    import keras
    paths = write_images(tmp_path, 12, size=(10, 9))
    split = Split.from_files("t", paths, np.arange(12) % 3)
    ds = make_train_pipeline(split, 4, augment=augment.train_transform(8),
                             normalize="inception")
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    history = model.fit(ds, epochs=2, verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 2
    assert np.isfinite(history.history["loss"]).all()


def test_train_and_eval_pipelines_agree_on_grey_images_for_rgb_backbones():
    # Issue 17.9: make_eval_pipeline(normalize="bn_inception") failed on grey
    # Fashion-MNIST while the train pipeline went through; both give RGB now.
    import keras_dml as kd
    rng = np.random.default_rng(0)
    grey = kd.data.Split.from_arrays("g", rng.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8),
                                     np.arange(6) % 2)
    rgb = kd.data.Split.from_arrays("c", np.repeat(grey_images(grey), 3, axis=-1),
                                    np.arange(6) % 2)
    got = next(iter(kd.data.make_eval_pipeline(
        grey, 6, transform=kd.data.eval_transform(32), normalize="bn_inception")))[0]
    want = next(iter(kd.data.make_eval_pipeline(
        rgb, 6, transform=kd.data.eval_transform(32), normalize="bn_inception")))[0]
    assert got.shape == (6, 32, 32, 3)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4)
    train = next(iter(kd.data.make_train_pipeline(
        grey, 3, augment=kd.data.train_transform(32), normalize="bn_inception")))[0]
    assert train.shape == (3, 32, 32, 3)
    # identity keeps the grey channel.
    ident = next(iter(kd.data.make_eval_pipeline(grey, 6, normalize="identity")))[0]
    assert ident.shape == (6, 28, 28, 1)


def grey_images(split):
    return np.stack([x.numpy() for x, _ in split.dataset()])
