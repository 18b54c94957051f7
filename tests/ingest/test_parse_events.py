"""transforms.parse on event logs (CSV, JSON lines, Parquet rows as JSON): every fault class gets its reason."""
from __future__ import annotations

import datetime as dt

import pytest

from transforms import columns as C
from transforms import parse

NOW_S = 1_800_000_000  # 2027-01-15
T = dt.datetime(2024, 1, 1, 10, 0, 0)


def parse_lines(spark, lines, fmt="events", **kwargs):
    df = spark.createDataFrame([(line, "f") for line in lines], f"{C.RAW} string, {C.SOURCE_FILE} string")
    out = parse.parse_lines(df, parse.get_format(fmt), max_event_ts_seconds=NOW_S, **kwargs)
    return {r[C.RAW]: r for r in out.collect()}


CSV_CASES = [
    ("", parse.EMPTY_LINE),
    ("u1,i1,view,2024-01-01T10:00:00Z,,e1\ufffd", parse.INVALID_UTF8),
    ("user_id,item_id,event_type,event_ts,value,event_id", parse.HEADER),
    ("u1;i1;view;2024-01-01T10:00:00Z", parse.WRONG_FIELD_COUNT),
    ("u1,i1,view", parse.WRONG_FIELD_COUNT),
    ("u1,i1,view,2024-01-01T10:00:00Z,,e1,extra", parse.WRONG_FIELD_COUNT),
    (",i1,view,2024-01-01T10:00:00Z,,", parse.MISSING_USER_ID),
    ("\u3000\t,i1,view,2024-01-01T10:00:00Z,,", parse.MISSING_USER_ID),  # white space only
    ("u" + "x" * 10_000 + ",i1,view,2024-01-01T10:00:00Z,,", parse.USER_ID_TOO_LONG),
    ("u8\x00,i1,view,2024-01-01T10:00:00Z,,", parse.USER_ID_INVALID),
    ("u\u202e8,i1,view,2024-01-01T10:00:00Z,,", parse.USER_ID_INVALID),
    ("u1," + "i" * 257 + ",view,2024-01-01T10:00:00Z,,", parse.ITEM_ID_TOO_LONG),
    ("u1,i\x7f,view,2024-01-01T10:00:00Z,,", parse.ITEM_ID_INVALID),
    ("u1, ,view,2024-01-01T10:00:00Z,,", parse.MISSING_ITEM_ID),
    ("u1,i1,,2024-01-01T10:00:00Z,,", parse.MISSING_EVENT_TYPE),
    ("u1,i1,hover,2024-01-01T10:00:00Z,,", parse.UNKNOWN_EVENT_TYPE),
    ("u1,i1,view,,,", parse.MISSING_TIMESTAMP),
    ("u1,i1,view,yesterday,,", parse.BAD_TIMESTAMP),
    ("u1,i1,view,2024-13-45T99:00:00Z,,", parse.BAD_TIMESTAMP),
    ("u1,i1,view,-5,,", parse.BAD_TIMESTAMP),
    ("u1,i1,view,0,,", parse.TIMESTAMP_BEFORE_FLOOR),
    ("u1,i1,view,1994-12-31T23:59:59Z,,", parse.TIMESTAMP_BEFORE_FLOOR),
    ("u1,i1,view,2999-01-01T00:00:00Z,,", parse.FUTURE_TIMESTAMP),
    (f"u1,i1,view,{NOW_S + 1},,", parse.FUTURE_TIMESTAMP),
    ("u1,i1,rating,2024-01-01T10:00:00Z,,", parse.BAD_RATING),
    ("u1,i1,rating,2024-01-01T10:00:00Z,great,", parse.BAD_RATING),
    ("u1,i1,rating,2024-01-01T10:00:00Z,9,", parse.RATING_OUT_OF_RANGE),
    ("u1,i1,purchase,2024-01-01T10:00:00Z,lots,", parse.BAD_VALUE),
    ("u1,i1,purchase,2024-01-01T10:00:00Z,-1,", parse.VALUE_OUT_OF_RANGE),
    ("u1,i1,view,2024-01-01T10:00:00Z,1e9,", parse.VALUE_OUT_OF_RANGE),
]


