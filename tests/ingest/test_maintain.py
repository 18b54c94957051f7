"""jobs.maintain: OPTIMIZE compacts, VACUUM keeps time travel within the safe window, short windows need a flag."""
from __future__ import annotations

import datetime as dt

import pytest

from pyspark.sql import functions as F

from flow import maintain as maintain_flow
from flow import runs
from flow.maintain import UnsafeRetentionError
from jobs import maintain
from lake import tables
from lake.registry import Lake

pytestmark = pytest.mark.slow


def args(lake: Lake, *extra: str):
    return maintain.build_parser().parse_args(["--lake", lake.root, "--history", "3", *extra])


@pytest.fixture()
def small_files_lake(spark, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    path = lake.silver
    for i in range(4):  # four appends of two files each: eight small files
        rows = [(f"u{i}{j}", f"i{j}", dt.date(2024, 1, 1 + j % 2)) for j in range(6)]
        (spark.createDataFrame(rows, "user_id string, item_id string, event_date date").repartition(2)
         .write.format("delta").mode("append").partitionBy("event_date").save(path))
    return lake, path


def test_optimize_compacts_and_vacuum_keeps_the_safe_window(spark, small_files_lake, capsys):
    lake, path = small_files_lake
    report = maintain.run(spark, args(lake))
    entry = report["tables"]["silver/interactions"]
    assert entry["before"]["files"] > entry["after"]["files"] == 2  # one file per date partition
    assert entry["optimize"]["zorder_by"] == ["user_id", "item_id"]
    assert entry["after"]["storage_files"] == entry["before"]["storage_files"] + 2  # nothing old enough to delete
    assert tables.read(spark, path, version=0).count() == 6  # time travel still works
    out = capsys.readouterr().out
    assert "OPTIMIZE" in out and "silver/interactions" in out
    assert tables.exists(spark, lake.maintenance_runs)


def test_short_retention_is_refused_unless_asked_for(spark, small_files_lake):
    lake, path = small_files_lake
    with pytest.raises(UnsafeRetentionError, match="168"):
        maintain.run(spark, args(lake, "--vacuum-hours", "0"))
    report = maintain.run(spark, args(lake, "--vacuum-hours", "0", "--allow-short-retention",
                                      "--tables", "silver/interactions"))
    after = report["tables"]["silver/interactions"]["after"]
    assert after["storage_files"] == after["files"]  # everything old is gone...
    assert tables.read(spark, path).count() == 24
    with pytest.raises(Exception):
        tables.read(spark, path, version=0).collect()  # ...and with it the versions that needed those files


def test_each_run_is_recorded_started_then_succeeded_or_failed_with_its_error(spark, small_files_lake, monkeypatch):
    lake, _ = small_files_lake
    done = maintain.run(spark, args(lake, "--no-vacuum"))
    rows = (tables.read(spark, lake.maintenance_runs).where(F.col("run_id") == done["run_id"])
            .orderBy(runs.RECORDED_AT).collect())
    assert [(r[runs.STATE], r["table"]) for r in rows] == [("started", None), ("succeeded", "silver/interactions")]

    def optimize_fails(*_args, **_kwargs):
        raise RuntimeError("no space left on device")

    monkeypatch.setattr(maintain_flow, "optimize", optimize_fails)
    with pytest.raises(RuntimeError, match="no space left"):
        maintain.run(spark, args(lake, "--no-vacuum"))
    listed = runs.run_listing(spark, lake, kinds=("maintain",))
    assert [(r["state"], r["error"]) for r in listed] == [
        ("failed", "RuntimeError: no space left on device"), ("succeeded", None)]
    before = tables.version(spark, lake.maintenance_runs)
    maintain.run(spark, args(lake, "--history-only"))
    assert tables.version(spark, lake.maintenance_runs) == before  # showing history records nothing
