"""Parse raw input rows into typed events; every row that cannot be used gets a machine-readable reason.

Input: a DataFrame with the raw text of each row (``raw``) and its ``source_file`` (``spark.read.text`` plus
``_metadata.file_path``; jobs.ingest adds the split offset and a row position). Output: the same rows, every
input column kept, plus the typed columns (user_id, item_id, event_type, value, event_ts, source_event_id) and
``reason`` (null when the row is good; the typed columns are null when it is not).

Two families of formats share the output:

- rating files (MovieLens u.data / ratings.dat / ratings.csv, MovieTweetings ratings.dat): one rating per line,
  event_type ``rating``;
- event logs (``events`` CSV lines, ``events-json`` JSON lines, ``events-parquet``): user, item, event type,
  timestamp (ISO-8601 or unix seconds), an optional value (rating, quantity, dwell time) and an optional event id;
- pairs without times (``pairs`` CSV or TSV lines, ``pairs-parquet``): user, item and an optional weight (a play
  or purchase count; 1 when absent), event_type ``pair`` and value the weight. Their event time is the input
  file's modification time (``source_modified_at``, which flow.ingest.read_rows adds), so the same file read
  again gives the same event keys and adds nothing, while a new file (a new period's counts) adds its rows.

Parquet rows reach the parser as JSON text (jobs.ingest turns each row into ``to_json(struct(*))``), so all
event formats share one set of checks and every quarantined row keeps a readable raw text.

User and item ids follow the id contract (serving.ids, as Spark expressions in transforms.id_rules): they are
normalised (NFC, trimmed), and an id that is too long or holds a forbidden character is quarantined
(``user_id_too_long``, ``user_id_invalid``, ``item_id_too_long``, ``item_id_invalid``). Timestamps before the
format's floor (``min_event_date``; event logs 1995-01-01, rating files none) are quarantined as
``timestamp_before_floor``; negative ones stay ``bad_timestamp``.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Iterable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from transforms import columns as C
from transforms import id_rules
from transforms.training import DEFAULT_EVENT_WEIGHTS


@dataclass(frozen=True)
class RatingFormat:
    name: str
    separator_regex: str  # applied with F.split
    header_prefix: str | None  # a line starting with this is a header, not data
    rating_min: float
    rating_max: float
    description: str
    file_type: str = "text"
    min_event_date: str | None = None  # rating dumps: any time from 1970 on


# The fields of an event log, in the default CSV column order. The first four are required.
EVENT_FIELDS = (C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_TS, C.VALUE, "event_id")
REQUIRED_EVENT_FIELDS = (C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_TS)
DEFAULT_EVENT_TYPES = tuple(DEFAULT_EVENT_WEIGHTS)
DEFAULT_MIN_EVENT_DATE = "1995-01-01"  # event logs: an earlier time is a default or a broken clock (epoch 0)


@dataclass(frozen=True)
class EventFormat:
    """An event log: ``file_type`` csv (``columns`` in order), json (keys = EVENT_FIELDS) or parquet (columns)."""

    name: str
    file_type: str
    description: str
    columns: tuple[str, ...] = EVENT_FIELDS
    event_types: tuple[str, ...] = DEFAULT_EVENT_TYPES
    rating_min: float = 0.5  # value of a ``rating`` event
    rating_max: float = 5.0
    max_value: float = 1e6  # largest value (quantity, dwell seconds) of any other event type
    min_event_date: str | None = DEFAULT_MIN_EVENT_DATE  # earlier events are quarantined (timestamp_before_floor)


PAIR_FIELDS = (C.USER_ID, C.ITEM_ID, C.WEIGHT)  # the first two are required
# A pairs text line is a header when its first field, lower case without '_', '-' and blanks, is one of these.
PAIR_HEADER_USER_FIELDS = ("user", "userid", "users", "uid")


@dataclass(frozen=True)
class PairFormat:
    """(user, item[, weight]) rows without times: ``file_type`` text (comma or tab separated lines, each line
    split on tabs when it holds one, else on commas; no quoting; header optional) or parquet (columns user_id,
    item_id[, weight]). ``rating_min``/``rating_max`` only answer callers asking any format for a rating scale."""

    name: str
    file_type: str
    description: str
    max_value: float = 1e6  # largest weight; larger ones are quarantined as value_out_of_range
    rating_min: float = 0.5
    rating_max: float = 5.0
    min_event_date: str | None = None  # file times from 1970 on


RATING_FORMATS = {
    fmt.name: fmt
    for fmt in (
        RatingFormat("movielens-100k", "\t", None, 1.0, 5.0, "MovieLens 100K u.data: user<TAB>item<TAB>rating<TAB>unix_ts"),
        # ratings.dat uses '::', ratings.csv uses ',' with a header; each line picks its own separator.
        RatingFormat("movielens", "::|,", "userId", 0.5, 5.0,
                     "MovieLens ratings.dat (user::item::rating::ts) or ratings.csv (header userId,movieId,rating,timestamp)"),
        RatingFormat("movietweetings", "::", None, 0.0, 10.0,
                     "MovieTweetings ratings.dat: user::imdb_id::rating::ts; item ids kept as strings (leading zeros)"),
    )
}
EVENT_FORMATS = {
    fmt.name: fmt
    for fmt in (
        EventFormat("events", "csv",
                    "event log, CSV lines user_id,item_id,event_type,event_ts[,value[,event_id]] (header optional, "
                    "event_ts ISO-8601 or unix seconds)"),
        EventFormat("events-json", "json",
                    "event log, JSON lines with keys user_id, item_id, event_type, event_ts, value, event_id"),
        EventFormat("events-parquet", "parquet",
                    "event log, Parquet files with columns user_id, item_id, event_type, event_ts, value, event_id"),
    )
}
PAIR_FORMATS = {
    fmt.name: fmt
    for fmt in (
        PairFormat("pairs", "text", "pairs without times, lines user_id,item_id[,weight] (commas or tabs, header "
                                    "optional; weight a count, 1 when absent; event time: the file's modification "
                                    "time)"),
        PairFormat("pairs-parquet", "parquet", "pairs without times, Parquet files with columns user_id, item_id "
                                               "and optionally weight"),
    )
}
FORMATS = {**RATING_FORMATS, **EVENT_FORMATS, **PAIR_FORMATS}

# Reasons, in the order they are checked; the first that applies is recorded.
EMPTY_LINE = "empty_line"
INVALID_UTF8 = "invalid_utf8"  # bytes that are not UTF-8, or U+FFFD (bytes already lost upstream)
HEADER = "header"  # not an error: counted, never loaded, never quarantined
WRONG_FIELD_COUNT = "wrong_field_count"
MALFORMED_JSON = "malformed_json"
MISSING_USER_ID = "missing_user_id"
USER_ID_TOO_LONG = "user_id_too_long"  # over serving.ids.MAX_ID_CHARS once normalised
USER_ID_INVALID = "user_id_invalid"  # holds a character the id contract forbids (serving.ids.FORBIDDEN_RANGES)
MISSING_ITEM_ID = "missing_item_id"
ITEM_ID_TOO_LONG = "item_id_too_long"
ITEM_ID_INVALID = "item_id_invalid"
MISSING_EVENT_TYPE = "missing_event_type"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
BAD_RATING = "bad_rating"
RATING_OUT_OF_RANGE = "rating_out_of_range"
MISSING_TIMESTAMP = "missing_timestamp"
BAD_TIMESTAMP = "bad_timestamp"
TIMESTAMP_BEFORE_FLOOR = "timestamp_before_floor"
FUTURE_TIMESTAMP = "future_timestamp"
BAD_VALUE = "bad_value"
VALUE_OUT_OF_RANGE = "value_out_of_range"
BOT_SUSPECTED = "bot_suspected"  # set by transforms.outliers, not by the parser

# Every reason a row can carry, headers included (validation suites take this list).
REASONS = (EMPTY_LINE, INVALID_UTF8, HEADER, WRONG_FIELD_COUNT, MALFORMED_JSON, MISSING_USER_ID, USER_ID_TOO_LONG,
           USER_ID_INVALID, MISSING_ITEM_ID, ITEM_ID_TOO_LONG, ITEM_ID_INVALID, MISSING_EVENT_TYPE,
           UNKNOWN_EVENT_TYPE, BAD_RATING, RATING_OUT_OF_RANGE, MISSING_TIMESTAMP, BAD_TIMESTAMP,
           TIMESTAMP_BEFORE_FLOOR, FUTURE_TIMESTAMP, BAD_VALUE, VALUE_OUT_OF_RANGE, BOT_SUSPECTED)

_TYPED = (C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.VALUE, C.EVENT_TS, C.SOURCE_EVENT_ID)
_CORRUPT = "_corrupt_record"


def get_format(name: str) -> RatingFormat | EventFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown input format {name!r}; known formats: {sorted(FORMATS)}") from None


def is_event_format(fmt) -> bool:
    return isinstance(fmt, EventFormat)


def is_pair_format(fmt) -> bool:
    return isinstance(fmt, PairFormat)


def expected_layout(fmt) -> str:
    """What a row of ``fmt`` must hold, for error messages: the CSV column order of an event log (after
    ``--columns``), else the format's description."""
    if is_event_format(fmt) and fmt.file_type == "csv":
        return (f"{fmt.name}: CSV lines {','.join(fmt.columns)} (required: {', '.join(REQUIRED_EVENT_FIELDS)}; "
                "header optional)")
    return f"{fmt.name}: {fmt.description}"


