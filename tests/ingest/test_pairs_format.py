"""The pairs formats (user, item[, weight]; no times): the parser's reasons, then through the real ingest job into
silver (event time: the file's modification time; re-reading a file adds nothing) and into the training table,
whose weight is the summed count, linear or log1p."""
from __future__ import annotations

import datetime as dt
import math
import os

import pytest
from pyspark.sql import functions as F

from flow.training_table import TrainingTableOptions, build_training
from jobs import ingest
from lake import tables
from lake.registry import Lake
from transforms import columns as C
from transforms import parse

NOW_S = 1_800_000_000  # 2027-01-15
MODIFIED = dt.datetime(2024, 6, 1, 12, 0, 0)

PAIR_CASES = [
    ("user_id,item_id,weight", parse.HEADER),
    ("userID\tartistID\tweight", parse.HEADER),
    ("User-Id,item", parse.HEADER),
    ("", parse.EMPTY_LINE),
    ("u1", parse.WRONG_FIELD_COUNT),
    ("u1,a1,3,extra", parse.WRONG_FIELD_COUNT),
    (",a1,3", parse.MISSING_USER_ID),
    ("u1\t\t3", parse.MISSING_ITEM_ID),
    ("u8\x00,a1,3", parse.USER_ID_INVALID),
    ("u1,a1,many", parse.BAD_VALUE),
    ("u1,a1,-2", parse.VALUE_OUT_OF_RANGE),
    ("u1,a1,NaN", parse.VALUE_OUT_OF_RANGE),
    ("u1,a1,1e9", parse.VALUE_OUT_OF_RANGE),
]
GOOD_PAIRS = {
    "u1,a1,12": ("u1", "a1", 12.0),
    "u2\ta 2\t0.5": ("u2", "a 2", 0.5),  # a tab-separated line keeps the comma-free name with its blank
    " u3 , a3 ": ("u3", "a3", 1.0),  # no weight: 1
    "u4,a4,": ("u4", "a4", 1.0),  # a blank weight: 1
    "user_000001,a5,7": ("user_000001", "a5", 7.0),  # an id starting with "user" is data, not a header
}


def parse_pairs(spark, lines: list[str], **kwargs) -> dict:
    df = spark.createDataFrame([(line, "f", MODIFIED) for line in lines],
                               f"{C.RAW} string, {C.SOURCE_FILE} string, {C.SOURCE_MODIFIED} timestamp")
    out = parse.parse_lines(df, parse.get_format("pairs"), max_event_ts_seconds=NOW_S, **kwargs)
    return {r[C.RAW]: r for r in out.collect()}


def test_every_bad_pairs_line_gets_its_reason(spark):
    got = parse_pairs(spark, [line for line, _ in PAIR_CASES])
    assert {line: got[line][C.REASON] for line, _ in PAIR_CASES} == dict(PAIR_CASES)
    assert all(got[line][C.USER_ID] is None for line, _ in PAIR_CASES)


def test_good_pairs_are_pair_events_at_the_files_time_weighed_by_their_count(spark):
    got = parse_pairs(spark, list(GOOD_PAIRS))
    for line, (user, item, weight) in GOOD_PAIRS.items():
        row = got[line]
        assert row[C.REASON] is None, line
        assert (row[C.USER_ID], row[C.ITEM_ID], row[C.VALUE]) == (user, item, weight)
        assert (row[C.EVENT_TYPE], row[C.EVENT_TS], row[C.SOURCE_EVENT_ID]) == (C.PAIR_EVENT, MODIFIED, None)
    assert parse_pairs(spark, ["u1,a1,2000000"], max_value=1e7)["u1,a1,2000000"][C.REASON] is None


def test_pairs_need_the_files_time(spark):
    df = spark.createDataFrame([("u1,a1,1", "f")], f"{C.RAW} string, {C.SOURCE_FILE} string")
    with pytest.raises(ValueError, match=C.SOURCE_MODIFIED):
        parse.parse_lines(df, parse.get_format("pairs"), max_event_ts_seconds=NOW_S)


# ---------------------------------------------------------------------------------------------- through the job

