"""Real Milvus for the tests: embedded Milvus Lite (a .db directory in
tmp_path) and ``milvus-lite server`` (the gRPC server a Milvus cluster also
speaks) started on a free port of 127.0.0.1 for the session and stopped at
its end."""

import itertools
import os
import socket
import subprocess
import sys
import time

import pytest

from references import reference

_names = itertools.count()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def collection_name(prefix="t"):
    """A fresh collection name per use (one server serves the session)."""
    return f"{prefix}{os.getpid()}_{next(_names)}"


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """``http://127.0.0.1:PORT`` of a ``milvus-lite server`` subprocess."""
    reference("milvus_lite", "Milvus Lite server mode")
    pymilvus = reference("pymilvus", "Milvus client")
    data = tmp_path_factory.mktemp("milvus-server")
    port = free_port()
    log = open(data / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "milvus_lite", "server", "--data-dir",
         str(data / "data"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError("milvus-lite server exited: "
                                   + (data / "server.log").read_text()[-2000:])
            try:
                client = pymilvus.MilvusClient(uri=uri, timeout=2)
                client.close()
                break
            except pymilvus.exceptions.MilvusException:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