def with_columns(fmt: EventFormat, columns: Iterable[str]) -> EventFormat:
    """``fmt`` reading CSV fields in the order ``columns`` (names from EVENT_FIELDS; any other name is ignored)."""
    columns = tuple(c.strip() for c in columns)
    missing = [c for c in REQUIRED_EVENT_FIELDS if c not in columns]
    if missing:
        raise ValueError(f"CSV columns {list(columns)} lack the required field(s) {missing}; "
                         f"required: {list(REQUIRED_EVENT_FIELDS)}, optional: value, event_id")
    return replace(fmt, columns=columns)


def without_trailing_cr(raw: Column) -> Column:
    """``raw`` without trailing carriage returns (the text reader strips \\n and \\r\\n; a stray \\r may remain).

    rtrim copies the string every time an expression reads it (a quarter of the parse's time in profiles);
    lines rarely end in \\r, so the copy is made only for those.
    """
    return F.when(raw.endswith("\r"), F.rtrim(raw, F.lit("\r"))).otherwise(raw)


def _blank_to_null(col: Column) -> Column:
    trimmed = F.trim(col)
    return F.when(trimmed == "", F.lit(None)).otherwise(trimmed)


def _field_text(name: str, text: Column) -> Column:
    """An event field's text: ids in normal form (transforms.id_rules), other fields trimmed; blank as null."""
    return id_rules.normalised_id(text) if name in (C.USER_ID, C.ITEM_ID) else _blank_to_null(text)


