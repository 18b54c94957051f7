"""Minimum-support filter (k-core) on (user, item) pairs: keep users with >= k_u items and items with >= k_i users.

Dropping a sparse user can push an item below its threshold and the other way round, so the filter repeats until
nothing changes (a fixed point: every remaining user and item meets its threshold) or ``max_iter`` rounds pass.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from transforms import columns as C


class KCoreNotConverged(RuntimeError):
    """The filter still removed rows in its last allowed round; the result would not meet the thresholds."""


@dataclass(frozen=True)
class KCoreResult:
    rows_before: int
    rows_after: int
    iterations: int


def k_core(pairs: DataFrame, *, min_user_items: int = 1, min_item_users: int = 1, max_iter: int = 20,
           user_col: str = C.USER_ID, item_col: str = C.ITEM_ID) -> tuple[DataFrame, KCoreResult]:
    """(filtered pairs, stats). ``pairs`` has one row per (user, item). Thresholds of 1 keep everything.

    Each round is materialised (localCheckpoint) so the plan does not grow with the rounds. Raises
    KCoreNotConverged when rows are still being removed after ``max_iter`` rounds.
    """
    if min_user_items < 1 or min_item_users < 1:
        raise ValueError(f"support thresholds must be >= 1, got users {min_user_items}, items {min_item_users}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    current = pairs.localCheckpoint(eager=True)
    before = current.count()
    if min_user_items == 1 and min_item_users == 1:
        return current, KCoreResult(before, before, 0)
    rows = before
    for iteration in range(1, max_iter + 1):
        users = current.groupBy(user_col).count().where(F.col("count") >= min_user_items).select(user_col)
        items = current.groupBy(item_col).count().where(F.col("count") >= min_item_users).select(item_col)
        current = (current.join(users, on=user_col, how="left_semi").join(items, on=item_col, how="left_semi")
                   .localCheckpoint(eager=True))
        kept = current.count()
        if kept == rows:
            return current, KCoreResult(before, kept, iteration)
        rows = kept
    raise KCoreNotConverged(
        f"k-core (users >= {min_user_items} items, items >= {min_item_users} users) still removed rows in round "
        f"{max_iter} ({rows:,} of {before:,} left); raise --kcore-max-iter")
