"""transforms.splits: deterministic for a seed, no train/test overlap, few-interaction users handled explicitly."""
from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from transforms import columns as C
from transforms import splits

# 12 users with 1..12 pairs each (user u has u + 1 items), timestamps increasing with the item.
ROWS = [(u, i, 1.0 + (u + i) % 5, dt.datetime(2024, 1, 1) + dt.timedelta(days=i + u % 3))
        for u in range(12) for i in range(u + 1)]
SCHEMA = f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.WEIGHT} double, {C.LAST_EVENT_TS} timestamp"


@pytest.fixture(scope="module")
def pairs(spark):
    return spark.createDataFrame(ROWS, SCHEMA).cache()


def rows(df):
    return sorted((r[C.USER_IDX], r[C.ITEM_IDX]) for r in df.select(C.USER_IDX, C.ITEM_IDX).collect())


def test_user_random_split_is_deterministic_disjoint_and_complete(pairs):
    a = splits.user_random_split(pairs, test_fraction=0.25, seed=42)
    b = splits.user_random_split(pairs.repartition(3), test_fraction=0.25, seed=42)  # other partitioning
    train, test = rows(a.train), rows(a.test)
    assert (train, test) == (rows(b.train), rows(b.test))
    assert not set(train) & set(test)
    assert sorted(train + test) == sorted((u, i) for u, i, _, _ in ROWS)
    per_user = {u: sum(1 for uu, _ in test if uu == u) for u in range(12)}
    # user with n pairs: 0 test pairs when n < 2, else max(1, floor(n / 4)) capped at n - 1
    assert per_user == {u: 0 if u + 1 < 2 else max(1, (u + 1) // 4) for u in range(12)}
    assert a.stats["train_only_users"] == 1 and a.stats["test_users"] == 11
    c = splits.user_random_split(pairs, test_fraction=0.25, seed=7)
    assert rows(c.test) != test  # another seed, another split


def test_min_interactions_keeps_light_users_in_train(pairs):
    s = splits.user_random_split(pairs, test_fraction=0.5, seed=1, min_interactions=5)
    assert {u for u, _ in rows(s.test)} == set(range(4, 12))
    assert s.stats["train_only_users"] == 4


def test_user_chronological_split_takes_each_users_latest(pairs):
    s = splits.user_chronological_split(pairs, last_n=2, min_interactions=3)
    test = rows(s.test)
    for u in range(2, 12):
        assert [i for uu, i in test if uu == u] == [u - 1, u]  # the two latest items
    assert not [1 for uu, _ in test if uu < 2]
    assert not set(rows(s.train)) & set(test)


def test_global_time_cut_has_no_look_ahead_and_drops_cold_users(pairs):
    cut = "2024-01-08 00:00:00"
    s = splits.global_time_split(pairs, cut_ts=cut)
    assert s.train.where(F.col(C.LAST_EVENT_TS) >= cut).count() == 0
    assert s.test.where(F.col(C.LAST_EVENT_TS) < cut).count() == 0
    train_users = {u for u, _ in rows(s.train)}
    assert {u for u, _ in rows(s.test)} <= train_users
    all_after = pairs.where(F.col(C.LAST_EVENT_TS) >= cut).count()
    assert s.stats["test_rows"] + s.stats["cold_test_rows"] == all_after


def test_folds_partition_each_users_pairs(pairs):
    assigned, stats = splits.assign_user_folds(pairs, folds=3, seed=5)
    got = {(r[C.USER_IDX], r[C.ITEM_IDX]): r[splits.FOLD] for r in assigned.collect()}
    assert len(got) == len(ROWS)
    for u in range(12):
        folds = [f for (uu, _), f in got.items() if uu == u]
        if u + 1 < 3:
            assert set(folds) == {-1}  # too few pairs: always trained on, never tested
        else:
            counts = [folds.count(f) for f in range(3)]
            assert max(counts) - min(counts) <= 1
    assert stats["train_only_users"] == 2
    again, _ = splits.assign_user_folds(pairs.repartition(2), folds=3, seed=5)
    assert {(r[C.USER_IDX], r[C.ITEM_IDX]): r[splits.FOLD] for r in again.collect()} == got
    one = splits.fold_split(assigned, 0)
    assert not set(rows(one.train)) & set(rows(one.test))
    assert one.stats["train_rows"] + one.stats["test_rows"] == len(ROWS)


def test_bad_arguments_are_rejected(pairs):
    with pytest.raises(ValueError, match="test_fraction"):
        splits.user_random_split(pairs, test_fraction=1.0, seed=1)
    with pytest.raises(ValueError, match="columns"):
        splits.user_random_split(pairs.drop(C.ITEM_IDX), test_fraction=0.2, seed=1)
    with pytest.raises(ValueError, match="folds"):
        splits.assign_user_folds(pairs, folds=1, seed=1)
