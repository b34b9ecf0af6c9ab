"""The one finite-difference gradient the loss tests compare against."""

import numpy as np


def finite_difference_grad(fn, x, h=1e-6):
    """Central differences ``(fn(x + h e_i) - fn(x - h e_i)) / 2h`` for every
    element i of the float64 array ``x``; ``fn`` returns a scalar."""
    x = np.asarray(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        grad[idx] = (fn(up) - fn(down)) / (2 * h)
    return grad
