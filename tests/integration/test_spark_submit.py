"""One job through the real spark-submit launcher, as a cluster step would run it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lake import tables
from jobs.spark_session import delta_maven_coordinate

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def spark_submit() -> str:
    path = Path(sys.executable).parent / "spark-submit"
    if not path.exists():
        pytest.fail(f"{path} not found: the batch venv's pyspark ships spark-submit; run `make setup`")
    return str(path)


def test_ingest_runs_under_spark_submit(spark, tmp_path, fixtures_dir):
    lake = tmp_path / "lake"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}
    cmd = [spark_submit(), "--master", "local[2]", "--packages", delta_maven_coordinate(),
           "--conf", "spark.sql.shuffle.partitions=2", "--conf", "spark.ui.enabled=false",
           str(REPO / "jobs" / "ingest.py"),
           "--input", str(fixtures_dir / "ratings_messy.csv"), "--format", "movielens", "--lake", str(lake)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "loaded" in out.stdout
    silver = tables.read(spark, str(lake / "silver" / "interactions"))
    assert silver.count() == 9
    quarantine = tables.read(spark, str(lake / "quarantine" / "interactions"))
    assert {r["reason"] for r in quarantine.collect()} == {
        "empty_line", "bad_rating", "missing_item_id", "missing_user_id", "rating_out_of_range",
        "bad_timestamp", "future_timestamp", "wrong_field_count"}


def test_a_failing_job_exits_non_zero_with_a_readable_error(tmp_path):
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    out = subprocess.run([sys.executable, "-m", "jobs.train", "--lake", str(tmp_path / "empty-lake"),
                          "--master", "local[1]"], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert out.returncode != 0
    assert "run jobs.build_training first" in out.stderr
