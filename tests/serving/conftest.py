"""Serving fixtures: a small known-answer snapshot and the real Seldon service running on it.

The service helpers themselves live in deploy.testing (importable from any test folder, e.g. an integration
test that serves a snapshot published by the Spark pipeline): ``running_service(root, log_path=...)``.
The serving venv comes from RECSYS_SERVING_VENV (default <repo>/.venv-serving).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from deploy.testing import running_service, serving_python, write_snapshot


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
        ("i2", 100.0), ("i1", 90.0), ("i3", 80.5), ("i4", 70.0), ("i5", 60.0), ("i6", 50.0),
    ])

    def personal(self, user_id: str, k: int) -> tuple[list[str], list[float]]:
        pairs = self.user_recommendations[user_id][:k]
        return [i for i, _ in pairs], [s for _, s in pairs]

    def popular(self, k: int) -> tuple[list[str], list[float]]:
        pairs = self.popular_items[:k]
        return [i for i, _ in pairs], [s for _, s in pairs]


@pytest.fixture(scope="session")
def snapshot_spec() -> SnapshotSpec:
    return SnapshotSpec()


def publish_spec(root, spec: SnapshotSpec):
    """Write ``spec`` under ``root`` (two files per table) and point LATEST at it; returns the version folder."""
    return write_snapshot(
        root,
        model_version=spec.model_version,
        n=spec.n,
        user_recommendations=spec.user_recommendations,
        popular_items=spec.popular_items,
        files_per_table=2,
    )


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


@pytest.fixture(scope="module")
def service(snapshot_root, serving_venv_python, tmp_path_factory):
    """The real seldon-core-microservice (2 REST workers, 1 gRPC process) on the fixture snapshot."""
    log_path = tmp_path_factory.mktemp("service") / "service.log"
    with running_service(snapshot_root, log_path=log_path, ready_timeout=45, workers=2, threads=2) as running:
        yield running
