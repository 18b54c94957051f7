"""Train/test splits and K-fold assignment for offline evaluation, deterministic for a seed and materialised.

Every split here works on one row per (user, item) (gold/training, or any pair table) so the same pair can
never be in train and in test. Randomness comes from a hash of (seed, user, item), not from ``F.rand``: the
result does not depend on partitioning or on how often the plan is recomputed (apache/spark#25789), and the
returned DataFrames are persisted and counted once, so every later use reads the same rows.

Users with too few interactions are handled explicitly, never silently:

- per-user splits keep users with fewer than ``min_interactions`` pairs entirely in train
  (``stats["train_only_users"]``) and never move a user's last training pair to test;
- the global time cut drops test rows of users (and, optionally, items) that have no training pair
  (``stats["cold_users"]``, ``stats["cold_test_rows"]``): no model can rank for them;
- K-fold assignment gives users with fewer than ``folds`` pairs fold -1: they are in every fold's training set
  and in no test set (``stats["train_only_users"]``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from transforms import columns as C

FOLD = "fold"
_KEY = "_split_key"
_POS = "_split_pos"
_N = "_split_n"
_N_TEST = "_split_n_test"

SPLIT_KINDS = ("user-random", "user-chrono", "time-cut")


@dataclass
class Split:
    """A materialised train/test pair plus counts that say who went where."""

    train: DataFrame
    test: DataFrame
    stats: dict = field(default_factory=dict)

    def unpersist(self) -> None:
        self.train.unpersist()
        self.test.unpersist()


def random_key(seed: int, *cols: str) -> Column:
    """A reproducible pseudo-random long per row: xxhash64 of the seed and the given columns."""
    return F.xxhash64(F.lit(int(seed)), *[F.col(c) for c in cols])


def _check(df: DataFrame, cols: list[str]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"split needs columns {missing}; the DataFrame has {df.columns}")


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")


def _materialise(df: DataFrame) -> tuple[DataFrame, int]:
    df = df.persist(StorageLevel.MEMORY_AND_DISK)
    return df, df.count()


def _per_user_split(df: DataFrame, order: list[Column], *, test_fraction: float | None, last_n: int | None,
                    min_interactions: int, user_col: str) -> Split:
    """Rank each user's rows by ``order``; the first n_test of them go to test, the rest to train.

    n_test = max(1, floor(n * test_fraction)) (or ``last_n``), capped at n - 1 so a user always keeps a training
    pair; users with n < min_interactions get n_test = 0.
    """
    if (test_fraction is None) == (last_n is None):
        raise ValueError("give exactly one of test_fraction and last_n")
    if test_fraction is not None:
        _check_fraction(test_fraction)
        wanted = F.greatest(F.lit(1), F.floor(F.col(_N) * F.lit(float(test_fraction))).cast("int"))
    else:
        if last_n < 1:
            raise ValueError(f"last_n must be >= 1, got {last_n}")
        wanted = F.lit(int(last_n))
    if min_interactions < 2:
        raise ValueError(f"min_interactions must be >= 2 (a user needs a pair to train on and one to test), "
                         f"got {min_interactions}")
    by_user = Window.partitionBy(user_col)
    ranked = (
        df.withColumn(_N, F.count(F.lit(1)).over(by_user))
        .withColumn(_POS, F.row_number().over(by_user.orderBy(*order)))
        .withColumn(_N_TEST, F.when(F.col(_N) < min_interactions, F.lit(0))
                    .otherwise(F.least(wanted, F.col(_N) - 1)))
    )
    labelled, _ = _materialise(ranked.withColumn("_is_test", F.col(_POS) <= F.col(_N_TEST)))
    helper_cols = [_N, _POS, _N_TEST, "_is_test", _KEY]
    keep = [c for c in labelled.columns if c not in helper_cols]
    train, n_train = _materialise(labelled.where(~F.col("_is_test")).select(*keep))
    test, n_test = _materialise(labelled.where(F.col("_is_test")).select(*keep))
    users = labelled.groupBy(user_col).agg(F.max(_N_TEST).alias("n_test")).agg(
        F.count(F.lit(1)).alias("users"), F.sum(F.when(F.col("n_test") == 0, 1).otherwise(0)).alias("train_only")
    ).first()
    labelled.unpersist()
    stats = {
        "train_rows": n_train, "test_rows": n_test, "users": int(users["users"] or 0),
        "test_users": int((users["users"] or 0) - (users["train_only"] or 0)),
        "train_only_users": int(users["train_only"] or 0), "min_interactions": min_interactions,
    }
    return Split(train, test, stats)


def user_random_split(df: DataFrame, *, test_fraction: float, seed: int, min_interactions: int = 2,
                      user_col: str = C.USER_IDX, item_col: str = C.ITEM_IDX) -> Split:
    """Per-user random stratified split: max(1, floor(n * test_fraction)) of each user's pairs go to test.

    Each user keeps at least one training pair; users with fewer than ``min_interactions`` pairs stay in train
    only. Same data and seed: same split, whatever the partitioning.
    """
    _check(df, [user_col, item_col])
    keyed = df.withColumn(_KEY, random_key(seed, user_col, item_col))
    return _per_user_split(keyed, [F.col(_KEY), F.col(item_col)], test_fraction=test_fraction, last_n=None,
                           min_interactions=min_interactions, user_col=user_col)


def user_chronological_split(df: DataFrame, *, test_fraction: float | None = None, last_n: int | None = None,
                             min_interactions: int = 2, ts_col: str = C.LAST_EVENT_TS,
                             user_col: str = C.USER_IDX, item_col: str = C.ITEM_IDX) -> Split:
    """Per-user chronological split: each user's latest pairs (a fraction, or the last ``last_n``) go to test.

    Ties in time are broken by item (descending), so the result is deterministic. Same user rules as
    :func:`user_random_split`.
    """
    _check(df, [user_col, item_col, ts_col])
    return _per_user_split(df, [F.col(ts_col).desc(), F.col(item_col).desc()], test_fraction=test_fraction,
                           last_n=last_n, min_interactions=min_interactions, user_col=user_col)


def global_time_split(df: DataFrame, *, cut_ts: str | None = None, test_fraction: float | None = None,
                      ts_col: str = C.LAST_EVENT_TS, user_col: str = C.USER_IDX, item_col: str = C.ITEM_IDX,
                      drop_cold_items: bool = False) -> Split:
    """Everything before a time cut trains, everything at or after it tests (no look-ahead).

    Give ``cut_ts`` (a timestamp string) or ``test_fraction`` (the cut is the (1 - fraction) quantile of
    ``ts_col``, computed exactly). Test rows of users without a training pair are dropped and counted
    (``cold_users``, ``cold_test_rows``); with ``drop_cold_items`` so are rows of items never seen in training.
    """
    _check(df, [user_col, item_col, ts_col])
    if (cut_ts is None) == (test_fraction is None):
        raise ValueError("give exactly one of cut_ts and test_fraction")
    if test_fraction is not None:
        _check_fraction(test_fraction)
        seconds = df.select(F.unix_micros(F.col(ts_col)).alias("us"))
        # exact quantile: the cut is the smallest timestamp with at most test_fraction of rows at or after it
        total = seconds.count()
        n_test = max(1, int(total * test_fraction))
        cut_us = seconds.orderBy(F.col("us").desc()).limit(n_test).agg(F.min("us")).first()[0]
        cut = F.timestamp_micros(F.lit(cut_us))
        cut_label = df.sparkSession.range(1).select(cut.cast("string")).first()[0]
    else:
        cut = F.lit(cut_ts).cast("timestamp")
        cut_label = cut_ts
    train, n_train = _materialise(df.where(F.col(ts_col) < cut))
    candidates = df.where(F.col(ts_col) >= cut)
    warm = candidates.join(train.select(user_col).distinct(), on=user_col, how="left_semi")
    if drop_cold_items:
        warm = warm.join(train.select(item_col).distinct(), on=item_col, how="left_semi")
    test, n_test_rows = _materialise(warm.select(*df.columns))
    all_test = candidates.agg(F.count(F.lit(1)).alias("rows"), F.countDistinct(user_col).alias("users")).first()
    test_users = test.select(user_col).distinct().count()
    stats = {
        "cut_ts": cut_label, "train_rows": n_train, "test_rows": n_test_rows,
        "users": df.select(user_col).distinct().count(), "test_users": test_users,
        "cold_users": int(all_test["users"]) - test_users,
        "cold_test_rows": int(all_test["rows"]) - n_test_rows, "train_only_users": None,
    }
    return Split(train, test, stats)


def assign_user_folds(df: DataFrame, *, folds: int, seed: int, user_col: str = C.USER_IDX,
                      item_col: str = C.ITEM_IDX) -> tuple[DataFrame, dict]:
    """Add ``fold`` in 0..folds-1: each user's pairs are shuffled (by hash) and dealt round-robin to the folds.

    So every user with at least ``folds`` pairs has a near-equal share in each fold (stratified by user).
    Users with fewer than ``folds`` pairs get fold -1: always trained on, never tested. Returns the
    materialised DataFrame and counts.
    """
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    _check(df, [user_col, item_col])
    by_user = Window.partitionBy(user_col)
    position = F.row_number().over(by_user.orderBy(random_key(seed, user_col, item_col), F.col(item_col))) - 1
    assigned = (
        df.withColumn(_N, F.count(F.lit(1)).over(by_user))
        .withColumn(FOLD, F.when(F.col(_N) < folds, F.lit(-1)).otherwise(position % folds).cast("int"))
        .drop(_N)
    )
    assigned, rows = _materialise(assigned)
    users = assigned.groupBy(user_col).agg(F.max(FOLD).alias("f")).agg(
        F.count(F.lit(1)).alias("users"), F.sum(F.when(F.col("f") < 0, 1).otherwise(0)).alias("train_only")
    ).first()
    stats = {"rows": rows, "folds": folds, "users": int(users["users"] or 0),
             "train_only_users": int(users["train_only"] or 0)}
    return assigned, stats


def fold_split(assigned: DataFrame, fold: int) -> Split:
    """Train on every fold but ``fold`` (and fold -1), test on ``fold``; both materialised, ``fold`` dropped."""
    cols = [c for c in assigned.columns if c != FOLD]
    train, n_train = _materialise(assigned.where(F.col(FOLD) != fold).select(*cols))
    test, n_test = _materialise(assigned.where(F.col(FOLD) == fold).select(*cols))
    return Split(train, test, {"fold": fold, "train_rows": n_train, "test_rows": n_test})


def make_split(df: DataFrame, kind: str, *, test_fraction: float, seed: int, min_interactions: int = 2,
               last_n: int | None = None) -> Split:
    """The split named on the command line: user-random, user-chrono (by last_event_ts) or time-cut."""
    if kind == "user-random":
        return user_random_split(df, test_fraction=test_fraction, seed=seed, min_interactions=min_interactions)
    if kind == "user-chrono":
        if last_n is not None:
            return user_chronological_split(df, last_n=last_n, min_interactions=min_interactions)
        return user_chronological_split(df, test_fraction=test_fraction, min_interactions=min_interactions)
    if kind == "time-cut":
        return global_time_split(df, test_fraction=test_fraction)
    raise ValueError(f"unknown split {kind!r}; known: {SPLIT_KINDS}")
