"""Serving fixtures: a small known-answer snapshot and the real Seldon service running on it.

The service is started by serving.serve's ``running_service(root, log_path=...)`` (as ``make demo`` and an
integration test serving a snapshot published by the Spark pipeline start it); snapshots are written by
tests.support.serving's ``write_snapshot``.
The serving venv comes from RECSYS_SERVING_VENV (default <repo>/.venv-serving). Snapshots on S3 (the session's
moto server, tests/conftest.py's ``s3_server``) are published by ``publish_spec_to_s3`` as jobs.publish does: the
tables first, then the manifest, then LATEST.
"""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field

import pytest

import pyarrow.fs as pafs

from serving import snapshot, storage
from serving.serve import REPO_ROOT, running_service, serving_python
from tests.support.serving import write_snapshot


@dataclass(frozen=True)
class SnapshotSpec:
    """What the fixture snapshot holds: the answers the service must give back."""

    model_version: str = "test-v1"
    n: int = 5
    user_recommendations: dict = field(default_factory=lambda: {
        "42": [("i5", 1.5), ("i1", 1.25), ("i2", 1.0), ("i3", 0.75), ("i4", 0.5)],
        "u1": [("i1", 0.9), ("i2", 0.8), ("i3", 0.7)],
        "u2": [("i3", 0.95), ("i4", 0.5)],
        "zoë-7": [("i6", 0.3)],          # non-ASCII id: keys are UTF-8 bytes
        "u-empty": [],                   # a known user without a list gets the popular items
        "a": [("i2", 0.1)],              # a shorter id than the others, to test prefix look-ups
    })
    popular_items: list = field(default_factory=lambda: [
        ("i2", 100.0), ("i1", 90.0), ("i3", 80.5), ("i4", 70.0), ("i5", 60.0), ("i6", 50.0), ("i7", 40.0),
        ("i8", 30.0),
    ])
    similar_items: dict = field(default_factory=lambda: {
        "i1": [("i2", 0.9), ("i3", 0.8), ("i5", 0.7), ("i6", 0.6), ("i7", 0.5)],
        "i2": [("i1", 0.9)],
    })

    def personal(self, user_id: str, k: int) -> tuple[list[str], list[float]]:
        pairs = self.user_recommendations[user_id][:k]
        return [i for i, _ in pairs], [s for _, s in pairs]

    def popular(self, k: int, skip=()) -> tuple[list[str], list[float]]:
        pairs = [(i, s) for i, s in self.popular_items if i not in skip][:k]
        return [i for i, _ in pairs], [s for _, s in pairs]

    def expected_user(self, user_id: str, k: int, exclude=()) -> dict:
        """The documented answer: the user's list minus exclusions, padded from popular items not yet in it."""
        own = [(i, s) for i, s in self.user_recommendations.get(user_id, []) if i not in exclude][:k]
        return self._answer({"user_id": user_id}, own, k, set(exclude), "personal")

    def expected_similar(self, item_id: str, k: int, exclude=()) -> dict:
        banned = set(exclude) | {item_id}
        own = [(i, s) for i, s in self.similar_items.get(item_id, []) if i not in banned][:k]
        return self._answer({"item_id": item_id}, own, k, banned, "similar")

    def _answer(self, key: dict, own: list, k: int, banned: set, name: str) -> dict:
        taken = banned | {i for i, _ in own}
        pad = [(i, s) for i, s in self.popular_items if i not in taken][: k - len(own)]
        pairs = own + pad
        source = name if not pad else ("popular" if not own else f"{name}+popular")
        return {**key, "item_ids": [i for i, _ in pairs], "scores": [s for _, s in pairs], "source": source,
                "fallback_count": len(pad), "model_version": self.model_version}


@pytest.fixture(scope="session")
def snapshot_spec() -> SnapshotSpec:
    return SnapshotSpec()


