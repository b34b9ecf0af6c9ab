"""MPII loader on a fixture .mat written with scipy.io.savemat in the
release's nested struct layout (RELEASE.annolist(i).annorect(r)...)."""

import numpy as np
import pytest
import scipy.io
from PIL import Image

from data_fixtures import person, rects
from keras_dml.data import DataNotFoundError, make_train_pipeline, mpii


def write_mpii(root, rng):
    """Six images: valid persons, missing joints, no persons, a test image,
    a person without objpos; odd is_visible encodings as in the release."""
    h, w = 100, 120
    people = {}

    def joints_around(ox, oy, s):
        return np.stack([ox + rng.uniform(-40, 40, 16) * s / 0.5,
                         oy + rng.uniform(-50, 50, 16) * s / 0.5], 1)

    img_names = [f"{i:09d}.jpg" for i in range(6)]
    annolist = np.zeros((1, 6), [("image", "O"), ("annorect", "O"),
                                 ("frame_sec", "O"), ("vididx", "O")])
    # image 0: a full person (visibility as ints, strings and empty) + a
    # person missing three joints.
    j0 = joints_around(60, 50, 0.3)
    vis = [1, 0, "1", "0", np.empty((0, 0))] + [1] * 11
    jb = joints_around(30, 40, 0.2)
    annolist[0, 0] = ({"name": img_names[0]},
                      rects(person(j0, 0.3, (60, 50), visible=vis),
                            person(jb, 0.2, (30, 40), skip=(2, 5, 9))),
                      np.empty((0, 0)), np.empty((0, 0)))
    people[0] = (j0, 0.3, (60, 50))
    # image 1: a single person (saved as a 1x1 struct -> squeezed scalar),
    # near the left border so that the crop is padded.
    j1 = joints_around(8, 50, 0.25)
    annolist[0, 1] = ({"name": img_names[1]},
                      rects(person(j1, 0.25, (8, 50))),
                      np.empty((0, 0)), np.empty((0, 0)))
    people[1] = (j1, 0.25, (8, 50))
    # image 2: no annotated person.
    annolist[0, 2] = ({"name": img_names[2]}, np.empty((0, 0)),
                      np.empty((0, 0)), np.empty((0, 0)))
    # image 3: a released test image: objpos and scale only.
    test_rect = np.zeros((1, 1), [("scale", "O"), ("objpos", "O")])
    test_rect[0, 0] = (0.4, {"x": 50.0, "y": 50.0})
    annolist[0, 3] = ({"name": img_names[3]}, test_rect, np.empty((0, 0)),
                      np.empty((0, 0)))
    # image 4: full joints but no objpos.
    annolist[0, 4] = ({"name": img_names[4]},
                      rects(person(joints_around(60, 50, 0.3), 0.3, None)),
                      np.empty((0, 0)), np.empty((0, 0)))
    # image 5: two full persons.
    j5a = joints_around(40, 45, 0.3)
    j5b = joints_around(85, 55, 0.35)
    annolist[0, 5] = ({"name": img_names[5]},
                      rects(person(j5a, 0.3, (40, 45)),
                            person(j5b, 0.35, (85, 55))),
                      np.empty((0, 0)), np.empty((0, 0)))
    people[5] = [(j5a, 0.3, (40, 45)), (j5b, 0.35, (85, 55))]
    release = {
        "annolist": annolist,
        "img_train": np.array([[1, 1, 1, 0, 1, 1]], np.uint8),
        "version": "12",
        "single_person": np.array([[np.array([1, 2])], [1], [np.empty(0)],
                                   [1], [1], [np.array([1, 2])]],
                                  dtype=object),
        "video_list": np.array([["a"]], dtype=object),
    }
    scipy.io.savemat(root / mpii.ANNOTATION_FILE, {"RELEASE": release})
    (root / "images").mkdir()
    for name in img_names:
        Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(
            root / "images" / name, quality=95)
    return people, img_names


def test_read_annotations_parses_the_nested_structs(tmp_path, rng):
    people, names = write_mpii(tmp_path, rng)
    ann = mpii.read_annotations(tmp_path / mpii.ANNOTATION_FILE)
    # Persons with scale and objpos: img0 x2, img1, img3, img5 x2.
    assert list(ann["image_index"]) == [0, 0, 1, 3, 5, 5]
    assert list(ann["rect_index"]) == [0, 1, 0, 0, 0, 1]
    assert list(ann["train"]) == [True, True, True, False, True, True]
    assert ann["annotated"].sum(1).tolist() == [16, 13, 16, 0, 16, 16]
    j0, s0, (ox, oy) = people[0]
    np.testing.assert_allclose(ann["joints"][0, :, :2], j0 - 1, rtol=1e-6)
    np.testing.assert_allclose(ann["objpos"][0], [ox - 1, oy - 1])
    assert ann["scale"][0] == pytest.approx(s0)
    # is_visible: 1, 0, "1", "0", empty (-> visible), then ones.
    assert ann["joints"][0, :5, 2].tolist() == [1, 0, 1, 0, 1]
    assert np.isnan(ann["joints"][1, 2, 0])
    assert ann["image"][2] == names[1]


