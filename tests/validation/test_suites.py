"""Each suite on crafted bad data: the gate fails and names exactly the expectations the data breaks.

(The same suites passing on good data, produced by the real jobs, is test_flow.py's first test.) Each frame
holds several defects at once, each breaking one expectation, so one Spark validation covers a whole suite.
"""
from __future__ import annotations

import datetime as dt

import pytest

from transforms import columns as C
from transforms import parse
from validation import suites
from validation.drift import ProfileSpec
from validation.gate import Target, evaluate
from validation.runner import GxRunner

T = dt.datetime(2024, 5, 1, 12, 0)
LATEST = dt.datetime(2025, 1, 1)
FUTURE = dt.datetime(2031, 1, 1)


def failed(result) -> set[tuple[str, str]]:
    return {(c.target, c.description) for c in result.failures}


def check(result, target: str, description: str):
    return next(c for c in result.checks if c.target == target and c.description == description)


@pytest.fixture
def runner():
    return GxRunner(examples=3)


def test_ingest_run_suite_names_unaccounted_lines_and_too_many_quarantined(spark, runner):
    run = spark.createDataFrame([("r1", "failed: rows not accounted for", 100, 1, 80, 5, 10)],
                                "ingest_run_id string, status string, read long, headers long, loaded long, "
                                "duplicates long, quarantined long")
    quarantined = spark.createDataFrame([("x,y", "file:/in.csv", parse.BAD_RATING), (None, "file:/in.csv", "mystery")],
                                        f"{C.RAW} string, {C.SOURCE_FILE} string, {C.REASON} string")
    targets = [Target("raw_input", suites.ingest_run_frame(run), source="crafted",
                      expectations=suites.ingest_run_suite(max_quarantine_rate=0.05),
                      profile=ProfileSpec(rows_col="read", ratios={"quarantine_rate": ("quarantined", "read")})),
               Target("quarantined_lines", quarantined, source="crafted",
                      expectations=suites.quarantined_lines_suite(known_reasons=list(parse.REASONS)))]
    result = evaluate("raw", targets, runner=runner)
    assert failed(result) == {
        ("raw_input", "the ingest run finished ok"),
        ("raw_input", "every line is accounted for: read = headers + loaded + duplicates + quarantined"),
        ("raw_input", "at most 5.00% of the lines are quarantined"),
        ("quarantined_lines", "raw is never null"),
        ("quarantined_lines", "every rejected line carries a known reason code"),
    }
    assert result.metrics["raw_input"] == {"rows": 100, "rates": {"quarantine_rate": 0.1}}
    assert check(result, "quarantined_lines", "every rejected line carries a known reason code").examples == [
        {C.RAW: None, C.SOURCE_FILE: "file:/in.csv", C.REASON: "mystery"}]


def test_raw_suite_names_unknown_reasons_and_too_many_quarantined_lines(spark, runner):
    reasons = [None] * 6 + [parse.HEADER, parse.BAD_RATING, parse.FUTURE_TIMESTAMP, "mystery_reason"]
    parsed = spark.createDataFrame([(r, f"line {i}") for i, r in enumerate(reasons)], f"{C.REASON} string, {C.RAW} string")
    target = Target("raw_lines", suites.raw_lines_frame(parsed), source="crafted",
                    expectations=suites.raw_suite(known_reasons=[parse.HEADER, parse.BAD_RATING, parse.FUTURE_TIMESTAMP],
                                                  max_quarantine_rate=0.2),
                    examples_frame=suites.raw_lines_frame(parsed, keep=(C.RAW,)), cache=True)
    result = evaluate("raw", [target], runner=runner)
    assert not result.success
    assert failed(result) == {("raw_lines", "every rejected line carries a known reason code"),
                              ("raw_lines", "at most 20.00% of the lines are quarantined")}
    quarantined = check(result, "raw_lines", "at most 20.00% of the lines are quarantined")
    assert quarantined.observed["unexpected_count"] == 3 and quarantined.observed["element_count"] == 10
    assert {e[C.RAW] for e in quarantined.examples} <= {"line 7", "line 8", "line 9"}  # the bad lines, with text
    unknown = check(result, "raw_lines", "every rejected line carries a known reason code")
    assert unknown.examples[0][C.REASON] == "mystery_reason"


