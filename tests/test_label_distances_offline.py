"""label_distances/offline.py: the chunked pairwise builder vs the in-batch distances."""

import numpy as np

from keras_dml import label_distances as ld


def test_pairwise_label_distances_chunked(rng, tmp_path):
    y = rng.normal(size=(11, 3))
    full = ld.squared_l2(y).numpy()
    for chunk in (1, 3, 4, 100):
        got = ld.pairwise_label_distances(y, "squared_l2", chunk_size=chunk)
        np.testing.assert_allclose(got, full, rtol=1e-6, atol=1e-6)
        assert got.dtype == np.float32 and np.all(np.diag(got) == 0)
    y2 = rng.normal(size=(5, 3))
    got = ld.pairwise_label_distances(y, chunk_size=4, labels2=y2)
    np.testing.assert_allclose(got, ld.squared_l2(y, y2).numpy(), rtol=1e-6)
    # Into a memmap on disk.
    out = np.lib.format.open_memmap(tmp_path / "dy.npy", mode="w+", dtype=np.float32,
                                    shape=(11, 11))
    ld.pairwise_label_distances(y, chunk_size=3, out=out)
    out.flush()
    np.testing.assert_allclose(np.load(tmp_path / "dy.npy"), full, rtol=1e-6, atol=1e-6)


def test_pairwise_label_distances_tuple_callable_and_kwargs(rng):
    y = rng.normal(size=(7, 6))
    vis = rng.uniform(size=(7, 3)) > 0.2
    vis[:, 0] = True
    got = ld.pairwise_label_distances((y, vis), "squared_l2", chunk_size=2)
    np.testing.assert_allclose(got, ld.squared_l2(y, visibility=vis).numpy(), rtol=1e-6, atol=1e-6)
    maps = rng.integers(0, 3, size=(6, 4, 4))
    got = ld.pairwise_label_distances(maps, "one_minus_miou", chunk_size=4, num_classes=3)
    np.testing.assert_allclose(got, ld.one_minus_miou(maps, num_classes=3).numpy(), atol=1e-7)
    manhattan = lambda a, b: np.abs(a[:, None] - b[None]).sum(-1)   # noqa: E731
    got = ld.pairwise_label_distances(y, manhattan, chunk_size=3)
    np.testing.assert_allclose(got, manhattan(y, y), rtol=1e-6)
