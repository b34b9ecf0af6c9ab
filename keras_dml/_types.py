"""Type aliases of the public API's annotations.

Keras 3 tensors have no common static type across TensorFlow, JAX and
PyTorch, so these are documentation aliases of ``Any``.
"""

from typing import Any

#: A backend tensor (TensorFlow, JAX or PyTorch), a numpy array or nested lists.
TensorLike = Any
#: A tensor of the Keras backend in use.
Tensor = Any