CSV_LINES = ["user_id,item_id,plays", "u1,a1,12", "u1,a2,3", "u2,a1,1", "u2,a3,bad", "u3,a2,5", "u1,a1,12"]
TSV_LINES = ["u1\ta3\t40", "u4\ta1", "u4\ta2\t2"]
PARQUET_ROWS = [("u5", "a1", 9.0), ("u5", "a2", None), ("u6", None, 1.0)]


def run(spark, lake: Lake, source, fmt: str, *extra: str) -> dict:
    argv = ["--lake", lake.root, "--input", str(source), "--format", fmt, "--progress-every", "0", *extra]
    return ingest.run(spark, ingest.build_parser().parse_args(argv))


@pytest.fixture(scope="module")
def pairs_lake(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("pairs")
    text = base / "text"
    text.mkdir()
    (text / "plays.csv").write_text("\n".join(CSV_LINES) + "\n")
    (text / "plays.tsv").write_text("\n".join(TSV_LINES) + "\n")
    stamp = MODIFIED.replace(tzinfo=dt.timezone.utc).timestamp()
    for path in text.iterdir():
        os.utime(path, (stamp, stamp))
    spark.createDataFrame(PARQUET_ROWS, "user_id string, item_id string, weight double").coalesce(1) \
        .write.parquet(str(base / "parquet"))
    lake = Lake(str(base / "lake"))
    out = {"lake": lake, "text": run(spark, lake, text, "pairs")}
    out["silver_after_text"] = tables.version(spark, lake.silver), tables.read(spark, lake.silver).count()
    out["again"] = run(spark, lake, text, "pairs")  # a full re-read of the same files
    out["silver_after_again"] = tables.version(spark, lake.silver), tables.read(spark, lake.silver).count()
    out["parquet"] = run(spark, lake, base / "parquet", "pairs-parquet")
    return out


@pytest.mark.slow
def test_pairs_files_land_in_silver_with_the_files_time(spark, pairs_lake):
    first = pairs_lake["text"]
    assert (first["read"], first["headers"], first["loaded"], first["duplicates"]) == (10, 1, 7, 1)
    assert first["quarantined_by_reason"] == {parse.BAD_VALUE: 1}
    assert first["partition_column"] == C.EVENT_MONTH and "value_ignored" in first and not first["value_ignored"]
    silver = tables.read(spark, pairs_lake["lake"].silver).where(F.col(C.INGEST_RUN_ID) == first["run_id"])
    assert {r[C.EVENT_TS] for r in silver.select(C.EVENT_TS).distinct().collect()} == {MODIFIED}
    assert {r[C.EVENT_TYPE] for r in silver.select(C.EVENT_TYPE).distinct().collect()} == {C.PAIR_EVENT}
    values = {(r[C.USER_ID], r[C.ITEM_ID]): r[C.VALUE] for r in silver.collect()}
    assert values[("u1", "a1")] == 12.0 and values[("u4", "a1")] == 1.0 and values[("u1", "a3")] == 40.0


@pytest.mark.slow
def test_reading_the_same_pairs_files_again_adds_nothing(pairs_lake):
    again = pairs_lake["again"]
    assert again["loaded"] == 0 and again["duplicates_in_silver"] == pairs_lake["text"]["loaded"]
    assert pairs_lake["silver_after_again"] == pairs_lake["silver_after_text"]


@pytest.mark.slow
def test_pairs_parquet(pairs_lake):
    summary = pairs_lake["parquet"]
    assert (summary["read"], summary["loaded"]) == (3, 2)
    assert summary["quarantined_by_reason"] == {parse.MISSING_ITEM_ID: 1}


@pytest.mark.slow
def test_the_pairs_weight_reaches_the_training_table_linear_or_log1p(spark, pairs_lake):
    lake = pairs_lake["lake"]
    build_training(spark, lake, TrainingTableOptions(weight_scaling="linear"))
    linear = {(r[C.USER_ID], r[C.ITEM_ID]): r[C.WEIGHT] for r in tables.read(spark, lake.training).collect()}
    assert linear[("u1", "a1")] == 12.0 and linear[("u5", "a2")] == 1.0
    build_training(spark, lake, TrainingTableOptions(weight_scaling="log1p"))
    logged = {(r[C.USER_ID], r[C.ITEM_ID]): r[C.WEIGHT] for r in tables.read(spark, lake.training).collect()}
    assert logged.keys() == linear.keys()
    assert all(math.isclose(logged[k], math.log1p(w)) for k, w in linear.items())
