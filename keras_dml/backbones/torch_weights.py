"""Read PyTorch ``.pth`` state dicts with numpy only (no ``import torch``).

PyTorch writes tensors in one of two layouts:

* **legacy** (``torch.save`` before 1.6, or ``_use_new_zipfile_serialization=
  False``): five pickles back to back -- a magic number, the protocol
  version, a ``sys_info`` dict, the object itself and the list of storage
  keys -- followed by the raw storages, each as an int64 element count and
  then ``count * itemsize`` bytes, in the order of that key list;
* **zip** (the default since 1.6): a zip archive ``<name>/data.pkl`` holding
  the pickled object and ``<name>/data/<key>`` holding each raw storage.

In both, the pickled object refers to storages through ``persistent_id``
tuples ``("storage", storage_type, key, location, numel[, view])`` and
builds tensors with ``torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, ...)``. The unpickler below resolves *only* those names (plus
``collections.OrderedDict``); any other global is refused, so reading an
untrusted file cannot run code.
"""

import collections
import pickle
import zipfile

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_BFLOAT16 = "bfloat16"

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": _BFLOAT16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class TorchFileError(ValueError):
    """The file is not a PyTorch state dict this reader understands."""


class _StorageType:
    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    @property
    def itemsize(self):
        return 2 if self.dtype is _BFLOAT16 else np.dtype(self.dtype).itemsize


class _Storage:
    """A storage whose bytes may arrive after the pickle (legacy layout)."""

    def __init__(self, storage_type, key, numel):
        self.storage_type = storage_type
        self.key = key
        self.numel = numel
        self.array = None  # flat numpy array, filled in later
        self.view = None   # (root _Storage, offset, size) for legacy views

    def flat(self):
        if self.view is not None:
            root, offset, size = self.view
            return root.flat()[offset:offset + size]
        if self.array is None:
            raise TorchFileError(f"storage {self.key!r} has no data in the file")
        return self.array


class _TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)

    def materialize(self):
        flat = self.storage.flat()
        if not self.size:
            return np.array(flat[self.offset])
        needed = self.offset + 1 + sum(
            (n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, dtype=flat.dtype)
        if needed > flat.size:
            raise TorchFileError("tensor extends past the end of its storage")
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.size,
            strides=tuple(s * itemsize for s in self.stride), writeable=False)
        return np.array(view)  # contiguous copy


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *unused):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    return data


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages):
        super().__init__(file)
        self._storages = storages  # key -> _Storage

    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise TorchFileError(
            f"refusing to load {module}.{name}: only plain tensor state dicts "
            "(no pickled modules or custom classes) can be read without torch.")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise TorchFileError(f"unsupported persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise TorchFileError(f"unsupported storage type {storage_type!r}")
        key = str(key)
        view = pid[5] if len(pid) > 5 else None
        if key not in self._storages:
            self._storages[key] = _Storage(storage_type, key, int(numel))
        root = self._storages[key]
        if view is None:
            return root
        view_key, offset, view_size = view
        if view_key not in self._storages:
            sub = _Storage(storage_type, view_key, int(view_size))
            sub.view = (root, int(offset), int(view_size))
            self._storages[view_key] = sub
        return self._storages[view_key]


def _bytes_to_array(raw, storage_type, numel):
    if storage_type.dtype is _BFLOAT16:
        bits = np.frombuffer(raw, dtype="<u2", count=numel).astype(np.uint32)
        return (bits << 16).view(np.float32)
    dtype = np.dtype(storage_type.dtype).newbyteorder("<")
    return np.frombuffer(raw, dtype=dtype, count=numel).astype(
        np.dtype(storage_type.dtype), copy=False)


def _materialize(obj):
    if isinstance(obj, _TensorRef):
        return obj.materialize()
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _materialize(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v) for v in obj)
    return obj


def _load_legacy(f):
    magic = pickle.load(f)
    if magic != _LEGACY_MAGIC:
        raise TorchFileError("not a PyTorch file (bad magic number)")
    protocol = pickle.load(f)
    if protocol != 1001:
        raise TorchFileError(f"unsupported legacy protocol version {protocol}")
    sys_info = pickle.load(f)
    if not sys_info.get("little_endian", True):
        raise TorchFileError("big-endian PyTorch files are not supported")
    storages = {}
    result = _Unpickler(f, storages).load()
    keys = pickle.load(f)
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise TorchFileError(f"storage {key!r} is not referenced by the object")
        header = f.read(8)
        if len(header) != 8:
            raise TorchFileError("file ends before a storage (truncated download?)")
        count = int(np.frombuffer(header, dtype="<i8")[0])
        nbytes = count * storage.storage_type.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise TorchFileError("file ends inside a storage (truncated download?)")
        storage.array = _bytes_to_array(raw, storage.storage_type, count)
    return _materialize(result)


def _load_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise TorchFileError("zip file without data.pkl: not a torch.save file")
        prefix = pkl[0][: -len("data.pkl")]
        order = prefix + "byteorder"
        if order in names and archive.read(order).strip() != b"little":
            raise TorchFileError("big-endian PyTorch files are not supported")
        storages = {}
        with archive.open(pkl[0]) as f:
            result = _Unpickler(f, storages).load()
        for key, storage in storages.items():
            if storage.view is not None:
                continue
            raw = archive.read(f"{prefix}data/{key}")
            count = len(raw) // storage.storage_type.itemsize
            storage.array = _bytes_to_array(raw, storage.storage_type, count)
    return _materialize(result)


def load_torch_file(path):
    """Read a ``torch.save``d state dict as ``{name: numpy array}``.

    Works for both the legacy and the zip layout; float, half, bfloat16
    (returned as float32), integer and bool tensors. Returns the unpickled
    object with every tensor replaced by a numpy array (an OrderedDict for
    a state dict).
    """
    path = str(path)
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    with open(path, "rb") as f:
        try:
            return _load_legacy(f)
        except (pickle.UnpicklingError, EOFError) as e:
            raise TorchFileError(f"{path} is not a readable PyTorch file: {e}") from e