def _input_columns(lines: DataFrame) -> list[str]:
    return [c for c in lines.columns if c not in _TYPED and c != C.REASON]


def timestamp_floor_seconds(fmt, min_event_date: str | None = None) -> int | None:
    """Unix seconds of the earliest event time kept: ``min_event_date`` (YYYY-MM-DD, UTC midnight) or, when None,
    the format's floor; None when there is none (times from 1970 on are kept). ValueError for a malformed date."""
    text = fmt.min_event_date if min_event_date is None else min_event_date
    if text is None:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"min_event_date must be a date YYYY-MM-DD, got {text!r}") from None
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp())


def _line_reason(raw: Column, header: Column, malformed: Column, malformed_reason: str) -> Column:
    """The line-level reason of a row of a text format or a Parquet row as JSON (null when the line is whole):
    empty, invalid UTF-8, a header, malformed (``malformed_reason``)."""
    bad_bytes = ~F.is_valid_utf8(raw) | raw.contains("\ufffd")
    return (F.when(F.trim(raw) == "", F.lit(EMPTY_LINE)).when(bad_bytes, F.lit(INVALID_UTF8))
            .when(header, F.lit(HEADER)).when(malformed, F.lit(malformed_reason)))


def _id_checks(chain: Column, normalised: Column, missing: str, too_long: str, invalid: str) -> Column:
    """``chain`` (a CASE WHEN of reasons) continued with the id contract's checks of one normalised id column."""
    return (chain.when(normalised.isNull(), F.lit(missing))
            .when(id_rules.too_long(normalised), F.lit(too_long))
            .when(id_rules.has_forbidden(normalised), F.lit(invalid)))


def _timestamp_checks(chain: Column, seconds: Column, *, floor: int | None, max_event_ts_seconds: int) -> Column:
    """``chain`` continued with the checks of a time in unix seconds: unparsed or negative, before the floor (when
    there is one), after ``max_event_ts_seconds``."""
    chain = chain.when(seconds.isNull() | (seconds < 0), F.lit(BAD_TIMESTAMP))
    if floor is not None:
        chain = chain.when(seconds < F.lit(floor), F.lit(TIMESTAMP_BEFORE_FLOOR))
    return chain.when(seconds > F.lit(max_event_ts_seconds), F.lit(FUTURE_TIMESTAMP))


