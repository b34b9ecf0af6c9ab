"""On-disk format of a saved ``Index`` and its atomic, verified writing.

A saved index is one directory:

    DIR/manifest.json    {"format": "keras_dml.retrieval.Index", "format_version": 1,
                          "dim", "metric", "backend", "params", "size", "next_id",
                          "next_seq", "keras_dml_version",
                          "files": {name: {"bytes": n, "sha256": hex}}}
    DIR/embeddings.npy   float32 [N, D], the vectors as added (not normalised)
    DIR/ids.npy          int64 [N], user ids, in insertion order
    DIR/labels.npy       int64 [N], -1 = no label
    DIR/seq.npy          int64 [N], insertion sequence numbers (the faiss ids)
    DIR/metadata.jsonl   N lines, one JSON value each (null = none)
    DIR/faiss.index      faiss backend only: ``faiss.serialize_index`` bytes

A ``backend="milvus"`` index keeps its data in Milvus: its directory holds
only ``manifest.json`` (``files`` empty; ``params`` with the URI, collection
and index parameters), written by ``write_manifest``, and, when it was
created there, the embedded Milvus Lite database (``params["uri"]`` is then
relative to DIR, so the directory can be moved).

Plain ``.npy`` and JSON lines, so an app (or a person with numpy) can read
an index without keras_dml; ``metadata.jsonl`` is where an app puts the
image path of every gallery item.

Atomic save: everything is written into a fresh temporary directory beside
DIR (same parent, so the same file system), every file and the directory are
fsync'ed, and only then does the new directory take DIR's place: with
``renameat2(RENAME_EXCHANGE)`` on Linux (one atomic swap: DIR is the old
index or the new one at every instant), then the old one, now at the
temporary name, is deleted. Where the exchange is unavailable, DIR is moved
aside and the new directory renamed in (a window of two renames in which DIR
is absent, never damaged). A save killed at any point therefore leaves the
previous index loadable; at worst a ``.DIR.saving-*`` directory remains
beside it, which ``load`` ignores and which can be deleted.

Loading checks, with a clear ``IndexFormatError`` for each: DIR has a
manifest (else it is not an index), the manifest's ``format`` is ours (else
foreign), its ``format_version`` is not newer than this code's, every listed
file exists with its recorded size (truncation) and SHA-256 (corruption;
``verify=False`` skips the hash), and the arrays agree with the manifest's
size and dimension.
"""

import ctypes
import errno
import hashlib
import io
import json
import os
import shutil
import time

import numpy as np

FORMAT = "keras_dml.retrieval.Index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

# Test hook: "stage:path" makes save() create ``path`` at ``stage``
# ("writing": after the first file, "swapping": before the rename) and then
# sleep, so that a test can kill the process there.
_PAUSE_ENV = "KERAS_DML_INDEX_SAVE_PAUSE"


class IndexFormatError(ValueError):
    """A directory that is not a loadable index: missing, foreign, newer,
    truncated or corrupt."""


def _pause_point(stage):
    spec = os.environ.get(_PAUSE_ENV, "")
    if spec.split(":", 1)[0] == stage and ":" in spec:
        with open(spec.split(":", 1)[1], "w") as f:
            f.write(stage)
        while True:          # until killed
            time.sleep(1)


class _HashingFile(io.RawIOBase):
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, f):
        self._f = f
        self.sha = hashlib.sha256()
        self.bytes = 0

    def writable(self):
        return True

    def write(self, b):
        b = memoryview(b).cast("B")
        self.sha.update(b)
        self.bytes += len(b)
        return self._f.write(b)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Writer:
    """Writes files into a directory, fsyncs them, records size and hash."""

    def __init__(self, directory):
        self.directory = directory
        self.files = {}

    def _write(self, name, fill):
        with open(os.path.join(self.directory, name), "wb") as f:
            h = _HashingFile(f)
            fill(h)
            f.flush()
            os.fsync(f.fileno())
        self.files[name] = {"bytes": h.bytes, "sha256": h.sha.hexdigest()}
        if len(self.files) == 1:
            _pause_point("writing")

    def array(self, name, array):
        self._write(name, lambda h: np.save(h, np.ascontiguousarray(array),
                                            allow_pickle=False))

    def raw(self, name, data):
        self._write(name, lambda h: h.write(data))

    def jsonl(self, name, values):
        def fill(h):
            # In slices, so a million paths never make one huge string.
            for i in range(0, len(values), 4096):
                h.write("".join(json.dumps(v, separators=(",", ":")) + "\n"
                                for v in values[i:i + 4096]).encode("utf-8"))
        self._write(name, fill)


def _exchange(a, b):
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False
    when this system or file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                          ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b),
                 rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"renameat2({a!r}, {b!r}) failed: {os.strerror(err)}")


def _check_replaceable(directory):
    if not os.path.isdir(directory):
        raise IndexFormatError(f"{directory!r} exists and is not a directory; "
                               "refusing to replace it with an index.")
    if os.listdir(directory) and not os.path.isfile(
            os.path.join(directory, MANIFEST)):
        raise IndexFormatError(
            f"{directory!r} is a non-empty directory without {MANIFEST} (not "
            "a keras_dml index); refusing to replace it.")
    try:
        with open(os.path.join(directory, MANIFEST)) as f:
            params = json.load(f).get("params") or {}
    except (OSError, ValueError, AttributeError):
        params = {}
    uri = params.get("uri") if isinstance(params, dict) else None
    if (isinstance(uri, str) and not os.path.isabs(uri)
            and os.path.exists(os.path.join(directory, uri))):
        raise IndexFormatError(
            f"{directory!r} holds the Milvus Lite database {uri!r} of a milvus "
            "index; refusing to replace it (save elsewhere, or delete it first).")


