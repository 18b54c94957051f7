"""Drift checks: thresholds, the comparison itself, and a doctored second run tripping the silver gate."""
from __future__ import annotations

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from lake import tables
from lake.registry import Lake
from transforms import columns as C
from validation.drift import DEFAULT_THRESHOLDS, DISTINCT_RSD, ProfileSpec, compare, profile, resolve_thresholds
from validation.gates import GateOptions, run_gate
from validation.history import previous_success
from validation.report import GateFailed


BEFORE = {"rows": 1000, "distinct_users": 100, "distinct_items": 50, "null_rate": {"value": 0.0},
          "rates": {"quarantine_rate": 0.01},
          "value": {"column": "rating", "mean": 3.5, "stddev": 1.0,
                    "quantiles": {"p10": 2.0, "p25": 3.0, "p50": 3.5, "p75": 4.0, "p90": 5.0}}}


def by_name(checks):
    return {c.name: c for c in checks}


def test_an_unchanged_profile_passes_every_drift_check():
    checks = compare("t", BEFORE, BEFORE, resolve_thresholds("training"))
    assert {c.name for c in checks} == {"drift_rows", "drift_distinct_users", "drift_distinct_items",
                                        "drift_null_rate_value", "drift_quarantine_rate", "drift_mean_rating",
                                        "drift_quantiles_rating"}
    assert all(c.success for c in checks)


def test_each_kind_of_drift_trips_its_own_check():
    now = {**BEFORE, "rows": 300, "distinct_users": 100, "null_rate": {"value": 0.05},
           "rates": {"quarantine_rate": 0.2},
           "value": {**BEFORE["value"], "mean": 2.0,
                     "quantiles": {"p10": 0.5, "p25": 1.0, "p50": 2.0, "p75": 2.5, "p90": 3.0}}}
    checks = by_name(compare("t", now, BEFORE, resolve_thresholds("training")))
    failing = {name for name, c in checks.items() if not c.success}
    assert failing == {"drift_rows", "drift_null_rate_value", "drift_quarantine_rate", "drift_mean_rating",
                       "drift_quantiles_rating"}
    assert checks["drift_rows"].observed == {"now": 300, "before": 1000, "ratio": 0.3}
    # the largest quantile move (p25: 3.0 -> 1.0) over the previous p10-p90 spread (5.0 - 2.0)
    assert checks["drift_quantiles_rating"].observed["largest_shift"] == round(2 / 3, 4)


def test_no_previous_run_means_no_drift_checks():
    assert compare("t", BEFORE, None, DEFAULT_THRESHOLDS) == []


def test_thresholds_are_configurable_per_stage_and_validated():
    assert resolve_thresholds("silver")["rows_ratio"] == [1.0, None]  # silver never loses rows
    custom = resolve_thresholds("silver", '{"rows_ratio": [0.9, 1.1], "silver": {"mean_change": 0.05}}')
    assert custom["rows_ratio"] == [0.9, 1.1] and custom["mean_change"] == 0.05
    assert resolve_thresholds("raw", {"silver": {"mean_change": 0.05}})["mean_change"] == DEFAULT_THRESHOLDS["mean_change"]
    off = resolve_thresholds("raw", {"quantile_shift": None})
    now = {**BEFORE, "value": {**BEFORE["value"], "quantiles": {k: v * 10 for k, v in BEFORE["value"]["quantiles"].items()}}}
    assert "drift_quantiles_rating" not in by_name(compare("t", now, BEFORE, off))
    with pytest.raises(ValueError, match="unknown drift threshold.*row_ratio"):
        resolve_thresholds("raw", {"row_ratio": [0, 1]})
    with pytest.raises(ValueError, match="not valid JSON"):
        resolve_thresholds("raw", "{rows_ratio")


