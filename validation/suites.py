"""great-expectations suites, one per stage and table, written in code (not JSON) so they are reviewed like code.

Each suite is a function returning a list of expectations; its arguments are what the stage knows (the rating
scale, the list length N, a cut-off for "the future"). Some checks need a column the table does not hold, e.g.
"the list of item ids has no duplicates": a ``*_frame`` function adds those columns with plain Spark
expressions, and the suite checks them. Checks over groups of rows or over two tables (exactly N rows per user,
scores descending by rank, no seen item, ids agree with the id map) are Spark SQL queries that must return no
row (great-expectations' UnexpectedRowsExpectation, ``{batch}`` is the table being checked). The views they
join (``seen_view`` ...) are registered by the caller (validation/stages.py).

Every expectation carries a ``description``: it is what the gate prints when the check fails, and what Data
Docs shows.
"""
from __future__ import annotations

import datetime as dt

import great_expectations.expectations as gxe
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from transforms import columns as C
from validation.expectations import ExpectQueryToReturnNoRows

INT32_MAX = 2**31 - 1
FLOAT32_MAX = 3.4028234663852886e38  # scores are float32: NaN and +-inf fall outside [-max, max]
FLOAT64_MAX = 1.7976931348623157e308

# raw lines: what became of each line (derived from the parser's reason column)
LINE_STATUS = "line_status"
GOOD_LINE = "good"
HEADER_LINE = "header"
QUARANTINED_LINE = "quarantined"

# derived columns
RATING_VALUE = "rating_value"  # silver: value of rating events only (other event types have no rating scale)
N_ITEMS = "n_items"
N_SCORES = "n_scores"
N_DISTINCT_ITEMS = "n_distinct_items"
SCORES_DESCENDING = "scores_descending"
SCORES_FINITE = "scores_finite"


def _not_null(column: str) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToNotBeNull(column=column, description=f"{column} is never null")


def _unique(column: str, why: str = "") -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeUnique(column=column, description=f"{column} is unique{why}")


def _unique_large(column: str, why: str = "") -> gxe.Expectation:
    """``column`` is unique (nulls aside), for tables of many millions of rows.

    great-expectations' own check counts each value's rows with a window over the column: a shuffle and a sort
    of every value (on 10M silver event ids, 64-character strings: 17.4-23.0 s). This query groups 64-bit hashes
    of the values instead (a shuffle of 8-byte keys, no sort), keeps the rare hashes seen twice, and counts the
    actual values only among the rows with such a hash (a broadcast join): 9.9-13.0 s there, in the same runs.
    A hash shared by two different values makes those rows candidates, never offenders, so the result is exact.
    The offending rows, with their number of ``copies``, are the examples a failed gate shows.
    """
    col = f"`{column}`"
    query = (f"SELECT * FROM (SELECT /*+ BROADCAST(repeated) */ b.*, count(1) OVER (PARTITION BY b.{col}) AS copies "
             f"FROM {{batch}} b JOIN (SELECT xxhash64({col}) AS key_hash FROM {{batch}} WHERE {col} IS NOT NULL "
             f"GROUP BY 1 HAVING count(1) > 1) repeated ON xxhash64(b.{col}) = repeated.key_hash "
             f"WHERE b.{col} IS NOT NULL) WHERE copies > 1")
    return _no_rows(query, f"{column} is unique{why}")


def _type(column: str, spark_type: str) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeOfType(column=column, type_=spark_type,
                                            description=f"{column} is of type {spark_type}")


def _columns(columns: list[str], *, exact: bool) -> gxe.Expectation:
    what = "exactly the columns" if exact else "at least the columns"
    return gxe.ExpectTableColumnsToMatchSet(column_set=list(columns), exact_match=exact,
                                           description=f"the table has {what} {', '.join(columns)}")


def _not_empty(what: str) -> gxe.Expectation:
    return gxe.ExpectTableRowCountToBeBetween(min_value=1, description=f"{what} is not empty")


def _no_rows(query: str, description: str) -> gxe.Expectation:
    return ExpectQueryToReturnNoRows(unexpected_rows_query=query, description=description)


def _not_after(column: str, latest: dt.datetime) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeBetween(
        column=column, min_value=dt.datetime(1970, 1, 1), max_value=latest,
        description=f"{column} is not in the future (at most {latest:%Y-%m-%d %H:%M} UTC) nor before 1970")


