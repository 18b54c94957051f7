"""Shared fixtures: one local Spark session (local[2], few shuffle partitions) for the whole test run.

Traffic stays on loopback (SPARK_LOCAL_IP=127.0.0.1). The session is built by the product's own factory, so
tests exercise the same Delta configuration the jobs use.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

TEST_SPARK_CONF = {
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.driver.memory": "2g",
    "spark.ui.enabled": "false",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
}


@pytest.fixture(scope="session")
def spark():
    from jobs.spark_session import build_spark

    session = build_spark("recsys-tests", master="local[2]", conf=TEST_SPARK_CONF, log_level="ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present (real datasets live beside the repo in ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A local S3 endpoint (moto's server) for the whole run: ``.endpoint_url``, ``.access_key``, ``.secret_key``,
    ``.env()`` (AWS_* for child processes) and ``.make_bucket()`` (a fresh bucket per test); tests/support/s3.py."""
    from tests.support.s3 import running_s3_server

    with running_s3_server(tmp_path_factory.mktemp("s3-server") / "moto.log") as server:
        yield server
