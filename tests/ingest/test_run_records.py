"""Every ingest run leaves a record (flow.runs): ``started`` before its first commit, then ``succeeded`` or
``failed`` with its error; a run whose process is killed stays ``started`` and jobs.runs lists it with the rows
its commits wrote to each table."""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from flow import ingest as ingest_flow
from flow import runs
from jobs import ingest
from jobs import runs as runs_job
from lake import tables
from lake.registry import Lake
from transforms import columns as C
from validation import stages

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
MESSY = {"read": 19, "loaded": 9, "quarantined": 8}  # tests/fixtures/ratings_messy.csv as movielens

# a driver that ingests, then SIGKILLs its own process right after silver's MERGE: bronze, quarantine and silver
# are committed, the run's finish is not
KILLED_AFTER_SILVER = """
import os, signal, sys
from flow import ingest as flow_ingest
from jobs.spark_session import build_spark
from lake.registry import Lake

lake, source, run_id = sys.argv[1:4]
merge = flow_ingest._dedupe_and_merge
def merge_then_die(*args, **kwargs):
    merged = merge(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
    return merged
flow_ingest._dedupe_and_merge = merge_then_die
spark = build_spark("killed-ingest", master="local[1]", log_level="ERROR",
                    conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2"})
flow_ingest.ingest(spark, Lake(lake), source, "movielens", flow_ingest.IngestOptions(run_id=run_id, progress_every=0))
"""


def run_rows(spark, lake: Lake, run_id: str) -> list:
    """The run's rows in meta/ingest_runs, oldest first."""
    return (tables.read(spark, lake.ingest_runs).where(F.col(C.INGEST_RUN_ID) == run_id)
            .orderBy(runs.RECORDED_AT).collect())


def argv(lake: Lake, fixtures_dir: Path, *extra: str) -> list[str]:
    return ["--lake", lake.root, "--input", str(fixtures_dir / "ratings_messy.csv"), "--format", "movielens",
            "--progress-every", "0", *extra]


def test_a_run_that_fails_after_its_first_commit_is_recorded_failed_with_its_error(spark, tmp_path, fixtures_dir,
                                                                                  monkeypatch):
    lake = Lake(str(tmp_path / "lake"))

    def counting_fails(batch, partition_col):  # bronze is committed by then
        raise RuntimeError("disk full while counting")

    monkeypatch.setattr(ingest_flow, "batch_stats", counting_fails)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest.run(spark, ingest.build_parser().parse_args(argv(lake, fixtures_dir, "--run-id", "failing")))
    rows = run_rows(spark, lake, "failing")
    assert [(r[runs.STATE], r["status"]) for r in rows] == [("started", "started"), ("failed", "failed")]
    assert rows[-1][runs.ERROR] == "RuntimeError: disk full while counting"
    assert rows[0][runs.RECORDED_AT] <= rows[1][runs.RECORDED_AT]
    bronze = tables.read(spark, lake.bronze).where(F.col(C.INGEST_RUN_ID) == "failing").count()
    assert bronze == MESSY["read"]
    assert not tables.exists(spark, lake.ingested_files)  # the file will be read again

    monkeypatch.undo()
    again = ingest.run(spark, ingest.build_parser().parse_args(argv(lake, fixtures_dir, "--run-id", "retry")))
    assert again["status"] == "ok" and again["loaded"] == MESSY["loaded"]
    states = {r[C.INGEST_RUN_ID]: r for r in runs.read_states(spark, lake, "ingest").collect()}
    assert {k: v[runs.STATE] for k, v in states.items()} == {"failing": "failed", "retry": "succeeded"}
    assert (states["retry"]["status"], states["retry"]["loaded"], states["retry"][runs.ERROR]) == ("ok", 9, None)
    listed = {r["run_id"]: r for r in runs.run_listing(spark, lake)}
    assert listed["failing"]["state"] == "failed" and "disk full" in listed["failing"]["error"]
    assert "committed" not in listed["failing"]  # rows per table are listed for runs with no finish


def test_a_killed_run_stays_started_and_is_listed_with_the_rows_it_committed(spark, tmp_path, fixtures_dir,
                                                                             capsys):
    lake = Lake(str(tmp_path / "lake"))
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_SILVER, lake.root,
                             str(fixtures_dir / "ratings_messy.csv"), "killed"],
                            capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    rows = run_rows(spark, lake, "killed")
    assert [(r[runs.STATE], r["status"], r["read"]) for r in rows] == [("started", "started", None)]
    assert stages.ingest_run(spark, lake, stages.LATEST_RUN)[runs.STATE] == "started"  # the gate sees it

    listed = runs_job.run(spark, runs_job.build_parser().parse_args(["--lake", lake.root, "--kind", "ingest"]))
    assert [(r["run_id"], r["state"]) for r in listed] == [("killed", "started")]
    committed = {table: c["rows"] for table, c in listed[0]["committed"].items()}
    assert committed == {"bronze/interactions": MESSY["read"], "quarantine/interactions": MESSY["quarantined"],
                         "silver/interactions": MESSY["loaded"]}
    for table, rows_written in committed.items():  # the listing's numbers are the run's rows in each table
        assert tables.read(spark, lake.table(*table.split("/"))).where(
            F.col(C.INGEST_RUN_ID) == "killed").count() == rows_written
    out = capsys.readouterr().out
    assert "killed" in out and "started with no finish (died, or still running): bronze/interactions 19 rows" in out


def test_a_run_from_before_run_records_that_left_only_commits_is_listed_unrecorded(spark, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    rows = spark.createDataFrame([("a",), ("b",), ("c",)], f"{C.RAW} string")
    tables.append_tagged(spark, rows, lake.bronze, tag="ingest:died-long-ago")  # and no meta/ingest_runs at all
    tables.append_tagged(spark, rows.limit(1), lake.bronze, tag="maintain:other-kind")
    listed = runs.run_listing(spark, lake, kinds=("ingest",))
    assert [(r["run_id"], r["state"], r["committed"]) for r in listed] == [
        ("died-long-ago", "unrecorded", {"bronze/interactions": {"rows": 3, "versions": [0]}})]


def test_rows_written_before_run_records_count_as_finished(spark):
    legacy = spark.createDataFrame(
        [("a", dt.datetime(2024, 1, 1), "ok"), ("b", dt.datetime(2024, 1, 2), "failed: rows not accounted for")],
        f"{C.INGEST_RUN_ID} string, started_at timestamp, status string")
    states = runs.run_states(legacy, runs.RUN_TABLES["ingest"]).orderBy(C.INGEST_RUN_ID).collect()
    assert [(r[C.INGEST_RUN_ID], r[runs.STATE], r[runs.ERROR]) for r in states] == [
        ("a", "succeeded", None), ("b", "failed", None)]


def test_finished_records_a_failure_and_raises_the_runs_own_error():
    recorded = []

    def record_fails_too(state, error):
        recorded.append((state, error))
        raise OSError("lake unreachable")

    with pytest.raises(KeyboardInterrupt):
        with runs.finished(record_fails_too):
            raise KeyboardInterrupt()
    assert recorded == [("failed", "KeyboardInterrupt")]
    with runs.finished(lambda state, error: recorded.append((state, error))):
        pass
    assert recorded[-1] == ("succeeded", None)