def test_silver_suite_names_each_broken_expectation(spark, runner):
    def event(eid, user="u1", item="i1", etype="rating", value=4.0, ts=T):
        return (eid, user, item, etype, value, ts, ts.strftime("%Y-%m"))

    rows = [event("e1"), event("e2", item="i2"), event("e3", value=3.5),
            event("e3", item="i9"),                  # duplicate event key
            event("e4", user=None),                  # user_id missing
            event("e5", value=99.0),                 # rating off the 0.5-5 scale
            event("e6", ts=FUTURE),                  # from the future
            event("e7", etype="teleport", value=None),  # unknown event type
            event("e8", etype="view", value=-3.0)]      # a negative quantity
    events = spark.createDataFrame(rows, f"{C.EVENT_ID} string, {C.USER_ID} string, {C.ITEM_ID} string, "
                                         f"{C.EVENT_TYPE} string, {C.VALUE} double, {C.EVENT_TS} timestamp, "
                                         f"{C.EVENT_MONTH} string")
    target = Target("silver_interactions", suites.silver_frame(events), source="crafted",
                    expectations=suites.silver_suite(rating_min=0.5, rating_max=5.0, latest_ts=LATEST,
                                                     event_types=["rating", "view"]),
                    profile=ProfileSpec(user_col=C.USER_ID, item_col=C.ITEM_ID, value_col=suites.RATING_VALUE))
    result = evaluate("silver", [target], runner=runner)
    assert failed(result) == {
        ("silver_interactions", "event_id is unique (the event key: re-ingesting the same events must add nothing)"),
        ("silver_interactions", "user_id is never null"),
        ("silver_interactions", "ratings are within the scale [0.5, 5]"),
        ("silver_interactions", "event_ts is not in the future (at most 2025-01-01 00:00 UTC) nor before 1970"),
        ("silver_interactions", "event_type is one of rating, view"),
        ("silver_interactions", "values of other events are within [0, 1e+06]"),
    }
    duplicated = check(result, "silver_interactions",
                       "event_id is unique (the event key: re-ingesting the same events must add nothing)")
    assert duplicated.observed == 2  # both rows of event e3, and no other row
    assert sorted((e[C.EVENT_ID], e[C.ITEM_ID], e["copies"]) for e in duplicated.examples) == [
        ("e3", "i1", 2), ("e3", "i9", 2)]
    scale = check(result, "silver_interactions", "ratings are within the scale [0.5, 5]")
    assert scale.observed["unexpected_count"] == 1
    assert [(e[C.EVENT_ID], e[C.VALUE]) for e in scale.examples] == [("e5", 99.0)]  # the whole bad row
    assert result.targets["silver_interactions"]["rows"] == len(rows)
    assert "FAILED silver_interactions: user_id is never null" in result.describe()


def test_training_suite_checks_weights_pairs_and_one_to_one_id_maps(spark, runner):
    users = spark.createDataFrame([("u1", 0), ("u2", 1), ("u3", 1)], f"{C.USER_ID} string, {C.USER_IDX} int")
    items = spark.createDataFrame([("i1", 0), ("i2", 1)], f"{C.ITEM_ID} string, {C.ITEM_IDX} int")
    users.createOrReplaceTempView("t_users")
    items.createOrReplaceTempView("t_items")
    rows = [("u1", "i1", 0, 0, 2.0, 1, T), ("u1", "i2", 0, 1, 1.0, 2, T),
            ("u2", "i1", 1, 0, -1.0, 1, T),     # a negative weight
            ("u2", "i1", 1, 0, 3.0, 1, T),      # the pair again
            ("u3", "i2", 7, 1, 1.0, 1, T)]      # u3's index disagrees with the map
    training = spark.createDataFrame(rows, f"{C.USER_ID} string, {C.ITEM_ID} string, {C.USER_IDX} int, "
                                           f"{C.ITEM_IDX} int, {C.WEIGHT} double, {C.N_EVENTS} long, "
                                           f"{C.LAST_EVENT_TS} timestamp")
    targets = [
        Target("gold_training", training, source="crafted",
               expectations=suites.training_suite(value_col=C.WEIGHT, rating_min=0.5, rating_max=5.0,
                                                  latest_ts=LATEST, user_map_view="t_users", item_map_view="t_items")),
        Target("user_ids", users, source="crafted", expectations=suites.id_map_suite(id_col=C.USER_ID, idx_col=C.USER_IDX)),
    ]
    result = evaluate("training", targets, runner=runner)
    assert failed(result) == {
        ("gold_training", "one row per (user, item)"),
        ("gold_training", "weights are positive finite numbers"),
        ("gold_training", "every user_id has the user_idx its id map gives it"),
        ("user_ids", "user_idx is unique (the map is one-to-one)"),
    }
    mismatch = check(result, "gold_training", "every user_id has the user_idx its id map gives it")
    assert mismatch.observed == 1 and mismatch.examples == [{C.USER_ID: "u3", C.USER_IDX: 7, f"map_{C.USER_IDX}": 1}]


