"""The outlier policy and the minimum-support (k-core) filter on small known inputs."""
from __future__ import annotations

import datetime as dt

import pytest

from transforms import columns as C
from transforms import kcore, outliers, parse

T0 = dt.datetime(2024, 1, 1, 12)


def parsed_frame(spark, rows):
    return spark.createDataFrame(rows, f"{C.RAW} string, {C.USER_ID} string, {C.EVENT_TS} timestamp, {C.REASON} string")


def test_bot_user_days_flags_only_the_busy_user_day(spark):
    rows = [(f"b{i}", "bot", T0, None) for i in range(5)]                     # 5 on day 1: over the limit
    rows += [(f"c{i}", "bot", T0 + dt.timedelta(days=1), None) for i in range(2)]  # same user, quiet day 2
    rows += [(f"h{i}", "human", T0, None) for i in range(3)]
    rows += [(f"x{i}", None, None, parse.BAD_TIMESTAMP) for i in range(9)]   # rejected rows do not count
    parsed = parsed_frame(spark, rows)
    flagged = outliers.bot_user_days(parsed, max_events_per_day=3).collect()
    assert [(r[C.USER_ID], r[C.EVENT_DATE], r[outliers.N_EVENTS_DAY]) for r in flagged] == [("bot", T0.date(), 5)]
    marked = {r[C.RAW]: r[C.REASON] for r in outliers.quarantine_bot_rows(parsed, spark.createDataFrame(flagged)).collect()}
    assert {k for k, v in marked.items() if v == parse.BOT_SUSPECTED} == {f"b{i}" for i in range(5)}
    assert marked["c0"] is None and marked["h0"] is None and marked["x0"] == parse.BAD_TIMESTAMP
    with pytest.raises(ValueError, match="max_events_per_day"):
        outliers.bot_user_days(parsed, max_events_per_day=0)


def pairs(spark, rows):
    return spark.createDataFrame(rows, f"{C.USER_ID} string, {C.ITEM_ID} string")


# a -> {1, 2}, b -> {1, 2}, c -> {1, 3}, d -> {3}: removing d leaves item 3 with one user, which leaves c with one item
CHAIN = [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2"), ("c", "1"), ("c", "3"), ("d", "3")]


def test_k_core_repeats_until_every_user_and_item_has_support(spark):
    kept, stats = kcore.k_core(pairs(spark, CHAIN), min_user_items=2, min_item_users=2)
    assert sorted(map(tuple, kept.select(C.USER_ID, C.ITEM_ID).collect())) == [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2")]
    assert (stats.rows_before, stats.rows_after, stats.iterations) == (7, 4, 4)


def test_k_core_that_has_not_converged_is_an_error(spark):
    with pytest.raises(kcore.KCoreNotConverged, match="round 2"):
        kcore.k_core(pairs(spark, CHAIN), min_user_items=2, min_item_users=2, max_iter=2)


def test_k_core_of_one_keeps_everything(spark):
    kept, stats = kcore.k_core(pairs(spark, CHAIN), min_user_items=1, min_item_users=1)
    assert kept.count() == 7 and stats.iterations == 0
