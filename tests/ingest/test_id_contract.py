"""Ingest and build_training keep the id contract (serving.ids) exactly as the service does; what ingest accepts, the
service serves.

Property-based (hypothesis): generated raw ids go through ingest's own parser (transforms.parse on JSON lines, which
can carry any character) and build_training's filter (transforms.id_rules.valid_stored_id), and are compared with the
service-side functions. Then one small lake: the ids of issue 31 are quarantined with their reasons, silver rows
from before the contract are left out of training, and the published snapshot loads in the service's loader.
"""
from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from flow.ingest import IngestOptions, ingest, input_format
from flow.nightly import NightlyOptions, nightly
from flow.score import ScoreOptions
from flow.train import TrainOptions
from flow.training_table import TrainingTableOptions, build_training
from jobs.cli import add_ingest_options_args, ingest_options_from_args
from lake import tables
from lake.registry import Lake
from models.als import AlsParams
from serving import ids
from serving.api import answer, parse_json_data
from serving.lookup import load_snapshot
from tests.support.id_strategies import raw_ids
from tests.support.serving import write_snapshot
from transforms import columns as C
from transforms import id_rules, parse

NOW_S = 1_800_000_000
TS = "2024-01-01T10:00:00Z"
SPARK_SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SIDES = {"user_id": (parse.MISSING_USER_ID, parse.USER_ID_TOO_LONG, parse.USER_ID_INVALID),
         "item_id": (parse.MISSING_ITEM_ID, parse.ITEM_ID_TOO_LONG, parse.ITEM_ID_INVALID)}


def service_verdict(raw: str, side: str) -> tuple[str | None, str | None]:
    """(the reason ingest must give, the id it must store) by the service-side contract (serving.ids)."""
    normal = ids.normalise_id(raw)
    problem = ids.id_problem(normal)
    missing, too_long, invalid = SIDES[side]
    reason = {None: None, ids.EMPTY: missing, ids.TOO_LONG: too_long, ids.INVALID: invalid}[problem]
    return reason, normal if problem is None else None


def ingest_verdicts(spark, raws: list[str]) -> dict[tuple[str, int], tuple[str | None, str | None]]:
    """(side, index) -> (reason, stored id) from ingest's parser: each raw id once as a user, once as an item."""
    lines = []
    for i, raw in enumerate(raws):
        for side in SIDES:
            fields = {"user_id": "u1", "item_id": "i1", "event_type": "view", "event_ts": TS, side: raw}
            lines.append((json.dumps(fields), "f", side, i))
    df = spark.createDataFrame(lines, f"{C.RAW} string, {C.SOURCE_FILE} string, side string, pos int")
    parsed = parse.parse_lines(df, parse.get_format("events-json"), max_event_ts_seconds=NOW_S)
    return {(r["side"], r["pos"]): (r[C.REASON], r[r["side"]] if r[C.REASON] is None else None)
            for r in parsed.select("side", "pos", C.REASON, C.USER_ID, C.ITEM_ID).collect()}


def stored_validity(spark, values: list[str]) -> list[bool]:
    """build_training's check (id_rules.valid_stored_id) of each value, in order."""
    df = spark.createDataFrame(list(enumerate(values)), "pos int, v string")
    rows = df.select("pos", id_rules.valid_stored_id(F.col("v")).alias("ok")).orderBy("pos").collect()
    return [r["ok"] for r in rows]


def serves(raws_by_stored: dict[str, list[str]], root) -> None:
    """Publish-shaped snapshot of the stored ids (as users and as items); it loads, and each spelling finds them."""
    stored = sorted(raws_by_stored)
    write_snapshot(root, model_version="v", n=1, user_recommendations={s: [("i-0", 1.0)] for s in stored},
                   popular_items=[("i-0", 1.0), ("i-1", 0.5)], similar_items={s: [("i-1", 1.0)] for s in stored})
    snapshot = load_snapshot(root)
    for normal, spellings in raws_by_stored.items():
        for raw in [normal, *spellings]:
            if len(raw) <= ids.MAX_ID_CHARS:  # the service's limit applies to the id as sent
                assert answer(parse_json_data({"user_id": raw}, n=1), snapshot)["source"] == "personal", raw
                assert answer(parse_json_data({"item_id": raw}, n=1), snapshot)["source"] == "similar", raw