def parse_lines(lines: DataFrame, fmt, *, max_event_ts_seconds: int, rating_min: float | None = None,
                rating_max: float | None = None, event_types: Iterable[str] | None = None,
                max_value: float | None = None, min_event_date: str | None = None) -> DataFrame:
    """Typed events plus ``reason`` for any format; ``max_event_ts_seconds`` (unix s) bounds timestamps from the future.

    ``rating_min``/``rating_max`` default to the format's scale; ``event_types`` (event logs) to the format's known
    types, ``max_value`` (event logs, pairs) to its largest plausible non-rating value; ``min_event_date`` to the
    format's floor. Pairs formats need the column ``source_modified_at`` (their event time; read_rows adds it).
    """
    floor = timestamp_floor_seconds(fmt, min_event_date)
    if is_event_format(fmt):
        return _parse_event_lines(lines, fmt, max_event_ts_seconds=max_event_ts_seconds, rating_min=rating_min,
                                  rating_max=rating_max, event_types=event_types, max_value=max_value, floor=floor)
    if is_pair_format(fmt):
        return _parse_pair_lines(lines, fmt, max_event_ts_seconds=max_event_ts_seconds,
                                 max_value=fmt.max_value if max_value is None else max_value, floor=floor)
    return _parse_rating_file_lines(lines, fmt, max_event_ts_seconds=max_event_ts_seconds, rating_min=rating_min,
                                    rating_max=rating_max, floor=floor)


def _parse_rating_file_lines(lines: DataFrame, fmt: RatingFormat, *, max_event_ts_seconds: int,
                             rating_min: float | None, rating_max: float | None, floor: int | None) -> DataFrame:
    # Three projections on purpose: each field is split, trimmed and cast once, and the reason chain reads the
    # results. One projection re-evaluated split() for every reference (Spark does not share subexpressions
    # across CASE WHEN branches), which made rating files ~25x slower to parse than event logs.
    lo = fmt.rating_min if rating_min is None else rating_min
    hi = fmt.rating_max if rating_max is None else rating_max
    keep = _input_columns(lines)
    raw = F.col(C.RAW)
    split = lines.select(*keep, F.split(without_trailing_cr(raw), fmt.separator_regex).alias("_parts"))
    parts = F.col("_parts")
    fields = split.select(*keep, F.size(parts).alias("_n"),
                          *[id_rules.normalised_id(F.get(parts, i)).alias(f"_f{i}") for i in range(2)],
                          *[F.trim(F.get(parts, i)).alias(f"_f{i}") for i in range(2, 4)])
    typed = fields.select(
        *keep, "_n",
        *[F.when(F.col(f"_f{i}") != "", F.col(f"_f{i}")).alias(name)
          for i, name in enumerate(("_user", "_item", "_rating_text", "_ts_text"))])
    user, item = F.col("_user"), F.col("_item")
    typed = typed.select(*keep, "_n", "_user", "_item", F.col("_rating_text").try_cast("double").alias("_rating"),
                         F.col("_ts_text").try_cast("long").alias("_ts"))
    rating, ts_seconds = F.col("_rating"), F.col("_ts")

    line = (
        F.when(F.trim(raw) == "", F.lit(EMPTY_LINE))
        .when(~F.is_valid_utf8(raw) | raw.contains("\ufffd"), F.lit(INVALID_UTF8))
        .when(F.lit(fmt.header_prefix is not None) & raw.startswith(fmt.header_prefix or "\u0000"), F.lit(HEADER))
        .when(F.col("_n") != 4, F.lit(WRONG_FIELD_COUNT))
    )
    with_ids = _id_checks(_id_checks(line, user, MISSING_USER_ID, USER_ID_TOO_LONG, USER_ID_INVALID),
                          item, MISSING_ITEM_ID, ITEM_ID_TOO_LONG, ITEM_ID_INVALID)
    rated = (with_ids.when(rating.isNull() | F.isnan(rating), F.lit(BAD_RATING))
             .when((rating < lo) | (rating > hi), F.lit(RATING_OUT_OF_RANGE)))
    reason = _timestamp_checks(rated, ts_seconds, floor=floor, max_event_ts_seconds=max_event_ts_seconds)
    with_reason = typed.select("*", reason.alias(C.REASON))
    ok = F.col(C.REASON).isNull()
    return with_reason.select(
        *keep,
        F.when(ok, user).alias(C.USER_ID),
        F.when(ok, item).alias(C.ITEM_ID),
        F.lit(C.RATING_EVENT).alias(C.EVENT_TYPE),
        F.when(ok, rating).alias(C.VALUE),
        F.when(ok, F.timestamp_seconds(ts_seconds)).alias(C.EVENT_TS),
        F.lit(None).cast("string").alias(C.SOURCE_EVENT_ID),
        C.REASON,
    )


