"""A real S3 API server on loopback for tests and benchmarks: moto's server in a child process.

``s3_server()`` starts ``moto_server`` on a free port, waits until it answers, sets the environment that
s3fs (and Ray workers started from this process) read to find it, and stops it on exit. It keeps
everything in memory. Needs the test extra (``moto[server]``, ``s3fs``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["S3Server", "s3_server", "s3_env"]


@dataclass(frozen=True)
class S3Server:
    """A running server: its endpoint URL and the environment variables that point clients at it."""

    endpoint: str
    env: dict[str, str]

    def make_bucket(self, name: str) -> None:
        """Create a bucket (tests create their buckets; intint itself never does)."""
        import s3fs

        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": self.endpoint}, key="test", secret="test")
        fs.mkdir(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def s3_env(endpoint: str) -> dict[str, str]:
    """The variables s3fs and botocore read: dummy credentials, a region, and the endpoint."""
    return {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint, "FSSPEC_S3_ENDPOINT_URL": endpoint}


def _wait_until_up(endpoint: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(endpoint, timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer on {endpoint} within {timeout:.0f} s")


@contextlib.contextmanager
def s3_server(set_environ: bool = True, timeout: float = 30.0) -> Iterator[S3Server]:
    """Run a moto S3 server for the ``with`` block; with ``set_environ`` its variables are in os.environ."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = {k: os.environ.get(k) for k in s3_env(endpoint)}
    try:
        _wait_until_up(endpoint, proc, timeout)
        if set_environ:
            os.environ.update(s3_env(endpoint))
        yield S3Server(endpoint, s3_env(endpoint))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if set_environ:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