@SPARK_SETTINGS
@given(st.lists(raw_ids(), min_size=1, max_size=40))
def test_ingest_accepts_exactly_what_the_service_accepts(spark, tmp_path_factory, raws):
    """Over characters assigned in the service's Unicode version: same reason, same stored id, both sides; and the
    service finds every accepted id under the spelling the log used."""
    got = ingest_verdicts(spark, raws)
    accepted: dict[str, list[str]] = {}
    for i, raw in enumerate(raws):
        for side in SIDES:
            assert got[(side, i)] == service_verdict(raw, side), (side, raw)
        reason, stored = got[("user_id", i)]
        if reason is None:
            accepted.setdefault(stored, []).append(raw)
    normals = [ids.normalise_id(r) for r in raws]
    assert stored_validity(spark, raws + normals) == [ids.valid_id(v) for v in raws + normals]
    if accepted:
        serves(accepted, tmp_path_factory.mktemp("served"))


@SPARK_SETTINGS
@given(st.lists(raw_ids(assigned_only=False), min_size=1, max_size=40))
def test_whatever_ingest_accepts_the_service_serves(spark, tmp_path_factory, raws):
    """Over every code point (ICU in the JVM may know characters Python's unicodedata does not): every id ingest
    stores or build_training keeps is valid_id, the snapshot of them loads, and each is served as stored."""
    got = ingest_verdicts(spark, raws)
    stored = {s for reason, s in got.values() if reason is None}
    assert all(ids.valid_id(s) for s in stored)
    normals = [ids.normalise_id(r) for r in raws]
    kept = [v for v, ok in zip(raws + normals, stored_validity(spark, raws + normals)) if ok]
    assert all(ids.valid_id(v) for v in kept)
    if stored | set(kept):
        serves({s: [] for s in stored | set(kept)}, tmp_path_factory.mktemp("served"))


RATING_CASES = [
    ("u1::e\u0301::4::978300760", None, "\u00e9"),
    (" u1 ::i1::4::978300760", None, "i1"),
    ("u8\x00::i1::4::978300760", parse.USER_ID_INVALID, None),
    ("u" + "x" * 10_000 + "::i1::4::978300760", parse.USER_ID_TOO_LONG, None),
    ("u1::i\u202e1::4::978300760", parse.ITEM_ID_INVALID, None),
    ("u1::" + "i" * 257 + "::4::978300760", parse.ITEM_ID_TOO_LONG, None),
    ("u1::i1::4::0", None, "i1"),  # rating dumps keep their own rule: any time from 1970 on
]


def test_rating_files_follow_the_same_id_contract(spark):
    df = spark.createDataFrame([(line, "f") for line, _, _ in RATING_CASES], f"{C.RAW} string, {C.SOURCE_FILE} string")
    rows = {r[C.RAW]: r for r in parse.parse_lines(df, parse.get_format("movielens"),
                                                    max_event_ts_seconds=NOW_S).collect()}
    for line, reason, item in RATING_CASES:
        assert (rows[line][C.REASON], rows[line][C.ITEM_ID]) == (reason, item), line[:40]


def test_the_timestamp_floor_is_an_ingest_option_and_a_flag(spark):
    import argparse

    parser = argparse.ArgumentParser()
    add_ingest_options_args(parser)
    assert ingest_options_from_args(parser.parse_args([])).min_event_date is None
    options = ingest_options_from_args(parser.parse_args(["--min-event-date", "1960-01-01"]))
    assert options == IngestOptions(min_event_date="1960-01-01")
    with pytest.raises(ValueError, match="min_event_date must be a date YYYY-MM-DD, got '1995'"):
        input_format("events", IngestOptions(min_event_date="1995"))
    assert parse.timestamp_floor_seconds(parse.get_format("events")) == 788_918_400  # 1995-01-01 UTC
    assert parse.timestamp_floor_seconds(parse.get_format("movielens")) is None
    lines = ["u1,i1,view,0,,", "u1,i1,view,-86400,,", "u1,i1,view,1994-12-31T23:59:59Z,,", "u1,i1,view,788918400,,"]
    df = spark.createDataFrame([(line, "f") for line in lines], f"{C.RAW} string, {C.SOURCE_FILE} string")
    fmt = parse.get_format("events")
    reasons = {r[C.RAW]: r[C.REASON] for r in parse.parse_lines(df, fmt, max_event_ts_seconds=NOW_S).collect()}
    assert reasons == {lines[0]: parse.TIMESTAMP_BEFORE_FLOOR, lines[1]: parse.BAD_TIMESTAMP,
                       lines[2]: parse.TIMESTAMP_BEFORE_FLOOR, lines[3]: None}
    earlier = parse.parse_lines(df, fmt, max_event_ts_seconds=NOW_S, min_event_date="1960-01-01")
    assert {r[C.RAW]: r[C.REASON] for r in earlier.collect()}[lines[0]] is None