# ---------------------------------------------------------------------------------------------- raw input
# Two ways to check raw input. After ingest (the nightly flow): the run's own accounting and the lines it
# quarantined, no re-reading. Before ingest (jobs.validate --stage raw --input ...): the files parsed as ingest
# will parse them, at the cost of one extra read and parse.


def raw_lines_frame(parsed: DataFrame, *, keep: tuple[str, ...] = ()) -> DataFrame:
    """The parser's output (transforms.parse.parse_lines) reduced to what the raw suite checks.

    ``line_status`` says what became of each line: good (loaded), header (counted, skipped) or quarantined.
    ``keep`` adds parser columns, e.g. the raw text, for a frame that example bad lines are drawn from.
    """
    from transforms.parse import HEADER

    reason = F.col(C.REASON)
    status = (F.when(reason.isNull(), F.lit(GOOD_LINE)).when(reason == HEADER, F.lit(HEADER_LINE))
              .otherwise(F.lit(QUARANTINED_LINE)))
    return parsed.select(reason, status.alias(LINE_STATUS), *keep)


def raw_suite(*, known_reasons: list[str], max_quarantine_rate: float) -> list[gxe.Expectation]:
    """Raw input lines parsed ahead of ingest: not empty, every line accounted for, few enough quarantined."""
    if not 0 <= max_quarantine_rate <= 1:
        raise ValueError(f"max_quarantine_rate must be within [0, 1], got {max_quarantine_rate}")
    return [
        _not_empty("the input"),
        gxe.ExpectColumnValuesToNotBeNull(
            column=LINE_STATUS, description="every line is accounted for: loaded, a header, or quarantined"),
        gxe.ExpectColumnValuesToBeInSet(
            column=LINE_STATUS, value_set=[GOOD_LINE, HEADER_LINE, QUARANTINED_LINE],
            description="every line is accounted for: loaded, a header, or quarantined"),
        gxe.ExpectColumnValuesToBeInSet(
            column=C.REASON, value_set=sorted(known_reasons),
            description="every rejected line carries a known reason code"),
        gxe.ExpectColumnValuesToBeInSet(
            column=LINE_STATUS, value_set=[GOOD_LINE, HEADER_LINE], mostly=round(1 - max_quarantine_rate, 10),
            description=f"at most {max_quarantine_rate:.2%} of the lines are quarantined"),
    ]


UNACCOUNTED = "unaccounted"
QUARANTINE_RATE = "quarantine_rate"


def ingest_run_frame(runs: DataFrame) -> DataFrame:
    """An ingest run's summary row (meta/ingest_runs: read, headers, loaded, duplicates, quarantined, status) plus
    ``unaccounted`` (lines neither header, loaded, duplicate nor quarantined) and ``quarantine_rate``."""
    accounted = F.col("headers") + F.col("loaded") + F.col("duplicates") + F.col("quarantined")
    return runs.withColumn(UNACCOUNTED, F.col("read") - accounted).withColumn(
        QUARANTINE_RATE, F.when(F.col("read") > 0, F.col("quarantined") / F.col("read")).otherwise(F.lit(0.0)))


def ingest_run_suite(*, max_quarantine_rate: float) -> list[gxe.Expectation]:
    """Raw input as ingest saw it (the run's own accounting, from its Delta commit metrics): it finished, read
    something, accounted for every line, and quarantined few enough of them."""
    if not 0 <= max_quarantine_rate <= 1:
        raise ValueError(f"max_quarantine_rate must be within [0, 1], got {max_quarantine_rate}")
    return [
        gxe.ExpectTableRowCountToEqual(value=1, description="one summary row for the ingest run"),
        gxe.ExpectColumnValuesToBeInSet(column="status", value_set=["ok"], description="the ingest run finished ok"),
        gxe.ExpectColumnValuesToBeBetween(column="read", min_value=1, description="the input is not empty"),
        gxe.ExpectColumnValuesToBeBetween(
            column=UNACCOUNTED, min_value=0, max_value=0,
            description="every line is accounted for: read = headers + loaded + duplicates + quarantined"),
        gxe.ExpectColumnValuesToBeBetween(
            column=QUARANTINE_RATE, min_value=0, max_value=max_quarantine_rate,
            description=f"at most {max_quarantine_rate:.2%} of the lines are quarantined"),
    ]