GOOD_CSV_CASES = [
    ("u1,i1,view,2024-01-01T10:00:00Z,,e1", ("u1", "i1", "view", None, T, "e1")),
    ("u1,i1,view,2024-01-01T10:00:00Z", ("u1", "i1", "view", None, T, None)),  # trailing optional fields omitted
    (" u1 , i1 ,Add-To-Cart,1704103200,2,", ("u1", "i1", "add_to_cart", 2.0, T, None)),
    ("u1,i1,purchase,2024-01-01 12:00:00+02:00,1.5,e9\r", ("u1", "i1", "purchase", 1.5, T, "e9")),
    ('"u,1",i1,click,1704103200.25,,', ("u,1", "i1", "click", None, T + dt.timedelta(microseconds=250_000), None)),
    ("u1,0042,rating,2024-01-01T10:00:00Z,4.5,", ("u1", "0042", "rating", 4.5, T, None)),
    ("\u00a0u1\t,e\u0301,view,2024-01-01T10:00:00Z,,", ("u1", "\u00e9", "view", None, T, None)),  # normal form
    ("x" * 256 + ",i1,view,2024-01-01T10:00:00Z,,", ("x" * 256, "i1", "view", None, T, None)),
]


def case_id(value) -> str | None:
    """Test ids cut to 40 characters (some lines are 10,000 characters long)."""
    return value[:37] + "..." if isinstance(value, str) and len(value) > 40 else None


@pytest.fixture(scope="module")
def csv_parsed(spark):
    """Every CSV case parsed in one frame (one Spark job, the way ingest parses a file)."""
    return parse_lines(spark, [line for line, _ in CSV_CASES + GOOD_CSV_CASES])


@pytest.mark.parametrize("line, reason", CSV_CASES, ids=case_id)
def test_each_csv_fault_class_gets_its_reason(csv_parsed, line, reason):
    row = csv_parsed[line]
    assert row[C.REASON] == reason
    assert row[C.USER_ID] is None and row[C.EVENT_TS] is None


@pytest.mark.parametrize("line, expected", GOOD_CSV_CASES, ids=case_id)
def test_good_csv_lines_are_typed_and_normalised(csv_parsed, line, expected):
    row = csv_parsed[line]
    assert row[C.REASON] is None
    assert (row[C.USER_ID], row[C.ITEM_ID], row[C.EVENT_TYPE], row[C.VALUE], row[C.EVENT_TS],
            row[C.SOURCE_EVENT_ID]) == expected


def test_configured_event_types_and_column_order(spark):
    fmt = parse.with_columns(parse.get_format("events"), ["event_ts", "event_type", "user_id", "item_id"])
    df = spark.createDataFrame([("2024-01-01T10:00:00Z,like,u1,i1", "f"), ("2024-01-01T10:00:00Z,view,u1,i1", "f")],
                               f"{C.RAW} string, {C.SOURCE_FILE} string")
    rows = {r[C.RAW]: r for r in parse.parse_lines(df, fmt, max_event_ts_seconds=NOW_S,
                                                   event_types=["like"]).collect()}
    assert rows["2024-01-01T10:00:00Z,like,u1,i1"][C.REASON] is None
    assert rows["2024-01-01T10:00:00Z,like,u1,i1"][C.USER_ID] == "u1"
    assert rows["2024-01-01T10:00:00Z,view,u1,i1"][C.REASON] == parse.UNKNOWN_EVENT_TYPE
    with pytest.raises(ValueError, match="required field"):
        parse.with_columns(fmt, ["user_id", "item_id", "event_ts"])


JSON_CASES = [
    ('{"user_id":"u1","item_id"', parse.MALFORMED_JSON),
    ("[1,2]", parse.MALFORMED_JSON),
    ("u1,i1,view,2024-01-01T10:00:00Z", parse.MALFORMED_JSON),
    ("{}", parse.MISSING_USER_ID),
    ('{"user_id":"u1","event_type":"view","event_ts":"2024-01-01T10:00:00Z"}', parse.MISSING_ITEM_ID),
    ('{"user_id":"u1","item_id":"i1","event_ts":"2024-01-01T10:00:00Z"}', parse.MISSING_EVENT_TYPE),
    ('{"user_id":"u1","item_id":"i1","event_type":"view"}', parse.MISSING_TIMESTAMP),
    ('{"user_id":"u1","item_id":"i1","event_type":"view","event_ts":"soon"}', parse.BAD_TIMESTAMP),
    ('{"user_id":"u1","item_id":"i1","event_type":"rating","event_ts":1704103200,"value":"x"}', parse.BAD_RATING),
    ('{"user_id":"u1","item_id":"i\ufffd","event_type":"view","event_ts":1704103200}', parse.INVALID_UTF8),
]