# -- one small lake: ingest -> silver (plus rows from before the contract) -> build_training -> ... -> snapshot --------
# (slow: the nightly steps from silver, as the other end-to-end tests)

LONG_USER = "u" + "x" * 10_000  # 10,001 characters
BAD_LINES = {
    f"{LONG_USER},i1,view,{TS},,": parse.USER_ID_TOO_LONG,
    f"u8\x00,i1,view,{TS},,": parse.USER_ID_INVALID,
    f"u1,i\x01,view,{TS},,": parse.ITEM_ID_INVALID,
    "u2,i2,view,0,,": parse.TIMESTAMP_BEFORE_FLOOR,  # epoch 0
    "u3,i3,view,-86400,,": parse.BAD_TIMESTAMP,
}
LEGACY_IDS = ["u9\x00", "v" * 300, " u10", "e\u0301"]  # silver rows written before ingest kept the contract


def good_lines() -> list[str]:
    start = dt.datetime(2024, 1, 1, 8)
    lines = []
    for u in range(1, 9):
        for i in range(1, 7):
            if (u + i) % 3:
                when = (start + dt.timedelta(hours=u * 7 + i)).strftime("%Y-%m-%dT%H:%M:%SZ")
                lines.append(f"u{u},i{i},{'click' if (u * i) % 2 else 'view'},{when},,")
    return lines


@pytest.fixture(scope="module")
def lake_run(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("id-contract")
    log = base / "events.csv"
    log.write_text("\n".join(good_lines() + list(BAD_LINES)) + "\n", encoding="utf-8")
    lake = Lake(str(base / "lake"))
    ingested = ingest(spark, lake, str(log), "events", IngestOptions())
    silver = tables.read(spark, lake.silver)
    template = silver.where(F.col(C.USER_ID) == "u1").limit(1)
    legacy = [template.withColumn(C.USER_ID, F.lit(bad)).withColumn(C.EVENT_ID, F.sha2(F.lit(bad), 256))
              for bad in LEGACY_IDS]
    for frame in legacy:
        frame.write.format("delta").mode("append").save(lake.silver)
    options = NightlyOptions(input=None, gates=False,
                             train=TrainOptions(als=AlsParams(rank=2, max_iter=2), model_version="ids-v1",
                                                evaluate=False),
                             score=ScoreOptions(n=3, recent_days=0, similar="none"))
    results = nightly(spark, lake, options)
    return {"lake": lake, "ingest": ingested, "results": results, "snapshots": base / "lake" / "snapshots"}


@pytest.mark.slow
def test_ingest_quarantines_the_ids_and_times_the_service_cannot_use(spark, lake_run):
    """Issue 31: a 10,001-character user id and ``u8\\x00`` were loaded into silver, and so were epoch-0 times."""
    summary = lake_run["ingest"]
    expected = {}
    for reason in BAD_LINES.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert summary["quarantined_by_reason"] == expected
    assert summary["loaded"] == len(good_lines())
    quarantined = {r[C.RAW]: r[C.REASON] for r in tables.read(spark, lake_run["lake"].quarantine).collect()}
    assert quarantined == BAD_LINES
    users = {r[C.USER_ID] for r in tables.read(spark, lake_run["lake"].silver).collect()}
    assert LONG_USER not in users and "u8\x00" not in users


@pytest.mark.slow
def test_training_leaves_out_silver_rows_whose_ids_break_the_contract(lake_run):
    summary = lake_run["results"]["build_training"]
    assert summary["refused_ids"] == {"pairs": len(LEGACY_IDS), "events": len(LEGACY_IDS)}
    assert summary["users"] == 8


@pytest.mark.slow
def test_the_published_snapshot_is_served(lake_run):
    snapshot = load_snapshot(lake_run["snapshots"])
    assert snapshot.model_version == "ids-v1" and snapshot.user_count == 8
    assert all(ids.valid_id(key.decode("utf-8")) for key in snapshot.users.keys.tolist())
    assert answer(parse_json_data({"user_id": " u1\t", "k": 1}, n=snapshot.n), snapshot)["source"] == "personal"


@pytest.mark.slow
def test_training_with_a_minimum_support_leaves_them_out_first(spark, lake_run):
    first = lake_run["results"]["build_training"]
    summary = build_training(spark, lake_run["lake"], TrainingTableOptions(min_user_items=2, min_item_users=2))
    assert summary["refused_ids"] == first["refused_ids"]
    assert summary["min_support"]["rows_before"] == first["rows"] and 0 < summary["rows"] <= first["rows"]