def quarantined_lines_suite(*, known_reasons: list[str]) -> list[gxe.Expectation]:
    """The lines an ingest run quarantined: each keeps its raw text, its source and a known reason."""
    return [
        *[_not_null(c) for c in (C.RAW, C.SOURCE_FILE, C.REASON)],
        gxe.ExpectColumnValuesToBeInSet(column=C.REASON, value_set=sorted(known_reasons),
                                        description="every rejected line carries a known reason code"),
    ]


# ---------------------------------------------------------------------------------------------- silver events

# the columns every silver table has (jobs.ingest writes more: provenance, partition columns)
SILVER_COLUMNS = [C.EVENT_ID, C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.VALUE, C.EVENT_TS]
OTHER_VALUE = "other_value"  # silver: value of non-rating events (a quantity, a dwell time)


def silver_frame(events: DataFrame) -> DataFrame:
    """silver.interactions plus the value split by meaning: ``rating_value`` for rating events (a rating scale
    applies), ``other_value`` for the rest (a quantity or a duration: never negative, bounded)."""
    is_rating = F.col(C.EVENT_TYPE) == C.RATING_EVENT
    return (events.withColumn(RATING_VALUE, F.when(is_rating, F.col(C.VALUE)))
            .withColumn(OTHER_VALUE, F.when(~is_rating, F.col(C.VALUE))))


def silver_suite(*, rating_min: float, rating_max: float, latest_ts: dt.datetime, event_types: list[str],
                 max_value: float = 1e6, columns: list[str] | None = None) -> list[gxe.Expectation]:
    """Silver events: schema, non-null keys, unique event key, known event types, values in range, sane times.

    ``columns``: the columns the table must have (default SILVER_COLUMNS; validation/stages.py passes ingest's list).
    """
    return [
        _not_empty("silver.interactions"),
        _columns(list(columns or SILVER_COLUMNS), exact=False),
        _type(C.EVENT_ID, "StringType"), _type(C.USER_ID, "StringType"), _type(C.ITEM_ID, "StringType"),
        _type(C.VALUE, "DoubleType"), _type(C.EVENT_TS, "TimestampType"),
        *[_not_null(c) for c in (C.EVENT_ID, C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.EVENT_TS)],
        _unique_large(C.EVENT_ID, " (the event key: re-ingesting the same events must add nothing)"),
        gxe.ExpectColumnValuesToBeInSet(column=C.EVENT_TYPE, value_set=sorted(event_types),
                                        description=f"event_type is one of {', '.join(sorted(event_types))}"),
        gxe.ExpectColumnValuesToBeBetween(
            column=RATING_VALUE, min_value=rating_min, max_value=rating_max,
            description=f"ratings are within the scale [{rating_min:g}, {rating_max:g}]"),
        gxe.ExpectColumnValuesToBeBetween(
            column=OTHER_VALUE, min_value=0, max_value=max_value,
            description=f"values of other events are within [0, {max_value:g}]"),
        _not_after(C.EVENT_TS, latest_ts),
    ]


# ---------------------------------------------------------------------------------------------- gold training