def _pair_fields(lines: DataFrame, fmt: PairFormat, keep: list[str],
                 clean: Column) -> tuple[DataFrame, dict[str, Column], Column, str]:
    """(``lines`` with each row split or parsed once, field name -> text, malformed flag, its reason)."""
    if fmt.file_type == "parquet":
        return (*_json_fields(lines, keep, clean, PAIR_FIELDS), MALFORMED_JSON)
    separator = F.when(clean.contains("\t"), F.lit("\t")).otherwise(F.lit(","))
    split = lines.select(*keep, F.split(clean, separator, -1).alias("_parts"))
    parts = F.col("_parts")
    fields = {name: F.get(parts, i) for i, name in enumerate(PAIR_FIELDS)}
    return split, fields, (F.size(parts) < 2) | (F.size(parts) > len(PAIR_FIELDS)), WRONG_FIELD_COUNT


def _parse_pair_lines(lines: DataFrame, fmt: PairFormat, *, max_event_ts_seconds: int, max_value: float,
                      floor: int | None) -> DataFrame:
    """Pairs rows typed: event_type ``pair``, value the weight (1 when absent), event_ts the file's modification
    time (``source_modified_at``); reasons as for event logs (field count or JSON, ids, bad_value,
    value_out_of_range, the time checks)."""
    if C.SOURCE_MODIFIED not in lines.columns:
        raise ValueError(f"format {fmt.name} takes its event time from the column {C.SOURCE_MODIFIED!r} "
                         f"(flow.ingest.read_rows adds it); columns: {lines.columns}")
    keep = _input_columns(lines)
    raw = F.col(C.RAW)
    clean = without_trailing_cr(raw)
    lines, fields, malformed, malformed_reason = _pair_fields(lines, fmt, keep, clean)
    header_name = F.regexp_replace(F.lower(F.trim(fields[C.USER_ID])), "[-_ ]", "")
    header = F.lit(fmt.file_type == "text") & header_name.isin(*PAIR_HEADER_USER_FIELDS)
    step1 = lines.select(*keep, _line_reason(raw, header, malformed, malformed_reason).alias("_line_reason"),
                         _field_text(C.USER_ID, fields[C.USER_ID]).alias("_u"),
                         _field_text(C.ITEM_ID, fields[C.ITEM_ID]).alias("_i"),
                         _blank_to_null(fields[C.WEIGHT]).alias("_v"))
    step2 = step1.select("*", F.col("_v").try_cast("double").alias("_value"),
                         (F.unix_micros(F.col(C.SOURCE_MODIFIED)) / F.lit(1e6)).alias("_seconds"))
    value, value_text = F.col("_value"), F.col("_v")
    line = F.when(F.col("_line_reason").isNotNull(), F.col("_line_reason"))
    with_ids = _id_checks(_id_checks(line, F.col("_u"), MISSING_USER_ID, USER_ID_TOO_LONG, USER_ID_INVALID),
                          F.col("_i"), MISSING_ITEM_ID, ITEM_ID_TOO_LONG, ITEM_ID_INVALID)
    reason = (_timestamp_checks(with_ids, F.col("_seconds"), floor=floor, max_event_ts_seconds=max_event_ts_seconds)
              .when(value_text.isNotNull() & value.isNull(), F.lit(BAD_VALUE))
              .when(F.isnan(value) | (value < 0) | (value > F.lit(float(max_value))), F.lit(VALUE_OUT_OF_RANGE)))
    ok = F.col(C.REASON).isNull()
    return step2.select("*", reason.alias(C.REASON)).select(
        *keep,
        F.when(ok, F.col("_u")).alias(C.USER_ID),
        F.when(ok, F.col("_i")).alias(C.ITEM_ID),
        F.lit(C.PAIR_EVENT).alias(C.EVENT_TYPE),
        F.when(ok, F.coalesce(value, F.lit(1.0))).alias(C.VALUE),
        F.when(ok, F.col(C.SOURCE_MODIFIED)).alias(C.EVENT_TS),
        F.lit(None).cast("string").alias(C.SOURCE_EVENT_ID),
        C.REASON,
    )


def normalise_event_type(col: Column) -> Column:
    """Lower case, surrounding blanks removed, inner blanks and dashes as '_' ('Add-To-Cart' -> 'add_to_cart')."""
    return F.translate(F.lower(F.trim(col)), " -\t", "___")