def publish_spec(root, spec: SnapshotSpec, **overrides):
    """Write ``spec`` under ``root`` (two files per table) and point LATEST at it; returns the version folder."""
    options = dict(model_version=spec.model_version, n=spec.n, user_recommendations=spec.user_recommendations,
                   popular_items=spec.popular_items, similar_items=spec.similar_items, files_per_table=2)
    options.update(overrides)
    return write_snapshot(root, **options)


def s3_options(server) -> storage.S3Options:
    """The S3Options that reach the test S3 server (``s3_server``)."""
    return storage.S3Options(endpoint_url=server.endpoint_url, region=server.region, access_key=server.access_key,
                             secret_key=server.secret_key)


def publish_spec_to_s3(root: str, spec: SnapshotSpec, scratch, options: storage.S3Options, *, publish: bool = True,
                       **overrides) -> storage.Location:
    """Write ``spec`` under the S3 URI ``root``: its tables (written locally under ``scratch`` by publish_spec,
    then uploaded), then its manifest (written by the contract on S3), then (``publish``) LATEST. Returns the
    version folder."""
    local = publish_spec(scratch, spec, publish=False, **overrides)
    folder = storage.resolve(root, options) / local.name
    for table in sorted(p for p in local.iterdir() if p.is_dir()):
        pafs.copy_files(str(table), (folder / table.name).path, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=folder.fs)
    snapshot.write_manifest(folder, model_version=overrides.get("model_version", spec.model_version),
                            n=overrides.get("n", spec.n))
    if publish:
        snapshot.set_latest(root, folder.name, s3=options)
    return folder


def tamper(file: storage.Location) -> None:
    """Change the last byte of a file in place (same size), on any store."""
    data = storage.read_bytes(file)
    with file.fs.open_output_stream(file.path) as stream:
        stream.write(data[:-1] + (b"X" if data[-1:] != b"X" else b"Y"))


@pytest.fixture(scope="module")
def snapshot_root(tmp_path_factory, snapshot_spec):
    root = tmp_path_factory.mktemp("snapshots")
    publish_spec(root, snapshot_spec)
    return root


@pytest.fixture(scope="session")
def serving_venv_python():
    python = serving_python()
    if not python.is_file():
        pytest.fail(f"serving venv python {python} not found: run `make setup` or set RECSYS_SERVING_VENV")
    return python


@pytest.fixture(scope="session")
def service(tmp_path_factory, snapshot_spec, serving_venv_python):
    """The real seldon-core-microservice (2 REST workers x 2 threads, 1 gRPC process) on the fixture snapshot.

    Metrics are handed to Seldon on every request (metrics_flush_seconds=0) so tests can read them at once.
    """
    root = tmp_path_factory.mktemp("service-snapshots")
    publish_spec(root, snapshot_spec)
    work = tmp_path_factory.mktemp("service")
    with running_service(root, log_path=work / "service.log", ready_timeout=45, workers=2, threads=2,
                         cache_dir=work / "cache", metrics_flush_seconds=0, poll_seconds=5) as running:
        yield running


def grpc_calls(service, python, payloads: list) -> list[dict]:
    """Send each jsonData in ``payloads`` over gRPC (one client process, one channel); one result dict each:
    ``{"ok": jsonData}`` or ``{"error": {"status": ..., "message": ...}}``."""
    lines = "\n".join(json.dumps(p) for p in payloads) + "\n"
    done = subprocess.run(
        [str(python), "-m", "serving.client", "--protocol", "grpc", "--host", service.host,
         "--http-port", str(service.http_port), "--grpc-port", str(service.grpc_port), "--wait-ready", "20",
         "--requests-file", "-"],
        input=lines, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == len(payloads), done.stdout + done.stderr
    return results


def wait_for_log(service, text: str, count: int, timeout: float = 60) -> None:
    """Wait until the service's log holds ``text`` at least ``count`` times (e.g. once per serving process)."""
    deadline = time.monotonic() + timeout
    while service.log_text().count(text) < count:
        assert service.process.poll() is None, service.log_text()[-3000:]
        assert time.monotonic() < deadline, f"{text!r} seen {service.log_text().count(text)}x, want {count}"
        time.sleep(0.1)