def training_suite(*, value_col: str, rating_min: float, rating_max: float, latest_ts: dt.datetime,
                   user_map_view: str, item_map_view: str) -> list[gxe.Expectation]:
    """gold.training: one row per (user, item), positive weights or in-scale ratings, ids that agree with the maps.

    ``value_col`` is ``weight`` (implicit) or ``rating`` (explicit). ``user_map_view`` / ``item_map_view`` name
    temp views of silver.user_ids / silver.item_ids.
    """
    if value_col == C.WEIGHT:
        value_check = gxe.ExpectColumnValuesToBeBetween(
            column=C.WEIGHT, min_value=0.0, strict_min=True, max_value=FLOAT64_MAX,
            description="weights are positive finite numbers")
    elif value_col == C.RATING:
        value_check = gxe.ExpectColumnValuesToBeBetween(
            column=C.RATING, min_value=rating_min, max_value=rating_max,
            description=f"ratings are within the scale [{rating_min:g}, {rating_max:g}]")
    else:
        raise ValueError(f"value_col must be {C.WEIGHT!r} or {C.RATING!r}, got {value_col!r}")
    columns = [C.USER_ID, C.ITEM_ID, C.USER_IDX, C.ITEM_IDX, value_col, C.N_EVENTS, C.LAST_EVENT_TS]
    return [
        _not_empty("gold.training"),
        _columns(columns, exact=True),
        _type(C.USER_ID, "StringType"), _type(C.ITEM_ID, "StringType"),
        _type(C.USER_IDX, "IntegerType"), _type(C.ITEM_IDX, "IntegerType"), _type(value_col, "DoubleType"),
        _type(C.LAST_EVENT_TS, "TimestampType"),
        *[_not_null(c) for c in (C.USER_ID, C.ITEM_ID, C.USER_IDX, C.ITEM_IDX, value_col)],
        gxe.ExpectCompoundColumnsToBeUnique(column_list=[C.USER_IDX, C.ITEM_IDX],
                                            description="one row per (user, item)"),
        value_check,
        gxe.ExpectColumnValuesToBeBetween(column=C.N_EVENTS, min_value=1,
                                          description="every pair has at least one event"),
        *[gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=INT32_MAX,
                                            description=f"{c} fits a Java int (ALS ids)")
          for c in (C.USER_IDX, C.ITEM_IDX)],
        _not_after(C.LAST_EVENT_TS, latest_ts),
        *[_no_rows(
            f"SELECT t.{id_col}, t.{idx_col}, m.{idx_col} AS map_{idx_col} FROM {{batch}} t "
            f"LEFT JOIN {view} m ON t.{id_col} = m.{id_col} "
            f"WHERE m.{idx_col} IS NULL OR m.{idx_col} <> t.{idx_col}",
            f"every {id_col} has the {idx_col} its id map gives it")
          for id_col, idx_col, view in ((C.USER_ID, C.USER_IDX, user_map_view),
                                        (C.ITEM_ID, C.ITEM_IDX, item_map_view))],
    ]


def id_map_suite(*, id_col: str, idx_col: str, previous_view: str | None = None) -> list[gxe.Expectation]:
    """silver.user_ids / silver.item_ids: a one-to-one map of raw ids to int32 indices that never changes.

    ``previous_view``, when given, is the map as of the last successful gate: every pair in it must still be here.
    """
    checks = [
        _not_empty(f"the {id_col} map"),
        _columns([id_col, idx_col], exact=True),
        _type(id_col, "StringType"), _type(idx_col, "IntegerType"),
        _not_null(id_col), _not_null(idx_col),
        _unique(id_col, " (the map is one-to-one)"), _unique(idx_col, " (the map is one-to-one)"),
        gxe.ExpectColumnValuesToBeBetween(column=idx_col, min_value=0, max_value=INT32_MAX,
                                          description=f"{idx_col} fits a Java int (ALS ids)"),
    ]
    if previous_view:
        checks.append(_no_rows(
            f"SELECT p.{id_col}, p.{idx_col} FROM {previous_view} p LEFT ANTI JOIN {{batch}} c "
            f"ON p.{id_col} = c.{id_col} AND p.{idx_col} = c.{idx_col}",
            f"existing ids never change: every ({id_col}, {idx_col}) of the last validated map is still there"))
    return checks


# ---------------------------------------------------------------------------------------------- recommendations

RECOMMENDATION_COLUMNS = [C.MODEL_VERSION, C.USER_ID, C.RANK, C.ITEM_ID, C.SCORE]


