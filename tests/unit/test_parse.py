"""transforms.parse on small known inputs: every fault class gets its reason, good lines are typed."""
from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from transforms import columns as C
from transforms import parse

NOW_S = 1_700_000_000


def parsed_rows(spark, lines, fmt="movielens"):
    df = spark.createDataFrame([(line, "f.csv") for line in lines], f"{C.RAW} string, {C.SOURCE_FILE} string")
    out = parse.parse_lines(df, parse.get_format(fmt), max_event_ts_seconds=NOW_S)
    return {r[C.RAW]: r for r in out.collect()}


@pytest.mark.parametrize("line, reason", [
    ("", parse.EMPTY_LINE),
    ("   ", parse.EMPTY_LINE),
    ("userId,movieId,rating,timestamp", parse.HEADER),
    ("1,2,3.0", parse.WRONG_FIELD_COUNT),
    ("1,2,3.0,100,extra", parse.WRONG_FIELD_COUNT),
    (",2,3.0,100", parse.MISSING_USER_ID),
    ("1, ,3.0,100", parse.MISSING_ITEM_ID),
    ("1,2,abc,100", parse.BAD_RATING),
    ("1,2,NaN,100", parse.BAD_RATING),
    ("1,2,5.5,100", parse.RATING_OUT_OF_RANGE),
    ("1,2,0.0,100", parse.RATING_OUT_OF_RANGE),
    ("1,2,3.0,soon", parse.BAD_TIMESTAMP),
    ("1,2,3.0,-5", parse.BAD_TIMESTAMP),
    (f"1,2,3.0,{NOW_S + 1}", parse.FUTURE_TIMESTAMP),
    ("1,2,3.0,100", None),
    ("1::2::3.0::100", None),
    ("1,2,3.0,100\r", None),
])
def test_each_fault_class_gets_its_reason(spark, line, reason):
    row = parsed_rows(spark, [line])[line]
    assert row[C.REASON] == reason
    if reason is None:
        assert (row[C.USER_ID], row[C.ITEM_ID], row[C.VALUE]) == ("1", "2", 3.0)
        assert row[C.EVENT_TS] == dt.datetime(1970, 1, 1, 0, 1, 40)
    else:
        assert row[C.USER_ID] is None and row[C.EVENT_TS] is None


def test_movietweetings_keeps_item_ids_as_strings_with_leading_zeros(spark):
    row = parsed_rows(spark, ["17::0068646::10::1581376119"], fmt="movietweetings")["17::0068646::10::1581376119"]
    assert row[C.REASON] is None
    assert row[C.ITEM_ID] == "0068646"
    assert row[C.VALUE] == 10.0


def test_movielens_100k_tab_separated(spark):
    row = parsed_rows(spark, ["196\t242\t3\t881250949"], fmt="movielens-100k")["196\t242\t3\t881250949"]
    assert (row[C.REASON], row[C.USER_ID], row[C.ITEM_ID], row[C.VALUE]) == (None, "196", "242", 3.0)


def test_unknown_format_names_the_known_ones():
    with pytest.raises(ValueError, match="movielens-100k"):
        parse.get_format("netflix")


def test_valid_events_dedupes_replays_and_keys_them(spark):
    lines = ["1,2,3.0,100", "1,2,3.0,100", "1,2,4.0,100", "1,3,3.0,100", "bad"]
    df = spark.createDataFrame([(line, "f", i) for i, line in enumerate(lines)],
                               f"{C.RAW} string, {C.SOURCE_FILE} string, pos long")
    parsed = parse.parse_lines(df, parse.get_format("movielens"), max_event_ts_seconds=NOW_S)
    events = parse.valid_events(parsed, order_col="pos")
    rows = events.orderBy(C.ITEM_ID, C.VALUE).collect()
    assert [(r[C.ITEM_ID], r[C.VALUE]) for r in rows] == [("2", 3.0), ("2", 4.0), ("3", 3.0)]
    assert len({r[C.EVENT_ID] for r in rows}) == 3
    assert rows[0][C.EVENT_MONTH] == "1970-01" and rows[0][C.EVENT_DATE] == dt.date(1970, 1, 1)
    rejected = parse.rejected_rows(parsed).collect()
    assert [(r[C.RAW], r[C.REASON]) for r in rejected] == [("bad", parse.WRONG_FIELD_COUNT)]


def test_duplicate_keys_counts_copies_and_finds_the_first_and_drop_later_copies_keeps_it(spark):
    rows = [("a", 5), ("b", 1), ("a", 2), ("c", 9), ("c", 3), ("c", 7), (None, 4), (None, 6), ("d", 8)]
    keyed = spark.createDataFrame(rows, f"{C.EVENT_ID} string, _order long")
    dups = parse.duplicate_keys(keyed, order_col="_order")
    assert sorted((r[C.EVENT_ID], r[parse.COPIES], r[parse.FIRST_COPY]) for r in dups.collect()) == [
        ("a", 2, 2), ("c", 3, 3)]  # rows without a key (rejected rows) are never duplicates
    kept = parse.drop_later_copies(keyed, dups, order_col="_order")
    assert sorted(r["_order"] for r in kept.collect()) == [1, 2, 3, 4, 6, 8]
