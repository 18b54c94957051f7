"""transforms.training.recent_popular_items: the popular list over the last days of the data."""
from __future__ import annotations

import datetime as dt

import pytest

from transforms import columns as C
from transforms.training import popular_items, recent_popular_items


def test_recent_window_counts_only_pairs_seen_lately(spark):
    newest = dt.datetime(2026, 3, 31, 12)
    old = newest - dt.timedelta(days=90)
    rows = [(f"u{u}", "old-hit", 1, old) for u in range(5)]  # popular overall, not lately
    rows += [(f"u{u}", "new-hit", 1, newest - dt.timedelta(days=u)) for u in range(3)]
    rows += [("u9", "edge", 1, newest - dt.timedelta(days=7)), ("u8", "edge", 1, newest - dt.timedelta(days=7, seconds=1))]
    training = spark.createDataFrame(rows, f"{C.USER_ID} string, {C.ITEM_ID} string, {C.N_EVENTS} long, {C.LAST_EVENT_TS} timestamp")
    overall = [r[C.ITEM_ID] for r in popular_items(training, n=3).orderBy(C.RANK).collect()]
    recent = [(r[C.ITEM_ID], r[C.SCORE]) for r in recent_popular_items(training, n=3, days=7).orderBy(C.RANK).collect()]
    assert overall[0] == "old-hit"
    assert recent == [("new-hit", 3.0), ("edge", 1.0)]  # the window is [newest - 7 days, newest]
    later = [r[C.ITEM_ID] for r in recent_popular_items(training, n=3, days=7, as_of_ts="2026-01-05 00:00:00").collect()]
    assert later == ["old-hit"]
    with pytest.raises(ValueError, match="days must be positive"):
        recent_popular_items(training, n=3, days=0)
