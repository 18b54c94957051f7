"""Stable id maps and the training-table transforms on small known inputs."""
from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from transforms import columns as C
from transforms import ids, training


def id_frame(spark, values):
    return spark.createDataFrame([(v,) for v in values], f"{C.USER_ID} string")


def test_new_ids_are_dense_and_ordered(spark):
    rows = ids.new_id_rows(None, id_frame(spark, ["b", "a", "c", "a", None]), id_col=C.USER_ID, idx_col=C.USER_IDX)
    assert sorted(map(tuple, rows.collect())) == [("a", 0), ("b", 1), ("c", 2)]


def test_existing_ids_never_change_and_new_ones_are_appended(spark):
    existing = spark.createDataFrame([("z", 0), ("m", 1)], f"{C.USER_ID} string, {C.USER_IDX} int")
    rows = ids.new_id_rows(existing, id_frame(spark, ["a", "m", "z", "b"]), id_col=C.USER_ID, idx_col=C.USER_IDX)
    assert sorted(map(tuple, rows.collect())) == [("a", 2), ("b", 3)]


def test_no_new_ids_gives_an_empty_frame(spark):
    existing = spark.createDataFrame([("a", 0)], f"{C.USER_ID} string, {C.USER_IDX} int")
    rows = ids.new_id_rows(existing, id_frame(spark, ["a"]), id_col=C.USER_ID, idx_col=C.USER_IDX)
    assert rows.count() == 0
    assert rows.schema[C.USER_IDX].dataType.typeName() == "integer"


def test_int32_overflow_is_an_error(spark):
    existing = spark.createDataFrame([("a", ids.INT32_MAX - 1)], f"{C.USER_ID} string, {C.USER_IDX} int")
    with pytest.raises(ids.IdSpaceExhausted, match="int32"):
        ids.new_id_rows(existing, id_frame(spark, ["b", "c"]), id_col=C.USER_ID, idx_col=C.USER_IDX)


def test_attach_idx_names_missing_ids(spark):
    id_map = spark.createDataFrame([("a", 0)], f"{C.USER_ID} string, {C.USER_IDX} int")
    with pytest.raises(KeyError, match="'b'"):
        ids.attach_idx(id_frame(spark, ["a", "b"]), id_map, id_col=C.USER_ID, idx_col=C.USER_IDX)


def events(spark, rows):
    schema = f"{C.USER_ID} string, {C.ITEM_ID} string, {C.EVENT_TYPE} string, {C.VALUE} double, {C.EVENT_TS} timestamp, {C.EVENT_ID} string"
    return spark.createDataFrame(rows, schema)


T0 = dt.datetime(2026, 1, 1)


def test_implicit_weights_sum_event_types_and_use_rating_values(spark):
    df = events(spark, [
        ("u", "i", "view", None, T0, "1"), ("u", "i", "purchase", None, T0, "2"),
        ("u", "j", "rating", 4.5, T0, "3"), ("u", "k", "unknown", None, T0, "4"),
    ])
    out = {r[C.ITEM_ID]: r for r in training.implicit_training(df).collect()}
    assert set(out) == {"i", "j"}
    assert out["i"][C.WEIGHT] == 9.0 and out["i"][C.N_EVENTS] == 2
    assert out["j"][C.WEIGHT] == 4.5


def test_implicit_half_life_halves_old_events_and_min_rating_drops_low_ratings(spark):
    df = events(spark, [
        ("u", "i", "view", None, T0, "1"), ("u", "i", "view", None, T0 - dt.timedelta(days=10), "2"),
        ("u", "j", "rating", 1.0, T0, "3"),
    ])
    out = {r[C.ITEM_ID]: r[C.WEIGHT] for r in training.implicit_training(df, half_life_days=10, min_rating=3).collect()}
    assert out == {"i": pytest.approx(1.5)}


def test_explicit_keeps_the_latest_rating(spark):
    df = events(spark, [
        ("u", "i", "rating", 2.0, T0, "1"), ("u", "i", "rating", 5.0, T0 + dt.timedelta(hours=1), "2"),
        ("u", "i", "view", None, T0 + dt.timedelta(hours=2), "3"),
    ])
    rows = training.explicit_training(df).collect()
    assert [(r[C.ITEM_ID], r[C.RATING], r[C.N_EVENTS]) for r in rows] == [("i", 5.0, 2)]


def test_popular_items_rank_by_distinct_users_then_item_id(spark):
    df = spark.createDataFrame(
        [("u1", "a", 1), ("u2", "a", 1), ("u1", "b", 5), ("u2", "c", 1), ("u3", "c", 1), ("u1", "d", 1)],
        f"{C.USER_ID} string, {C.ITEM_ID} string, {C.N_EVENTS} long")
    rows = training.popular_items(df, n=3).collect()
    assert [(r[C.RANK], r[C.ITEM_ID], r[C.SCORE]) for r in rows] == [(1, "a", 2.0), (2, "c", 2.0), (3, "b", 1.0)]
