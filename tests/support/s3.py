"""A local S3 endpoint for tests: moto's server (``moto_server`` of the test venv) on a free loopback port.

    with running_s3_server(log_path) as server:          # tests/conftest.py's session fixture ``s3_server``
        bucket = server.make_bucket()                      # a fresh, empty bucket
        env = {**os.environ, **server.env()}               # AWS_* for a child process (Spark, the service)

moto accepts any credentials; the ones here are fixed test values. Buckets are created with one plain HTTP PUT
(no boto3 needed). The server runs in its own process group and is always stopped on exit.
"""
from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

HOST = "127.0.0.1"
REGION = "us-east-1"
_buckets = itertools.count(1)


@dataclass(frozen=True)
class S3Server:
    """A running S3 endpoint: where it is and the credentials it takes."""

    endpoint_url: str
    access_key: str = "testing"
    secret_key: str = field(default="testing", repr=False)
    region: str = REGION

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point a child process (pyarrow, boto, hadoop-aws's env provider) here."""
        return {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region}

    def make_bucket(self, prefix: str = "test") -> str:
        """Create a new, empty bucket and return its name (``<prefix>-<n>-<hex>``, a valid bucket name)."""
        name = f"{prefix}-{next(_buckets)}-{uuid.uuid4().hex[:8]}".lower()
        request = urllib.request.Request(f"{self.endpoint_url}/{name}", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                raise RuntimeError(f"creating bucket {name} answered HTTP {response.status}")
        return name


def moto_server_executable() -> Path:
    """``moto_server`` next to this interpreter (the test venv's)."""
    return Path(sys.executable).parent / "moto_server"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _wait_until_answering(process: subprocess.Popen, url: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}; log:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"moto_server did not answer at {url} within {timeout:g}s; log:\n"
                                   f"{log_path.read_text()[-3000:]}") from None
            time.sleep(0.1)


@contextmanager
def running_s3_server(log_path: str | os.PathLike, *, timeout: float = 30.0) -> Iterator[S3Server]:
    """Start moto_server on a free port, wait until it answers, yield it, and always stop its process group."""
    executable = moto_server_executable()
    if not executable.is_file():
        raise FileNotFoundError(f"{executable} not found: install moto[server] in the test venv (requirements)")
    port, log_path = _free_port(), Path(log_path)
    with open(log_path, "ab") as log:
        process = subprocess.Popen([str(executable), "-p", str(port), "-H", HOST], stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        server = S3Server(f"http://{HOST}:{port}")
        _wait_until_answering(process, server.endpoint_url + "/", log_path, timeout)
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