def recommendations_suite(*, n: int, seen_view: str) -> list[gxe.Expectation]:
    """gold.user_recommendations of one model version: exactly N ranked, unseen, distinct items per scored user.

    ``seen_view`` names a temp view of (user_id, item_id) pairs the model was trained on: none may be recommended,
    and every user in it must be scored.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [
        _not_empty("the model version's recommendations"),
        _columns(RECOMMENDATION_COLUMNS, exact=True),
        _type(C.USER_ID, "StringType"), _type(C.ITEM_ID, "StringType"), _type(C.RANK, "IntegerType"),
        _type(C.SCORE, "FloatType"),
        *[_not_null(c) for c in (C.USER_ID, C.ITEM_ID, C.RANK, C.SCORE)],
        gxe.ExpectColumnValuesToBeBetween(column=C.RANK, min_value=1, max_value=n,
                                          description=f"rank is within 1..{n}"),
        gxe.ExpectColumnValuesToBeBetween(column=C.SCORE, min_value=-FLOAT32_MAX, max_value=FLOAT32_MAX,
                                          description="scores are finite (no NaN, no infinity)"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=[C.USER_ID, C.RANK], description="one item per (user, rank)"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=[C.USER_ID, C.ITEM_ID],
                                            description="no item twice in a user's list"),
        _no_rows(f"SELECT {C.USER_ID}, count(*) AS rows FROM {{batch}} GROUP BY {C.USER_ID} HAVING count(*) <> {int(n)}",
                 f"every scored user has exactly {n} recommendations"),
        _no_rows(f"SELECT {C.USER_ID}, {C.RANK}, {C.SCORE}, previous_score FROM ("
                 f"SELECT {C.USER_ID}, {C.RANK}, {C.SCORE}, "
                 f"lag({C.SCORE}) OVER (PARTITION BY {C.USER_ID} ORDER BY {C.RANK}) AS previous_score "
                 f"FROM {{batch}}) WHERE {C.SCORE} > previous_score",
                 "scores never increase with rank"),
        _no_rows(f"SELECT r.{C.USER_ID}, r.{C.ITEM_ID}, r.{C.RANK} FROM {{batch}} r JOIN {seen_view} s "
                 f"ON r.{C.USER_ID} = s.{C.USER_ID} AND r.{C.ITEM_ID} = s.{C.ITEM_ID}",
                 "no user is recommended an item they have already seen"),
        _no_rows(f"SELECT DISTINCT s.{C.USER_ID} FROM {seen_view} s LEFT ANTI JOIN {{batch}} r "
                 f"ON s.{C.USER_ID} = r.{C.USER_ID}",
                 "every user of the training table is scored"),
    ]


def popular_items_suite(*, n: int | None = None, rows: int | None = None) -> list[gxe.Expectation]:
    """Popular-items fallback (gold or snapshot): ranks 1..n once each, distinct non-null items, finite scores."""
    checks = [
        _not_empty("the popular-items fallback"),
        *[_not_null(c) for c in (C.RANK, C.ITEM_ID, C.SCORE)],
        _unique(C.RANK), _unique(C.ITEM_ID, " (no item twice in the fallback)"),
        gxe.ExpectColumnValuesToBeBetween(column=C.RANK, min_value=1, max_value=n,
                                          description="rank starts at 1" + (f" and ends by {n}" if n else "")),
        gxe.ExpectColumnValuesToBeBetween(column=C.SCORE, min_value=-FLOAT64_MAX, max_value=FLOAT64_MAX,
                                          description="scores are finite (no NaN, no infinity)"),
    ]
    if rows is not None:
        checks.append(gxe.ExpectTableRowCountToEqual(value=rows, description=f"{rows} rows, as the manifest says"))
    return checks


# ---------------------------------------------------------------------------------------------- serving snapshot


def snapshot_lists_frame(lists: DataFrame) -> DataFrame:
    """The snapshot's user_recommendations (user_id, item_ids[], scores[]) plus per-list facts the suite checks."""
    item_ids, scores = F.col("item_ids"), F.col("scores")

    def finite(x: Column) -> Column:
        return ~F.isnan(x) & (F.abs(x) <= F.lit(FLOAT32_MAX))

    return lists.select(
        C.USER_ID, item_ids, scores,
        F.size(item_ids).alias(N_ITEMS),
        F.size(scores).alias(N_SCORES),
        F.size(F.array_distinct(item_ids)).alias(N_DISTINCT_ITEMS),
        (F.sort_array(scores, asc=False) == scores).alias(SCORES_DESCENDING),
        F.forall(scores, finite).alias(SCORES_FINITE),
    )


def snapshot_lists_suite(*, n: int, rows: int) -> list[gxe.Expectation]:
    """Snapshot lists: one row per user, N distinct items each, one score per item, scores descending and finite."""
    return [
        gxe.ExpectTableRowCountToEqual(value=rows, description=f"{rows} users, as the manifest says"),
        *[_not_null(c) for c in (C.USER_ID, "item_ids", "scores")],
        _unique(C.USER_ID, " (one list per user)"),
        gxe.ExpectColumnValuesToBeBetween(column=N_ITEMS, min_value=n, max_value=n,
                                          description=f"every user has exactly {n} items"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A=N_ITEMS, column_B=N_SCORES,
                                            description="every item has a score"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A=N_ITEMS, column_B=N_DISTINCT_ITEMS,
                                            description="no item twice in a list"),
        gxe.ExpectColumnValuesToBeInSet(column=SCORES_DESCENDING, value_set=[True],
                                        description="scores are in descending order"),
        gxe.ExpectColumnValuesToBeInSet(column=SCORES_FINITE, value_set=[True],
                                        description="scores are finite (no NaN, no infinity)"),
    ]