@pytest.fixture(scope="module")
def json_parsed(spark):
    return parse_lines(spark, [line for line, _ in JSON_CASES], fmt="events-json")


@pytest.mark.parametrize("line, reason", JSON_CASES)
def test_each_json_fault_class_gets_its_reason(json_parsed, line, reason):
    assert json_parsed[line][C.REASON] == reason


def test_json_numbers_and_strings_both_parse(spark):
    line = '{"event_id":7,"event_ts":1704103200,"value":3,"item_id":42,"user_id":"u1","event_type":"PURCHASE"}'
    row = parse_lines(spark, [line], fmt="events-json")[line]
    assert (row[C.REASON], row[C.USER_ID], row[C.ITEM_ID], row[C.EVENT_TYPE], row[C.VALUE], row[C.EVENT_TS],
            row[C.SOURCE_EVENT_ID]) == (None, "u1", "42", "purchase", 3.0, T, "7")


def test_parquet_rows_parse_through_their_json_text(spark, tmp_path):
    from flow.ingest import read_rows
    from lake.fs import list_input_files

    path = str(tmp_path / "events.parquet")
    spark.createDataFrame(
        [("u1", "i1", "view", T, None, "e1"), ("u2", None, "view", T, None, "e2"), ("u3", "i3", "rating", T, 7.0, None)],
        "user_id string, item_id string, event_type string, event_ts timestamp, value double, event_id string",
    ).coalesce(1).write.parquet(path)
    files = list_input_files(spark, path)
    rows = parse.parse_lines(read_rows(spark, files, parse.get_format("events-parquet")),
                             parse.get_format("events-parquet"), max_event_ts_seconds=NOW_S).collect()
    by_user = {r[C.RAW].split('"user_id":"')[1][:2]: r for r in rows}
    assert by_user["u1"][C.REASON] is None and by_user["u1"][C.EVENT_TS] == T
    assert by_user["u2"][C.REASON] == parse.MISSING_ITEM_ID
    assert by_user["u3"][C.REASON] == parse.RATING_OUT_OF_RANGE


def test_near_duplicates_share_an_event_key(spark):
    """A replay formatted differently (unix vs ISO time, '2' vs '2.0', case, blanks) is the same event."""
    lines = ["u1,i1,purchase,2024-01-01T10:00:00Z,2,", " u1 ,i1,PURCHASE,1704103200,2.0,",
             "u1,i1,purchase,2024-01-01T10:00:00Z,3,",  # another value: another event
             "u2,i9,view,2024-01-01T10:00:00Z,,e1", "u2,i1,view,2024-01-02T10:00:00Z,,e1"]  # same source id
    df = spark.createDataFrame([(line, "f", i) for i, line in enumerate(lines)],
                               f"{C.RAW} string, {C.SOURCE_FILE} string, pos long")
    parsed = parse.parse_lines(df, parse.get_format("events"), max_event_ts_seconds=NOW_S)
    events = parse.valid_events(parsed, order_col="pos").orderBy("pos").collect()
    assert [r["pos"] for r in events] == [0, 2, 3]  # the first copy of each event is the one kept
    assert events[2][C.ITEM_ID] == "i9"


def test_invalid_utf8_bytes_in_a_real_file(spark, tmp_path):
    """Spark's text reader keeps undecodable bytes; the parser flags them rather than loading garbage ids."""
    path = tmp_path / "bytes.csv"
    path.write_bytes(b"u1,i\xff\xfe1,view,2024-01-01T10:00:00Z,,\nu2,i2,view,2024-01-01T10:00:00Z,,\n")
    from pyspark.sql import functions as F

    lines = spark.read.text(str(path)).select(F.col("value").alias(C.RAW),
                                              F.col("_metadata.file_path").alias(C.SOURCE_FILE))
    reasons = sorted(str(r[C.REASON]) for r in
                     parse.parse_lines(lines, parse.get_format("events"), max_event_ts_seconds=NOW_S).collect())
    assert reasons == ["None", parse.INVALID_UTF8]
    rating_reasons = [r[C.REASON] for r in parse.parse_lines(
        lines.limit(1), parse.get_format("movielens"), max_event_ts_seconds=NOW_S).collect()]
    assert rating_reasons == [parse.INVALID_UTF8]


def test_every_reason_is_listed():
    used = {reason for _, reason in CSV_CASES + JSON_CASES} | {parse.BOT_SUSPECTED, parse.HEADER}
    assert used <= set(parse.REASONS)
