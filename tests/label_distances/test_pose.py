"""label_distances/pose.py: squared L2 (with visibility) vs a numpy loop reference."""

import numpy as np
import pytest

from backend_tools import to_numpy
from continuous_tools import assert_close
from keras_dml import label_distances as ld
from keras_dml._backend import full_precision

pytestmark = pytest.mark.backends


@pytest.fixture(autouse=True)
def _float64():
    # float64 inputs stay float64 under JAX too (x64 for each test; PyTorch
    # computes them in float32: Keras 3.15 maps 64-bit to 32-bit there).
    with full_precision():
        yield


def ref_masked_sq_l2(y1, y2, v1, v2):
    out = np.zeros((len(y1), len(y2)))
    num = y1.shape[1]
    for i in range(len(y1)):
        for j in range(len(y2)):
            s, n = 0.0, 0
            for k in range(num):
                if v1[i, k] and v2[j, k]:
                    s += (y1[i, k] - y2[j, k]) ** 2
                    n += 1
            out[i, j] = num * s / n if n else np.nan
    return out


def test_squared_l2_plain(rng):
    y1 = rng.normal(size=(6, 4))
    y2 = rng.normal(size=(3, 4))
    ones1, ones2 = np.ones_like(y1), np.ones_like(y2)
    assert_close(to_numpy(ld.squared_l2(y1, y2)),
                               ref_masked_sq_l2(y1, y2, ones1, ones2), rtol=1e-10)
    within = to_numpy(ld.squared_l2(y1))
    assert_close(within, ref_masked_sq_l2(y1, y1, ones1, ones1), atol=1e-12)
    assert np.all(np.diag(within) == 0)
    # Scalar labels [N] are [N, 1].
    assert_close(to_numpy(ld.squared_l2(y1[:, 0])),
                               (y1[:, :1] - y1[:, 0]) ** 2, atol=1e-12)


def test_squared_l2_float32_far_from_origin(rng):
    y = rng.normal(size=(20, 32)) * 3 + 250.0      # pixel coordinates
    got = to_numpy(ld.squared_l2(y.astype("float32")))
    ref = ((y[:, None] - y[None]) ** 2).sum(-1)
    assert_close(got, ref, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("per_joint", [True, False])
def test_squared_l2_visibility(rng, per_joint):
    n1, n2, joints = 5, 4, 6
    y1 = rng.normal(size=(n1, 2 * joints))
    y2 = rng.normal(size=(n2, 2 * joints))
    if per_joint:
        vj1 = rng.uniform(size=(n1, joints)) > 0.3
        vj2 = rng.uniform(size=(n2, joints)) > 0.3
        vj1[:, 0] = vj2[:, 0] = True                 # every pair overlaps
        v1, v2 = np.repeat(vj1, 2, axis=1), np.repeat(vj2, 2, axis=1)
        arg1, arg2 = vj1, vj2
    else:
        v1 = rng.uniform(size=y1.shape) > 0.3
        v2 = rng.uniform(size=y2.shape) > 0.3
        v1[:, 0] = v2[:, 0] = True
        arg1, arg2 = v1.astype("float32"), v2.astype("int32")
    ref = ref_masked_sq_l2(y1, y2, v1, v2)
    # Invisible coordinates may hold garbage: they must not be read.
    y1_bad = np.where(v1, y1, np.nan)
    got = to_numpy(ld.squared_l2(y1_bad, y2, visibility=arg1, visibility2=arg2))
    assert_close(got, ref, rtol=1e-10)
    within = to_numpy(ld.squared_l2(y1_bad, visibility=arg1))
    assert_close(within, ref_masked_sq_l2(y1, y1, v1, v1), rtol=1e-10, atol=1e-12)
    # All visible == plain.
    assert_close(
        to_numpy(ld.squared_l2(y1, y2, visibility=np.ones_like(y1))),
        to_numpy(ld.squared_l2(y1, y2)), rtol=1e-10)


def test_squared_l2_no_overlap():
    y = np.arange(8, dtype="float64").reshape(2, 4)
    vis = np.array([[1, 1, 0, 0], [0, 0, 1, 1]])
    with pytest.raises(ValueError, match="jointly visible"):
        ld.squared_l2(y, visibility=vis)
    d = to_numpy(ld.squared_l2(y, visibility=vis, no_overlap_value=7.0))
    assert d[0, 1] == d[1, 0] == 7.0
    assert d[0, 0] == d[1, 1] == 0.0
    with pytest.raises(ValueError, match="per joint"):
        ld.squared_l2(y, visibility=np.ones((2, 3)))