def test_load_mpii_labels_split_and_crops(tmp_path, rng):
    people, names = write_mpii(tmp_path, rng)
    data = mpii.load_mpii(tmp_path, crop_size=30, seed=0)
    assert data.label_type == "pose" and data.num_train_classes is None
    total = len(data.train) + len(data.test)
    assert total == 4                          # img0-A, img1, img5 x2
    # Split by image: both persons of image 5 on the same side.
    sides = {}
    for part in ("train", "test"):
        for idx in getattr(data, part).info["image_index"]:
            sides.setdefault(idx, set()).add(part)
    assert all(len(s) == 1 for s in sides.values())
    assert sorted([len(data.train), len(data.test)]) in ([1, 3], [2, 2])
    # Labels: (joint - objpos) / (200 scale), numpy reference.
    for part in ("train", "test"):
        split = getattr(data, part)
        assert split.labels.shape == (len(split), 32)
        assert split.labels.dtype == np.float32
        for k, img in enumerate(split.info["image_index"]):
            r = split.info["rect_index"][k]
            entry = people[img] if img != 5 else people[5][r]
            joints, scale, objpos = entry
            ref = ((joints - np.asarray(objpos)) / (200 * scale)).reshape(-1)
            np.testing.assert_allclose(split.labels[k], ref, rtol=1e-5,
                                       atol=1e-6)
        for image, label in split.dataset():
            assert image.shape == (30, 30, 3) and image.dtype.name == "uint8"
            assert label.shape == (32,)
    pelvis = mpii.load_mpii(tmp_path, crop_size=30, seed=0, center="pelvis")
    lab = pelvis.train.labels.reshape(-1, 16, 2)
    np.testing.assert_allclose(lab[:, 6], 0, atol=1e-7)


def test_person_crop_geometry(tmp_path, rng):
    """A bright marker at a joint lands where the label says it should."""
    people, names = write_mpii(tmp_path, rng)
    crop_size, crop_scale = 40, 1.25
    # Paint a marker on image 5 at person A's joint 7 (0-based coords).
    j5a, s5a, _ = people[5][0]
    x, y = j5a[7] - 1
    img = np.full((100, 120, 3), 128, np.uint8)
    yy, xx = np.mgrid[0:100, 0:120]
    blob = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0 ** 2))
    img = np.clip(img + 127 * blob[..., None], 0, 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "images" / names[5], format="PNG")
    data = mpii.load_mpii(tmp_path, crop_size=crop_size,
                          crop_scale=crop_scale, seed=0)
    for split in (data.train, data.test):
        for k, (image, label) in enumerate(split.dataset()):
            if split.info["image_index"][k] != 5 or \
                    split.info["rect_index"][k] != 0:
                continue
            bright = np.clip(image.numpy()[..., 0].astype(float) - 128, 0,
                             None)
            rows, cols = np.mgrid[0:crop_size, 0:crop_size] + 0.5
            cy = (bright * rows).sum() / bright.sum()
            cx = (bright * cols).sum() / bright.sum()
            lx, ly = label.numpy()[14:16]
            # Edge coordinates: crop_size / 2 + label * crop_size / scale.
            assert cx == pytest.approx(crop_size / 2 + lx * crop_size /
                                       crop_scale, abs=0.6)
            assert cy == pytest.approx(crop_size / 2 + ly * crop_size /
                                       crop_scale, abs=0.6)
            break
        else:
            continue
        break
    else:
        pytest.fail("person 5/0 not found")
    # Image 1's person stands at the left border: its crop is zero-padded.
    checked = 0
    for split in (data.train, data.test):
        for k, (image, _) in enumerate(split.dataset()):
            if split.info["image_index"][k] == 1:
                left = image.numpy()[:, :5]
                assert (left == 0).all()
                assert (image.numpy()[:, -5:] > 100).all()
                checked += 1
    assert checked == 1


def test_pose_transforms_and_pipeline(tmp_path, rng):
    write_mpii(tmp_path, rng)
    data = mpii.load_mpii(tmp_path, crop_size=36, seed=0)
    ds = make_train_pipeline(data.train, 1,
                             augment=mpii.pose_train_transform(28))
    for x, y in ds:
        assert x.shape == (1, 28, 28, 3) and y.shape == (1, 32)
    out = mpii.pose_eval_transform(28)(np.zeros((36, 36, 3), np.uint8))
    assert out.shape == (28, 28, 3)


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(DataNotFoundError, match="human-pose.mpi-inf"):
        mpii.load_mpii(tmp_path)
    scipy.io.savemat(tmp_path / mpii.ANNOTATION_FILE, {"other": 1})
    with pytest.raises(ValueError, match="RELEASE"):
        mpii.load_mpii(tmp_path)
    with pytest.raises(ValueError, match="test_fraction"):
        mpii.load_mpii(tmp_path, test_fraction=1.5)


def test_label_space_sampler_batches(tmp_path, rng):
    """The authors' batches (anchor, its nearest pose, others) through the
    pipeline keep the sampler's order: labels follow the indices."""
    from keras_dml.data.samplers import LabelSpaceBatchSampler, nearest_neighbours
    write_mpii(tmp_path, rng)
    data = mpii.load_mpii(tmp_path, crop_size=32, seed=0, test_fraction=0.1)
    labels = data.train.labels
    n = len(labels)
    assert n >= 2
    nbrs, _ = nearest_neighbours(labels, k=1)
    sampler = LabelSpaceBatchSampler(nbrs, batch_size=n, num_neighbours=1,
                                     seed=0)
    ds = make_train_pipeline(data.train, n, sampler=sampler,
                             augment=mpii.pose_train_transform(24))
    assert int(ds.cardinality()) == n
    for (x, y), idx in zip(ds, sampler.epoch_batches(0)):
        assert x.shape == (n, 24, 24, 3)
        np.testing.assert_allclose(y.numpy(), labels[idx])
        d = ((labels - labels[idx[0]]) ** 2).sum(1)
        d[idx[0]] = np.inf
        assert idx[1] == int(np.argmin(d))