def _csv_fields(lines: DataFrame, keep: list[str], clean: Column, fmt: EventFormat) -> tuple[DataFrame, dict[str, Column], Column]:
    """(``lines`` with each CSV line split once, field name -> text, malformed flag); quoted fields via from_csv.

    The split (and, for the rare quoted line, from_csv) is its own projection: the field expressions then read
    its result instead of re-splitting the line for every field (Spark does not share subexpressions across
    CASE WHEN branches, so one projection re-evaluated split() about a dozen times per line).
    """
    has_quote = clean.contains('"')
    schema = ", ".join(f"`c{i}` string" for i in range(len(fmt.columns)))
    unquoted = F.regexp_replace(clean, r'"[^"]*"', "")
    split = lines.select(
        *keep, F.split(clean, ",", -1).alias("_parts"),
        F.when(has_quote, F.from_csv(clean, schema)).alias("_quoted"),
        F.when(has_quote, F.size(F.split(unquoted, ",", -1))).alias("_n_quoted"))
    parts, quoted = F.col("_parts"), F.col("_quoted")
    fields = {}
    for i, name in enumerate(fmt.columns):
        if name in EVENT_FIELDS:
            fields[name] = F.when(quoted.isNotNull(), quoted[f"c{i}"]).otherwise(F.get(parts, i))
    n_fields = F.coalesce(F.col("_n_quoted"), F.size(parts))
    required = max(fmt.columns.index(c) for c in REQUIRED_EVENT_FIELDS) + 1
    malformed = (n_fields < required) | (n_fields > len(fmt.columns))
    return split, fields, malformed


def _json_fields(lines: DataFrame, keep: list[str], clean: Column,
                 names: tuple[str, ...] = EVENT_FIELDS) -> tuple[DataFrame, dict[str, Column], Column]:
    """(``lines`` with each JSON line parsed once, field name -> text for each of ``names``, malformed flag); see
    _csv_fields."""
    schema = T.StructType([T.StructField(name, T.StringType()) for name in names]
                          + [T.StructField(_CORRUPT, T.StringType())])
    parsed = lines.select(*keep, F.from_json(clean, schema, {"mode": "PERMISSIVE",
                                                             "columnNameOfCorruptRecord": _CORRUPT}).alias("_obj"))
    obj = F.col("_obj")
    malformed = obj.isNull() | obj[_CORRUPT].isNotNull()
    return parsed, {name: obj[name] for name in names}, malformed


def _event_fields(lines: DataFrame, fmt: EventFormat, keep: list[str],
                  clean: Column) -> tuple[DataFrame, dict[str, Column], Column, str, Column]:
    """(``lines`` with each line split or parsed once, field name -> text, malformed flag, the reason a malformed
    line gets, header flag) for the format's file_type; ValueError for an unknown one."""
    if fmt.file_type == "csv":
        lines, fields, malformed = _csv_fields(lines, keep, clean, fmt)
        prefix = ",".join(fmt.columns[:2])
        header = F.lower(F.substring(clean, 1, len(prefix))) == F.lit(prefix)
        return lines, fields, malformed, WRONG_FIELD_COUNT, header
    if fmt.file_type in ("json", "parquet"):
        lines, fields, malformed = _json_fields(lines, keep, clean)
        return lines, fields, malformed, MALFORMED_JSON, F.lit(False)
    raise ValueError(f"format {fmt.name}: unknown file_type {fmt.file_type!r} (csv, json or parquet)")


def _typed_event_values(step1: DataFrame, keep: list[str]) -> DataFrame:
    """Step 2 of _parse_event_lines: step 1's columns plus the normalised type (``_type``), the event time
    (``_event_ts``) and its unix seconds (``_seconds``), and the value as a double (``_value``); null where a text
    does not parse. The time text is unix seconds (a number, up to 12 integer digits) or anything Spark casts to a
    timestamp (ISO-8601 with or without zone; the session zone, UTC, when it has none).
    """
    # Each cast is its own column first, read by the expressions after it (evaluated once per line).
    # A text with ':' is never a number, so ISO times skip the decimal cast: a failed cast costs an exception
    # (about 1.7 us a line, a third of the whole parse when most times are ISO-8601).
    ts_text = F.col("_ts")
    step1 = step1.select("*", F.when(~ts_text.contains(":"), ts_text.try_cast("decimal(21,9)")).alias("_seconds_dec"))
    seconds_dec = F.col("_seconds_dec")
    is_number = seconds_dec.isNotNull()
    step1 = step1.select("*", F.when(~is_number, ts_text.try_cast("timestamp")).alias("_iso_ts"))
    iso_ts = F.col("_iso_ts")
    return step1.select(
        *keep, "_line_reason", "_u", "_i", "_t", "_ts", "_v", "_e",
        normalise_event_type(F.col("_t")).alias("_type"),
        F.when(is_number, F.timestamp_micros((seconds_dec * F.lit(1_000_000)).cast("long")))
        .otherwise(iso_ts).alias("_event_ts"),
        F.coalesce(seconds_dec.cast("double"), F.unix_micros(iso_ts) / F.lit(1e6)).alias("_seconds"),
        F.col("_v").try_cast("double").alias("_value"),
    )


