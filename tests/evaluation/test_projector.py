"""kd.evaluation.projector: the Embedding Projector files (checkpoint,
metadata TSV, sprite, config), the point cap and the sprite cap; and the
retrieval grid's unlabelled mode that ``keras-dml search`` draws."""

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins import projector as tb_projector

from keras_dml import plots
from keras_dml.data import Split
from keras_dml.evaluation import projector


def read_config(logdir):
    return text_format.Parse((logdir / projector.CONFIG_FILE).read_text(),
                             tb_projector.ProjectorConfig())


def test_projector_files_with_a_point_cap(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 8)).astype(np.float32)
    thumbs = rng.integers(0, 256, (30, 12, 12, 1), dtype=np.uint8)
    labels = np.arange(30) % 4
    names = [f"item\t{i}\nx" for i in range(30)]        # tabs and lines are cleaned
    paths = projector.write_projector(tmp_path, emb, {"label": labels, "name": names},
                                      thumbs, max_points=20, seed=1)
    keep = paths["indices"]
    assert len(keep) == 20 and np.all(np.diff(keep) > 0)
    np.testing.assert_array_equal(keep, projector.sample_indices(30, 20, seed=1))
    info, = read_config(tmp_path).embeddings
    # The checkpoint the plugin finds (relative `checkpoint` file) holds the sample.
    reader = tf.train.load_checkpoint(str(tmp_path))
    np.testing.assert_array_equal(reader.get_tensor(info.tensor_name), emb[keep])
    rows = (tmp_path / info.metadata_path).read_text().splitlines()
    assert rows[0] == "label\tname" and len(rows) == 21
    assert rows[1] == f"{labels[keep[0]]}\titem {keep[0]} x"
    with Image.open(tmp_path / info.sprite.image_path) as im:
        assert im.size == (5 * 12, 5 * 12) and im.mode == "RGB"     # ceil(sqrt(20)) = 5
        sprite = np.asarray(im)
    np.testing.assert_array_equal(sprite[:12, 12:24, 0], thumbs[keep[1], ..., 0])
    assert list(info.sprite.single_image_dim) == [12, 12]
    assert list(tmp_path.glob("events.out.tfevents.*"))
    # A rerun replaces the checkpoint rather than adding one.
    projector.write_projector(tmp_path, emb[:5])
    assert tf.train.load_checkpoint(str(tmp_path)).get_tensor(info.tensor_name).shape == (5, 8)
    assert len(list(tmp_path.glob("embeddings.ckpt-*.index"))) == 1


def test_sprite_is_capped_and_single_column_metadata_has_no_header(tmp_path):
    thumbs = np.full((100, 64, 64, 3), 200, np.uint8)
    grid, cell = projector.sprite_image(thumbs, max_size=256)
    assert cell == 25 and grid.shape == (250, 250, 3)
    assert np.all(grid[:25, :25] == 200) and grid.dtype == np.uint8
    path = projector.write_metadata_tsv(tmp_path / "m.tsv", {"label": [1, 2]})
    assert open(path).read() == "1\n2\n"
    with pytest.raises(ValueError, match="uint8"):
        projector.sprite_image(thumbs.astype(np.float32))
    with pytest.raises(ValueError, match="NaN"):
        projector.write_projector(tmp_path, np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="metadata column 'label'"):
        projector.write_projector(tmp_path, np.ones((2, 3)), {"label": [1]})
    assert projector.thumbnail_size(10, 3) == 64
    assert projector.thumbnail_size(10 ** 6, 3, smallest=16) == 16


def test_thumbnails_fit_keep_aspect_and_copy_same_size():
    rng = np.random.default_rng(0)
    same = rng.integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    split = Split.from_arrays("t", same, np.zeros(3, np.int32))
    np.testing.assert_array_equal(projector.thumbnails(split, 8), same)
    wide = Split.from_arrays("w", np.zeros((2, 10, 40, 3), np.uint8), np.zeros(2, np.int32))
    t = projector.thumbnails(wide, 16, indices=[1])
    assert t.shape == (1, 16, 16, 3)
    # 10 x 40 -> 4 x 16, centred: black rows in the middle, white padding around.
    assert np.all(t[0, 6:10] == 0) and np.all(t[0, :6] == 255) and np.all(t[0, 10:] == 255)


def test_retrieval_grid_unlabelled_queries_get_grey_borders(tmp_path):
    images = np.zeros((3, 8, 8), np.uint8)
    path = plots.retrieval_grid(images[:1], images, None, None, np.array([[0, 1]]),
                                str(tmp_path / "g.png"), cell_size=16, border=2,
                                unlabelled=True)
    with Image.open(path) as im:
        grid = np.asarray(im.convert("RGB")).astype(float) / 255
    # The first result's top-left border pixel: x0 = border + tile + border +
    # the query column's extra 2 * border, y0 = the legend header + border
    # (tile = 16 + 2 * 2).
    x0 = 2 + (16 + 4) + 2 + 4
    y0 = plots.LEGEND_HEIGHT + 2
    np.testing.assert_allclose(grid[y0, x0], plots.NEUTRAL_COLOUR, atol=0.01)
    np.testing.assert_allclose(grid[y0, 2], plots.QUERY_COLOUR, atol=0.01)