def _new_directory(parent, prefix):
    """A fresh directory ``parent/prefix<random>`` created with the umask's
    permissions (``tempfile.mkdtemp`` makes it 0700, which the renamed
    index would keep)."""
    for _ in range(100):
        path = os.path.join(parent, prefix + os.urandom(6).hex())
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name {prefix}* in {parent}")


def write_atomically(directory, write):
    """Call ``write(writer)`` into a temporary directory beside ``directory``
    and put the result in its place atomically (see module docstring).
    ``write`` returns the manifest dict; the files' sizes and hashes are
    added to it."""
    directory = os.path.abspath(os.fspath(directory))
    parent, name = os.path.split(directory)
    os.makedirs(parent, exist_ok=True)
    if os.path.lexists(directory):
        _check_replaceable(directory)
    tmp = _new_directory(parent, f".{name}.saving-")
    try:
        writer = _Writer(tmp)
        manifest = write(writer)
        manifest["files"] = writer.files
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        _pause_point("swapping")
        if os.path.lexists(directory):
            if not _exchange(tmp, directory):
                aside = _new_directory(parent, f".{name}.old-")
                os.rmdir(aside)
                os.rename(directory, aside)
                os.rename(tmp, directory)
                tmp = aside
            _fsync_dir(parent)
            shutil.rmtree(tmp, ignore_errors=True)    # the old index
        else:
            os.rename(tmp, directory)
            _fsync_dir(parent)
    except BaseException:
        if os.path.isdir(tmp) and os.path.abspath(tmp) != directory:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def read_manifest(directory):
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise IndexFormatError(f"no index at {directory!r}: not a directory.")
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise IndexFormatError(
            f"{directory!r} is not a keras_dml index: it has no {MANIFEST}.")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise IndexFormatError(f"{path} is damaged (not valid JSON: {e}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(
            f"{directory!r} holds a {MANIFEST} of another format "
            f"({manifest.get('format') if isinstance(manifest, dict) else type(manifest).__name__!r}); "
            f"expected {FORMAT!r}.")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise IndexFormatError(f"{path}: bad format_version {version!r}.")
    if version > FORMAT_VERSION:
        raise IndexFormatError(
            f"{directory!r} was written in index format {version}, newer than "
            f"this keras_dml reads ({FORMAT_VERSION}); upgrade keras_dml.")
    if not isinstance(manifest.get("files"), dict):
        raise IndexFormatError(f"{path} lists no files.")
    return manifest


def check_files(directory, manifest, verify=True):
    """Every file the manifest lists exists with its size (and hash)."""
    for name, info in manifest["files"].items():
        path = os.path.join(directory, name)
        if os.path.basename(name) != name or not os.path.isfile(path):
            raise IndexFormatError(f"index {directory!r} is missing {name!r}.")
        size = os.path.getsize(path)
        if size != info.get("bytes"):
            raise IndexFormatError(
                f"index file {path} has {size} bytes, the manifest says "
                f"{info.get('bytes')} (truncated or replaced).")
        if verify:
            sha = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    sha.update(block)
            if sha.hexdigest() != info.get("sha256"):
                raise IndexFormatError(
                    f"index file {path} does not match its SHA-256 in the "
                    "manifest (corrupt).")


def load_array(directory, name, dtype, shape):
    path = os.path.join(directory, name)
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise IndexFormatError(f"index file {path} is unreadable: {e}") from None
    if a.dtype != dtype or a.shape != tuple(shape):
        raise IndexFormatError(
            f"index file {path} holds {a.dtype} {a.shape}, expected {np.dtype(dtype)} "
            f"{tuple(shape)}.")
    return a


def load_jsonl(directory, name, n):
    path = os.path.join(directory, name)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if len(lines) != n:
        raise IndexFormatError(f"index file {path} has {len(lines)} lines, "
                               f"expected {n}.")
    try:
        return [json.loads(line) for line in lines]
    except ValueError as e:
        raise IndexFormatError(f"index file {path} is damaged: {e}") from None


def write_manifest(directory, manifest, keep=None):
    """Write ``DIR/manifest.json`` alone, atomically (a temporary file,
    fsync'ed, renamed over the old one), for an index whose data lives
    elsewhere (a Milvus collection). ``keep``: a relative path inside DIR
    that belongs to the index (an embedded Milvus Lite database), allowed in
    a directory that has no manifest yet. Files listed by a previous
    manifest of an in-process index are deleted after the new manifest is
    in place."""
    directory = os.path.abspath(os.fspath(directory))
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, MANIFEST)
    old_files = {}
    if os.path.isfile(path):
        try:
            old_files = read_manifest(directory)["files"]
        except IndexFormatError:
            old_files = {}
    else:
        top = keep.split(os.sep)[0] if keep else None
        others = [n for n in os.listdir(directory) if n != top]
        if others:
            raise IndexFormatError(
                f"{directory!r} is a non-empty directory without {MANIFEST} "
                f"(not a keras_dml index; it holds {sorted(others)[:5]}); "
                "refusing to write an index manifest there.")
    manifest = dict(manifest)
    manifest.setdefault("files", {})
    tmp = os.path.join(directory, f".{MANIFEST}.{os.urandom(6).hex()}")
    try:
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(directory)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    for name in old_files:
        if os.path.basename(name) == name and name not in manifest["files"]:
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                pass
    return directory