def _event_reason(known_types: list[str], *, lo: float, hi: float, top: float, max_event_ts_seconds: int,
                  floor: int | None) -> Column:
    """Step 3 of _parse_event_lines: the first reason that applies to a row of step 2 (null when it is good)."""
    value, value_text = F.col("_value"), F.col("_v")
    value_unparsed = value_text.isNotNull() & (value.isNull() | F.isnan(value))
    is_rating = F.col("_type") == F.lit(C.RATING_EVENT)
    line = F.when(F.col("_line_reason").isNotNull(), F.col("_line_reason"))
    with_ids = _id_checks(_id_checks(line, F.col("_u"), MISSING_USER_ID, USER_ID_TOO_LONG, USER_ID_INVALID),
                          F.col("_i"), MISSING_ITEM_ID, ITEM_ID_TOO_LONG, ITEM_ID_INVALID)
    typed = (with_ids.when(F.col("_t").isNull(), F.lit(MISSING_EVENT_TYPE))
             .when(~F.col("_type").isin(*known_types), F.lit(UNKNOWN_EVENT_TYPE))
             .when(F.col("_ts").isNull(), F.lit(MISSING_TIMESTAMP)))
    return (
        _timestamp_checks(typed, F.col("_seconds"), floor=floor, max_event_ts_seconds=max_event_ts_seconds)
        .when(is_rating & (value_text.isNull() | value_unparsed), F.lit(BAD_RATING))
        .when(is_rating & ((value < lo) | (value > hi)), F.lit(RATING_OUT_OF_RANGE))
        .when(value_unparsed, F.lit(BAD_VALUE))
        .when((value < 0) | (value > F.lit(float(top))), F.lit(VALUE_OUT_OF_RANGE))
    )


def _parse_event_lines(lines: DataFrame, fmt: EventFormat, *, max_event_ts_seconds: int,
                       rating_min: float | None, rating_max: float | None, event_types: Iterable[str] | None,
                       max_value: float | None, floor: int | None) -> DataFrame:
    """Three projections (fields, typed values, reason) so each stays small enough for Spark's code generator."""
    lo = fmt.rating_min if rating_min is None else rating_min
    hi = fmt.rating_max if rating_max is None else rating_max
    top = fmt.max_value if max_value is None else max_value
    known_types = sorted(set(fmt.event_types if event_types is None else event_types))
    if not known_types:
        raise ValueError("event_types is empty: every event would be quarantined as unknown_event_type")
    keep = _input_columns(lines)
    raw = F.col(C.RAW)
    clean = without_trailing_cr(raw)
    lines, fields, malformed, malformed_reason, header = _event_fields(lines, fmt, keep, clean)

    # 1. the text of each field, blank as null, and the line-level flags
    line_reason = _line_reason(raw, header, malformed, malformed_reason)
    names = {C.USER_ID: "_u", C.ITEM_ID: "_i", C.EVENT_TYPE: "_t", C.EVENT_TS: "_ts", C.VALUE: "_v", "event_id": "_e"}
    texts = [(_field_text(f, fields[f]) if f in fields else F.lit(None).cast("string")).alias(alias)
             for f, alias in names.items()]
    step1 = lines.select(*keep, line_reason.alias("_line_reason"), *texts)
    # 2. typed values; 3. the first reason that applies
    step2 = _typed_event_values(step1, keep)
    reason = _event_reason(known_types, lo=lo, hi=hi, top=top, max_event_ts_seconds=max_event_ts_seconds,
                           floor=floor)
    step3 = step2.select(*keep, "_u", "_i", "_type", "_value", "_event_ts", "_e", reason.alias(C.REASON))
    ok = F.col(C.REASON).isNull()
    return step3.select(
        *keep,
        F.when(ok, F.col("_u")).alias(C.USER_ID),
        F.when(ok, F.col("_i")).alias(C.ITEM_ID),
        F.when(ok, F.col("_type")).alias(C.EVENT_TYPE),
        F.when(ok, F.col("_value")).alias(C.VALUE),
        F.when(ok, F.col("_event_ts")).alias(C.EVENT_TS),
        F.when(ok, F.col("_e")).alias(C.SOURCE_EVENT_ID),
        F.col(C.REASON),
    )


