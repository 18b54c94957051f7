"""Every input format through the real job: JSON lines, Parquet, and the rating files in ../shared/data."""
from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from flow import ingest as ingest_flow
from jobs import ingest
from lake import tables
from lake.registry import Lake
from transforms import columns as C
from transforms import parse

pytestmark = pytest.mark.slow
T = dt.datetime(2024, 5, 1, 8, 30)


def run(spark, lake: Lake, source, fmt: str, *extra: str) -> dict:
    argv = ["--lake", lake.root, "--input", str(source), "--format", fmt, "--progress-every", "0", *extra]
    return ingest.run(spark, ingest.build_parser().parse_args(argv))


def test_json_lines_and_parquet_land_in_one_silver(spark, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "a.jsonl").write_text("\n".join([
        '{"user_id":"u1","item_id":"i1","event_type":"view","event_ts":"2024-05-01T08:30:00Z","event_id":"j1"}',
        '{"user_id":"u1","item_id":"i1","event_type":"VIEW","event_ts":1714552200,"event_id":"j1"}',  # near replay
        '{"user_id":"u2","item_id":"i2","event_type":"purchase","event_ts":"2024-05-01T08:30:00Z","value":2}',
        '{"user_id":"u3","item_id"',
    ]) + "\n")
    first = run(spark, lake, tmp_path / "json", "events-json")
    assert (first["read"], first["loaded"], first["duplicates"]) == (4, 2, 1)
    assert first["quarantined_by_reason"] == {parse.MALFORMED_JSON: 1}

    spark.createDataFrame(
        [("u4", "i4", "click", T, None, "p1"), ("u5", None, "view", T, None, "p2"), ("u1", "i1", "view", T, None, "j1")],
        "user_id string, item_id string, event_type string, event_ts timestamp, value double, event_id string",
    ).coalesce(1).write.parquet(str(tmp_path / "parquet"))
    second = run(spark, lake, tmp_path / "parquet", "events-parquet")
    assert (second["read"], second["loaded"], second["duplicates_in_silver"]) == (3, 1, 1)
    assert second["quarantined_by_reason"] == {parse.MISSING_ITEM_ID: 1}
    silver = tables.read(spark, lake.silver)
    assert sorted(r[C.USER_ID] for r in silver.collect()) == ["u1", "u2", "u4"]
    raw = tables.read(spark, lake.quarantine).where(F.col(C.REASON) == parse.MISSING_ITEM_ID).first()[C.RAW]
    assert '"user_id":"u5"' in raw  # a Parquet row is kept as readable JSON text


def expected_ratings(path, separator: str, header: bool) -> tuple[int, int]:
    """(lines, distinct rating events) of a rating file, counted in Python."""
    lines = path.read_text(encoding="utf-8").splitlines()
    body = lines[1:] if header else lines
    return len(lines), len({tuple(line.split(separator)) for line in body})


def test_movielens_ratings_csv(spark, tmp_path, shared_data):
    path = shared_data / "ml-latest-small" / "ratings.csv"
    lake = Lake(str(tmp_path / "ml"))
    summary = run(spark, lake, path, "movielens")
    lines, distinct = expected_ratings(path, ",", header=True)
    assert (summary["read"], summary["headers"], summary["loaded"], summary["quarantined"]) == (lines, 1, distinct, 0)
    assert summary["partition_column"] == C.EVENT_MONTH  # decades of ratings: monthly partitions
    with pytest.raises(ingest_flow.PartitionGrainError, match="event_month"):
        run(spark, lake, path, "movielens", "--partition-grain", "date")


def test_movietweetings_keeps_leading_zeros(spark, tmp_path, shared_data):
    path = shared_data / "movietweetings-100k" / "ratings.dat"
    lake = Lake(str(tmp_path / "mt"))
    summary = run(spark, lake, path, "movietweetings")
    lines, distinct = expected_ratings(path, "::", header=False)
    assert (summary["read"], summary["loaded"], summary["quarantined"]) == (lines, distinct, 0)
    silver = tables.read(spark, lake.silver)
    items = {r[C.ITEM_ID] for r in silver.where(F.col(C.USER_ID) == "2").select(C.ITEM_ID).collect()}
    assert "0104257" in items
    assert silver.where(F.length(C.ITEM_ID) != 7).count() == 0  # IMDb ids: 7 digits, zeros kept