def silver_events(spark, rows: int):
    """A silver.interactions table's worth of rating events (the columns jobs.ingest writes)."""
    i = F.col("id")
    ts = F.timestamp_seconds(F.lit(1_600_000_000) + i * 997)
    return spark.range(rows, numPartitions=2).select(
        F.sha2(i.cast("string"), 256).alias(C.EVENT_ID), (i % 40).cast("string").alias(C.USER_ID),
        (i * 7 % 150).cast("string").alias(C.ITEM_ID), F.lit(C.RATING_EVENT).alias(C.EVENT_TYPE),
        (F.lit(1.0) + (i * 13 % 9) / 2).alias(C.VALUE), ts.alias(C.EVENT_TS),
        F.lit(None).cast("string").alias(C.SOURCE_EVENT_ID),
        F.to_date(ts).alias(C.EVENT_DATE), F.date_format(ts, "yyyy-MM").alias(C.EVENT_MONTH),
        F.lit("file:/ratings.csv").alias(C.SOURCE_FILE))


def test_distinct_counts_are_exact(spark):
    rows = [(f"u{i % 37}", i % 11, float(i % 5)) for i in range(500)]  # string users, integer items
    df = spark.createDataFrame(rows, "user_id string, item_idx int, value double")
    result = profile(df, ProfileSpec(user_col="user_id", item_col="item_idx", value_col="value"))
    assert (result["rows"], result["distinct_users"], result["distinct_items"]) == (500, 37, 11)
    assert "distinct_estimated" not in result
    empty = profile(df.limit(0), ProfileSpec(user_col="user_id", item_col="item_idx"))
    assert (empty["rows"], empty["distinct_users"], empty["distinct_items"]) == (0, 0, 0)


def test_a_bound_against_an_older_estimated_profile_is_widened_by_its_error_and_still_trips():
    silver = resolve_thresholds("silver")  # distinct users must not fall (ratio >= 1)
    before = {"rows": 1000, "distinct_users": 1000}
    slightly_lower = {"rows": 1000, "distinct_users": 990}
    assert not by_name(compare("t", slightly_lower, before, silver))["drift_distinct_users"].success
    noisy = {**slightly_lower, "distinct_estimated": True}
    check = by_name(compare("t", noisy, before, silver))["drift_distinct_users"]
    assert check.success and check.expected == {"ratio": [round(1 - 3 * DISTINCT_RSD, 6), None]}
    assert "estimated" in check.description
    lost = {"rows": 1000, "distinct_users": 900, "distinct_estimated": True}
    assert not by_name(compare("t", lost, before, silver))["drift_distinct_users"].success


def test_a_doctored_second_run_trips_silver_drift(spark, tmp_path):
    lake = str(tmp_path / "lake")
    tables.append(silver_events(spark, 600), Lake(lake).silver, partition_by=[C.EVENT_MONTH])
    options = GateOptions(reports_dir=str(tmp_path / "reports"))
    first = run_gate(spark, "silver", Lake(lake), fmt="movielens", options=options)
    assert first.success and first.previous_run_id is None  # nothing to compare with yet

    # Doctor silver: lose a third of the events and shrink the remaining ratings (a unit change upstream, say)
    path = Lake(lake).silver
    table = DeltaTable.forPath(spark, path)
    table.delete(F.pmod(F.xxhash64(C.EVENT_ID), F.lit(3)) == 0)
    table.update(set={C.VALUE: F.col(C.VALUE) / 2})
    with pytest.raises(GateFailed) as failure:
        run_gate(spark, "silver", Lake(lake), fmt="movielens", options=options)
    result = failure.value.result
    assert result.previous_run_id == first.run_id
    assert {"drift_rows", "drift_mean_rating_value"} <= {c.name for c in result.failures}
    assert {c.kind for c in result.failures} == {"drift"}  # the data itself is still valid
    assert "row count stays within >= 1x of the previous successful run" in str(failure.value)

    # The failed run is recorded but is no baseline: the next run still compares with the first one
    runs = tables.read(spark, Lake(lake).validation_runs).orderBy("started_at").collect()
    assert [(r["stage"], r["success"]) for r in runs] == [("silver", True), ("silver", False)]
    assert previous_success(spark, Lake(lake), "silver")["run_id"] == first.run_id