def with_event_id(events: DataFrame) -> DataFrame:
    """A deterministic event key (sha256 hex), the MERGE key of silver.

    With a ``source_event_id`` (the log's own id): the same user and source id are the same event, however the
    replay is formatted. Without one: the same user, item, type, time (to the microsecond) and value are the same
    event, so a replayed line and a re-exported one ('4' vs '4.0', ISO vs unix time) collapse to one key.
    """
    content = F.concat_ws(
        "\u0001", F.col(C.USER_ID), F.col(C.ITEM_ID), F.col(C.EVENT_TYPE),
        F.unix_micros(F.col(C.EVENT_TS)).cast("string"), F.coalesce(F.col(C.VALUE).cast("string"), F.lit("")),
    )
    if C.SOURCE_EVENT_ID in events.columns:
        by_id = F.concat_ws("\u0001", F.lit("id"), F.col(C.USER_ID), F.col(C.SOURCE_EVENT_ID))
        content = F.when(F.col(C.SOURCE_EVENT_ID).isNotNull(), by_id).otherwise(content)
    return events.withColumn(C.EVENT_ID, F.sha2(content, 256))


def with_event_date(events: DataFrame) -> DataFrame:
    """event_date (UTC day) and event_month (yyyy-MM): silver is partitioned by one of them (jobs.ingest)."""
    return events.withColumn(C.EVENT_DATE, F.to_date(F.col(C.EVENT_TS))).withColumn(
        C.EVENT_MONTH, F.date_format(F.col(C.EVENT_TS), "yyyy-MM")
    )


def with_good_event_id(parsed: DataFrame) -> DataFrame:
    """``parsed`` with ``event_id`` on the good rows (null on rejected ones, where the hash is never computed)."""
    keyed = with_event_id(parsed)
    return keyed.withColumn(C.EVENT_ID, F.when(F.col(C.REASON).isNull(), F.col(C.EVENT_ID)))


FIRST_COPY = "_first_copy"
COPIES = "_copies"
_KEY_HASH = "_key_hash"


def duplicate_keys(keyed: DataFrame, *, order_col: str) -> DataFrame:
    """(event_id, _copies, _first_copy) for each key that occurs more than once among the good rows of ``keyed``.

    Two aggregations, neither of which moves whole rows: first a 64-bit hash of every key is counted (8 bytes a
    row shuffled instead of the 64-character key, and a hash map on longs); then only the rows whose hash repeats
    (the duplicates, plus the rare hash collision) are grouped by the key itself, which is exact.
    ``order_col`` must be unique per row (jobs.ingest uses the read order); the copy with the smallest value is
    the first.
    """
    good = keyed.where(F.col(C.EVENT_ID).isNotNull())
    key_hash = F.xxhash64(C.EVENT_ID)
    repeated = (good.groupBy(key_hash.alias(_KEY_HASH)).agg(F.count(F.lit(1)).alias(COPIES))
                .where(F.col(COPIES) > 1).select(_KEY_HASH))
    candidates = good.join(F.broadcast(repeated), key_hash == F.col(_KEY_HASH), "left_semi")
    return (candidates.groupBy(C.EVENT_ID)
            .agg(F.count(F.lit(1)).alias(COPIES), F.min(order_col).alias(FIRST_COPY))
            .where(F.col(COPIES) > 1))


def drop_later_copies(keyed: DataFrame, dup_keys: DataFrame, *, order_col: str, broadcast: bool = True) -> DataFrame:
    """The rows of ``keyed`` minus every copy of a duplicated key but the first (see duplicate_keys)."""
    firsts = dup_keys.select(C.EVENT_ID, FIRST_COPY)
    joined = keyed.join(F.broadcast(firsts) if broadcast else firsts, on=C.EVENT_ID, how="left")
    return joined.where(F.col(FIRST_COPY).isNull() | (F.col(order_col) == F.col(FIRST_COPY))).drop(FIRST_COPY)


def valid_events(parsed: DataFrame, *, order_col: str) -> DataFrame:
    """Good rows only, typed, keyed, with their date columns, and of each event key only the copy with the
    smallest ``order_col`` (unique per row, e.g. the read order): the same duplicate search as ingest's."""
    keyed = parsed.where(F.col(C.REASON).isNull()).drop(C.REASON, C.RAW).transform(with_event_id)
    first_copies = drop_later_copies(keyed, duplicate_keys(keyed, order_col=order_col), order_col=order_col,
                                     broadcast=False)
    return first_copies.transform(with_event_date)


def rejected_rows(parsed: DataFrame) -> DataFrame:
    """Rows for the quarantine table: raw text, source (file, offset, line when known) and reason.

    Headers are not errors and are left out.
    """
    position = [c for c in (C.SOURCE_OFFSET, C.SOURCE_LINE) if c in parsed.columns]
    return parsed.where(F.col(C.REASON).isNotNull() & (F.col(C.REASON) != HEADER)).select(
        C.RAW, C.SOURCE_FILE, *position, C.REASON
    )