def test_recommendations_suite_checks_lists_order_and_seen_items(spark, runner):
    spark.createDataFrame([("u1", "i1"), ("u2", "i1"), ("u3", "i1"), ("u4", "i1"), ("u9", "i1")],
                          f"{C.USER_ID} string, {C.ITEM_ID} string").createOrReplaceTempView("t_seen")
    rows = [("v", "u1", 1, "i2", 0.9), ("v", "u1", 2, "i3", 0.5), ("v", "u1", 3, "i4", 0.1),
            ("v", "u2", 1, "i2", 0.9), ("v", "u2", 2, "i3", 0.8),                              # one item short
            ("v", "u3", 1, "i2", 0.2), ("v", "u3", 2, "i3", 0.7), ("v", "u3", 3, "i4", 0.1),  # 0.2 then 0.7
            ("v", "u4", 1, "i1", 0.9), ("v", "u4", 2, "i3", 0.5), ("v", "u4", 3, "i4", float("nan"))]  # seen i1, NaN
    recs = spark.createDataFrame(rows, f"{C.MODEL_VERSION} string, {C.USER_ID} string, {C.RANK} int, "
                                       f"{C.ITEM_ID} string, {C.SCORE} float")
    popular = spark.createDataFrame([(1, "i2", 5.0), (2, "i2", 4.0)], f"{C.RANK} int, {C.ITEM_ID} string, {C.SCORE} double")
    targets = [Target("user_recommendations", recs, source="crafted",
                      expectations=suites.recommendations_suite(n=3, seen_view="t_seen")),
               Target("popular_items", popular, source="crafted", expectations=suites.popular_items_suite())]
    result = evaluate("recommendations", targets, runner=runner)
    assert failed(result) == {
        ("user_recommendations", "every scored user has exactly 3 recommendations"),
        ("user_recommendations", "scores never increase with rank"),
        ("user_recommendations", "no user is recommended an item they have already seen"),
        ("user_recommendations", "scores are finite (no NaN, no infinity)"),
        ("user_recommendations", "every user of the training table is scored"),
        ("popular_items", "item_id is unique (no item twice in the fallback)"),
    }
    short = check(result, "user_recommendations", "every scored user has exactly 3 recommendations")
    assert short.observed == 1 and short.examples == [{C.USER_ID: "u2", "rows": 2}]
    unscored = check(result, "user_recommendations", "every user of the training table is scored")
    assert unscored.examples == [{C.USER_ID: "u9"}]


def test_snapshot_suite_checks_each_list(spark, runner):
    rows = [("u1", ["a", "b", "c"], [0.9, 0.5, 0.1]),
            ("u2", ["a", "a", "c"], [0.9, 0.5, 0.1]),     # item twice
            ("u3", ["a", "b", "c"], [0.1, 0.5, 0.9]),     # ascending
            ("u4", ["a", "b"], [0.9, 0.5])]               # short list
    lists = spark.createDataFrame(rows, f"{C.USER_ID} string, item_ids array<string>, scores array<float>")
    target = Target("snapshot_user_recommendations", suites.snapshot_lists_frame(lists), source="crafted",
                    expectations=suites.snapshot_lists_suite(n=3, rows=5))
    result = evaluate("snapshot", [target], runner=runner)
    assert failed(result) == {
        ("snapshot_user_recommendations", "5 users, as the manifest says"),
        ("snapshot_user_recommendations", "every user has exactly 3 items"),
        ("snapshot_user_recommendations", "no item twice in a list"),
        ("snapshot_user_recommendations", "scores are in descending order"),
    }
    assert check(result, "snapshot_user_recommendations", "5 users, as the manifest says").observed == 4
    repeated = check(result, "snapshot_user_recommendations", "no item twice in a list")
    assert [e[C.USER_ID] for e in repeated.examples] == ["u2"]
