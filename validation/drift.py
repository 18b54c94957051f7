"""Drift checks: compare a table's profile with the one recorded by the previous successful gate of its stage.

A profile is a handful of numbers computed by Spark aggregations (no collect of rows): row count, distinct
users and items, the concentration of rows on the top user and the top item (the share of the rows that the most
frequent one holds), null rates of chosen columns, rates of chosen conditions (e.g. the quarantined share of raw
lines) and the distribution of a value column (mean, standard deviation, approximate quantiles).

Distinct users and items are counted as distinct 64-bit hashes of the ids (xxhash64), one query per column
(the same query counts the rows of each hash, so the top share comes with the count):
on 10M silver rows 6 s for both, against 9.4 s for distinct strings and 15 s for HyperLogLog++ estimates at 1%
error (which earlier versions used above 2M rows). A count of hashes is exact unless two ids share a hash; the
chance that any two of n ids do is about n^2 / 2^65 (3 in 10^6 at 10M ids, 3 in 10^4 at 10^8), and then the count
is one short. It never falls when ids are added, so "silver never loses a user" (a bound of 1.0) holds exactly.
The row count is always exact, and catches lost rows. Profiles are stored with each gate run
(meta/validation_runs), so the next run compares against them.

Thresholds (all configurable; ``None`` switches a check off):

========================  =============================================================================
``rows_ratio``            [low, high]: rows now / rows before must lie within (a bound may be None)
``distinct_users_ratio``  [low, high] for distinct users; ``distinct_items_ratio`` the same for items
``null_rate_increase``    largest allowed rise of a column's null rate (absolute, 0.01 = 1 point)
``rate_increase``         largest allowed rise of a tracked rate, e.g. the quarantine rate (absolute)
``top_share_increase``    largest allowed rise of the share of rows on the top user, and on the top item
                          (absolute, 0.1 = 10 points): a batch with most of its events on one item or user
``top_share_min_rows``    the top shares are compared only when both profiles have at least this many rows
                          (in a handful of rows one user or item holds a large share by chance)
``mean_change``           largest allowed relative change of the value column's mean (0.25 = 25%)
``quantile_shift``        largest allowed move of the value's p10..p90 quantiles, as a share of the previous
                          p10-p90 spread (so it means the same for ratings 1-5 and for weights 1-1000)
========================  =============================================================================

Defaults are below; a stage may override some (silver only grows, so it must not lose rows), and the caller
overrides either for every stage (``{"rows_ratio": [0.8, 1.5]}``) or per stage (``{"silver": {...}}``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from validation import STAGES
from validation.report import DRIFT, CheckResult

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
QUANTILE_ACCURACY = 1000
# profiles recorded by earlier versions may hold HyperLogLog++ estimates ("distinct_estimated": true) with this
# relative standard deviation; a bound compared with one is widened by 3 of them
DISTINCT_RSD = 0.01

DEFAULT_THRESHOLDS: dict = {
    "rows_ratio": [0.5, 2.0],
    "distinct_users_ratio": [0.5, 2.0],
    "distinct_items_ratio": [0.5, 2.0],
    "null_rate_increase": 0.01,
    "rate_increase": 0.02,
    "top_share_increase": 0.1,
    "top_share_min_rows": 100,
    "mean_change": 0.25,
    "quantile_shift": 0.5,
}
STAGE_THRESHOLDS: dict = {
    # silver is append-only: it never loses rows, users or items
    "silver": {"rows_ratio": [1.0, None], "distinct_users_ratio": [1.0, None], "distinct_items_ratio": [1.0, None]},
    # scores are not comparable between models, nor is how often a model recommends its top item; both are
    # recorded but not checked by default
    "recommendations": {"mean_change": None, "quantile_shift": None, "top_share_increase": None},
}


@dataclass(frozen=True)
class ProfileSpec:
    """What to profile in a target: the user and item columns, columns whose null rate matters, named rates
    (boolean Spark expressions, e.g. ``quarantine_rate``) and the value column whose distribution is tracked.

    For a target whose rows are counts rather than records (an ingest run's summary), ``rows_col`` names the
    column to sum as "rows", and ``ratios`` give rates as sum(numerator) / sum(denominator) columns.
    """

    user_col: str | None = None
    item_col: str | None = None
    null_cols: tuple[str, ...] = ()
    rates: dict[str, Column] = field(default_factory=dict)
    value_col: str | None = None
    rows_col: str | None = None
    ratios: dict[str, tuple[str, str]] = field(default_factory=dict)


def profile(df: DataFrame, spec: ProfileSpec) -> dict:
    """The profile of ``df`` (one aggregation, plus one query per user or item column): {"rows", "distinct_users",
    "distinct_items", "top_share": {"user", "item"}, "null_rate": {...}, "rates": {...}, "value": {"mean",
    "stddev", "quantiles": {"p10": ...}}} (keys present only for what ``spec`` asks)."""
    rows = F.sum(spec.rows_col) if spec.rows_col else F.count(F.lit(1))
    aggs: list[Column] = [F.coalesce(rows, F.lit(0)).alias("rows")]
    counted = {who: col for who, col in (("user", spec.user_col), ("item", spec.item_col)) if col}
    for i, col in enumerate(spec.null_cols):
        aggs.append(F.avg(F.col(col).isNull().cast("double")).alias(f"null_{i}"))
    rate_names = sorted({*spec.rates, *spec.ratios})
    for i, name in enumerate(rate_names):
        if name in spec.ratios:
            numerator, denominator = spec.ratios[name]
            rate = F.sum(numerator).cast("double") / F.sum(denominator)
        else:
            rate = F.avg(F.coalesce(spec.rates[name], F.lit(False)).cast("double"))
        aggs.append(rate.alias(f"rate_{i}"))
    if spec.value_col:
        value = F.col(spec.value_col).cast("double")
        finite = F.when(~F.isnan(value), value)
        aggs += [F.avg(finite).alias("value_mean"), F.stddev(finite).alias("value_stddev"),
                 F.percentile_approx(finite, list(QUANTILES), QUANTILE_ACCURACY).alias("value_quantiles")]
    row = df.agg(*aggs).first()
    result: dict = {"rows": int(row["rows"])}
    for who, col in counted.items():  # distinct hashes and the top one's rows, one query each (module docstring)
        distinct, top = _distinct_and_top(df, col) if result["rows"] else (0, 0)
        result[f"distinct_{who}s"] = distinct
        result.setdefault("top_share", {})[who] = top / result["rows"] if result["rows"] else None
    if spec.null_cols:
        result["null_rate"] = {col: _float(row[f"null_{i}"]) for i, col in enumerate(spec.null_cols)}
    if rate_names:
        result["rates"] = {name: _float(row[f"rate_{i}"]) for i, name in enumerate(rate_names)}
    if spec.value_col:
        quantiles = row["value_quantiles"]
        result["value"] = {
            "column": spec.value_col,
            "mean": _float(row["value_mean"]),
            "stddev": _float(row["value_stddev"]),
            "quantiles": ({f"p{round(q * 100)}": _float(v) for q, v in zip(QUANTILES, quantiles)}
                          if quantiles is not None else None),
        }
    return result


def _distinct_and_top(df: DataFrame, col: str) -> tuple[int, int]:
    """(distinct values, rows of the most frequent value) of ``col``, counted over 64-bit hashes in one query."""
    row = (df.groupBy(F.xxhash64(col).alias("key")).count()
           .agg(F.count(F.lit(1)).alias("distinct"), F.max("count").alias("top")).first())
    return int(row["distinct"]), int(row["top"] or 0)


def resolve_thresholds(stage: str, overrides: dict | str | None = None) -> dict:
    """Defaults, then the stage's defaults, then ``overrides`` (a dict or JSON text: top-level keys for every
    stage, a key named after a stage for that stage only). Unknown keys raise ValueError naming the known ones."""
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides)
        except json.JSONDecodeError as exc:
            raise ValueError(f"drift thresholds are not valid JSON ({exc}): {overrides!r}") from None
    overrides = overrides or {}
    if not isinstance(overrides, dict):
        raise ValueError(f"drift thresholds must be a JSON object, got {type(overrides).__name__}")
    general = {k: v for k, v in overrides.items() if k not in STAGES}
    per_stage = overrides.get(stage) or {}
    resolved = {**DEFAULT_THRESHOLDS, **STAGE_THRESHOLDS.get(stage, {})}
    for source in (general, per_stage):
        unknown = sorted(set(source) - set(DEFAULT_THRESHOLDS))
        if unknown:
            raise ValueError(f"unknown drift threshold(s) {unknown}; known: {sorted(DEFAULT_THRESHOLDS)} "
                             f"(or a stage name {list(STAGES)} holding those)")
        resolved.update(source)
    for key in ("rows_ratio", "distinct_users_ratio", "distinct_items_ratio"):
        value = resolved[key]
        if value is not None and not (isinstance(value, (list, tuple)) and len(value) == 2):
            raise ValueError(f"drift threshold {key} must be [low, high] (either may be null), got {value!r}")
    return resolved


def compare(target: str, current: dict, previous: dict | None, thresholds: dict) -> list[CheckResult]:
    """Drift checks of ``current`` against ``previous`` (both from ``profile``); none when there is no previous."""
    if not previous:
        return []
    checks: list[CheckResult] = []
    for key, label in (("rows", "row count"), ("distinct_users", "distinct users"), ("distinct_items", "distinct items")):
        bounds = thresholds.get(f"{key}_ratio")
        if bounds is None or key not in current or key not in previous or not previous[key]:
            continue
        low, high = bounds
        if low is None and high is None:
            continue
        estimated = key != "rows" and (current.get("distinct_estimated") or previous.get("distinct_estimated"))
        if estimated:  # an older profile's estimate: its noise must not trip the bound (3 standard deviations)
            slack = 3 * DISTINCT_RSD
            low = None if low is None else round(low * (1 - slack), 6)
            high = None if high is None else round(high * (1 + slack), 6)
        ratio = current[key] / previous[key]
        ok = (low is None or ratio >= low) and (high is None or ratio <= high)
        checks.append(CheckResult(
            target=target, name=f"drift_{key}", kind=DRIFT, success=ok,
            description=f"{label} stays within {_bounds_text(low, high)} of the previous successful run"
                        + (" (estimated counts: bound widened by 3 standard deviations)" if estimated else ""),
            observed={"now": current[key], "before": previous[key], "ratio": round(ratio, 4)},
            expected={"ratio": [low, high]}))

    checks += _increase_checks(target, current, previous, "null_rate", thresholds.get("null_rate_increase"),
                               lambda col: (f"drift_null_rate_{col}", f"null rate of {col}"))
    checks += _increase_checks(target, current, previous, "rates", thresholds.get("rate_increase"),
                               lambda name: (f"drift_{name}", name.replace("_", " ")))
    if min(current.get("rows") or 0, previous.get("rows") or 0) >= (thresholds.get("top_share_min_rows") or 0):
        checks += _increase_checks(target, current, previous, "top_share", thresholds.get("top_share_increase"),
                                   lambda who: (f"drift_top_{who}_share", f"share of rows on the top {who}"))
    checks += _value_checks(target, current.get("value"), previous.get("value"), thresholds)
    return checks


def _increase_checks(target: str, current: dict, previous: dict, key: str, limit: float | None,
                     names) -> list[CheckResult]:
    """One check per rate in ``current[key]`` that ``previous`` has too: it rises by at most ``limit`` points.
    ``names(rate) -> (check name, label)``."""
    checks = []
    for rate, now in (current.get(key) or {}).items():
        before = (previous.get(key) or {}).get(rate)
        if limit is None or now is None or before is None:
            continue
        name, label = names(rate)
        checks.append(CheckResult(
            target=target, name=name, kind=DRIFT, success=now - before <= limit,
            description=f"{label} rises by at most {limit:.2%} points",
            observed={"now": now, "before": before, "increase": round(now - before, 6)},
            expected={"max_increase": limit}))
    return checks


def _value_checks(target: str, now: dict | None, before: dict | None, thresholds: dict) -> list[CheckResult]:
    if not now or not before or now.get("column") != before.get("column"):
        return []
    col = now["column"]
    checks = []
    limit = thresholds.get("mean_change")
    if limit is not None and now.get("mean") is not None and before.get("mean") is not None:
        change = abs(now["mean"] - before["mean"]) / max(abs(before["mean"]), 1e-12)
        checks.append(CheckResult(
            target=target, name=f"drift_mean_{col}", kind=DRIFT, success=change <= limit,
            description=f"mean {col} changes by at most {limit:.0%}",
            observed={"now": now["mean"], "before": before["mean"], "relative_change": round(change, 4)},
            expected={"max_relative_change": limit}))
    limit = thresholds.get("quantile_shift")
    q_now, q_before = now.get("quantiles"), before.get("quantiles")
    if limit is not None and q_now and q_before and None not in q_now.values() and None not in q_before.values():
        spread = q_before["p90"] - q_before["p10"]
        scale = spread if spread > 0 else max(abs(q_before["p50"]), 1e-12)
        shifts = {k: abs(q_now[k] - q_before[k]) / scale for k in q_before if k in q_now}
        worst = max(shifts, key=shifts.get)
        checks.append(CheckResult(
            target=target, name=f"drift_quantiles_{col}", kind=DRIFT, success=shifts[worst] <= limit,
            description=f"{col} quantiles (p10..p90) move by at most {limit:.0%} of the previous p10-p90 spread",
            observed={"largest_shift": round(shifts[worst], 4), "at": worst, "now": q_now, "before": q_before},
            expected={"max_shift": limit}))
    return checks


def _bounds_text(low, high) -> str:
    if low is not None and high is not None:
        return f"[{low:g}x, {high:g}x]"
    return f">= {low:g}x" if low is not None else f"<= {high:g}x"


def _float(value) -> float | None:
    return None if value is None else float(value)
