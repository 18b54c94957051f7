"""Parse raw rating lines into typed events; every line that cannot be used gets a machine-readable reason.

Input: a DataFrame with the raw text of each line (``raw``) and its ``source_file`` (``spark.read.text`` plus
``_metadata.file_path``). Output: the same rows with typed columns and ``reason`` (null when the row is good).
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from transforms import columns as C


@dataclass(frozen=True)
class RatingFormat:
    name: str
    separator_regex: str  # applied with F.split
    header_prefix: str | None  # a line starting with this is a header, not data
    rating_min: float
    rating_max: float
    description: str


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

# Reasons, in the order they are checked; the first that applies is recorded.
EMPTY_LINE = "empty_line"
HEADER = "header"  # not an error: counted, never loaded, never quarantined
WRONG_FIELD_COUNT = "wrong_field_count"
MISSING_USER_ID = "missing_user_id"
MISSING_ITEM_ID = "missing_item_id"
BAD_RATING = "bad_rating"
RATING_OUT_OF_RANGE = "rating_out_of_range"
BAD_TIMESTAMP = "bad_timestamp"
FUTURE_TIMESTAMP = "future_timestamp"


def get_format(name: str) -> RatingFormat:
    try:
        return RATING_FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown rating format {name!r}; known formats: {sorted(RATING_FORMATS)}") from None


def _blank_to_null(col: Column) -> Column:
    trimmed = F.trim(col)
    return F.when(trimmed == "", F.lit(None)).otherwise(trimmed)


def parse_rating_lines(lines: DataFrame, fmt: RatingFormat, *, max_event_ts_seconds: int,
                       rating_min: float | None = None, rating_max: float | None = None) -> DataFrame:
    """Typed rating events plus ``reason``; ``max_event_ts_seconds`` (unix s) bounds timestamps from the future."""
    lo = fmt.rating_min if rating_min is None else rating_min
    hi = fmt.rating_max if rating_max is None else rating_max
    raw = F.col(C.RAW)
    parts = F.split(F.regexp_replace(raw, r"\r$", ""), fmt.separator_regex)
    user = _blank_to_null(F.get(parts, 0))
    item = _blank_to_null(F.get(parts, 1))
    rating_text = _blank_to_null(F.get(parts, 2))
    ts_text = _blank_to_null(F.get(parts, 3))
    rating = rating_text.try_cast("double")
    ts_seconds = ts_text.try_cast("long")

    reason = (
        F.when(F.trim(raw) == "", F.lit(EMPTY_LINE))
        .when(F.lit(fmt.header_prefix is not None) & raw.startswith(fmt.header_prefix or "\u0000"), F.lit(HEADER))
        .when(F.size(parts) != 4, F.lit(WRONG_FIELD_COUNT))
        .when(user.isNull(), F.lit(MISSING_USER_ID))
        .when(item.isNull(), F.lit(MISSING_ITEM_ID))
        .when(rating.isNull() | F.isnan(rating), F.lit(BAD_RATING))
        .when((rating < lo) | (rating > hi), F.lit(RATING_OUT_OF_RANGE))
        .when(ts_seconds.isNull() | (ts_seconds < 0), F.lit(BAD_TIMESTAMP))
        .when(ts_seconds > F.lit(max_event_ts_seconds), F.lit(FUTURE_TIMESTAMP))
    )
    ok = reason.isNull()
    return lines.select(
        F.when(ok, user).alias(C.USER_ID),
        F.when(ok, item).alias(C.ITEM_ID),
        F.lit(C.RATING_EVENT).alias(C.EVENT_TYPE),
        F.when(ok, rating).alias(C.VALUE),
        F.when(ok, F.timestamp_seconds(ts_seconds)).alias(C.EVENT_TS),
        F.col(C.RAW),
        F.col(C.SOURCE_FILE),
        reason.alias(C.REASON),
    )


def with_event_id(events: DataFrame) -> DataFrame:
    """A deterministic event key: the same event replayed (same user, item, type, time, value) gets the same id."""
    key = F.concat_ws(
        "\u0001", F.col(C.USER_ID), F.col(C.ITEM_ID), F.col(C.EVENT_TYPE),
        F.unix_micros(F.col(C.EVENT_TS)).cast("string"), F.coalesce(F.col(C.VALUE).cast("string"), F.lit("")),
    )
    return events.withColumn(C.EVENT_ID, F.sha2(key, 256))


def with_event_date(events: DataFrame) -> DataFrame:
    """event_date (UTC day) and event_month, silver's partition column (yyyy-MM; a day grain makes tiny files)."""
    return events.withColumn(C.EVENT_DATE, F.to_date(F.col(C.EVENT_TS))).withColumn(
        C.EVENT_MONTH, F.date_format(F.col(C.EVENT_TS), "yyyy-MM")
    )


def valid_events(parsed: DataFrame) -> DataFrame:
    """Good rows only, typed, keyed, deduplicated within the batch, with their date partition."""
    return (
        parsed.where(F.col(C.REASON).isNull())
        .drop(C.REASON, C.RAW)
        .transform(with_event_id)
        .dropDuplicates([C.EVENT_ID])
        .transform(with_event_date)
    )


def rejected_rows(parsed: DataFrame) -> DataFrame:
    """Rows for the quarantine table: raw text, source and reason (headers are not errors and are left out)."""
    return parsed.where(F.col(C.REASON).isNotNull() & (F.col(C.REASON) != HEADER)).select(
        C.RAW, C.SOURCE_FILE, C.REASON
    )
