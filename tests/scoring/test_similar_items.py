"""models.similar: ALS cosine neighbours and Spark co-occurrence neighbours against brute-force references."""
from __future__ import annotations

import datetime as dt
import itertools
import math

import numpy as np
import pytest

from models import similar
from transforms import columns as C


def collected(df) -> dict[int, list]:
    out: dict[int, list] = {}
    for r in sorted(df.collect(), key=lambda r: (r[C.ITEM_IDX], r[C.RANK])):
        out.setdefault(r[C.ITEM_IDX], []).append((r[similar.SIMILAR_ITEM_IDX], r[C.SCORE]))
    return out


def test_als_cosine_neighbours_equal_brute_force_and_skip_the_item_itself(spark):
    rng = np.random.default_rng(2)
    vecs = rng.standard_normal((60, 5)).astype(np.float32)
    vecs[7] = vecs[3] * 4  # same direction as item 3: cosine 1, must be its first neighbour
    vecs[9] = 0.0  # no direction: left out on both sides
    items = spark.createDataFrame([(i, v.tolist()) for i, v in enumerate(vecs)], f"{C.ITEM_IDX} int, {C.FEATURES} array<float>")
    got = collected(similar.similar_items_als(items, n=4))
    wide = vecs.astype(np.float64)
    unit = wide / np.maximum(np.linalg.norm(wide, axis=1, keepdims=True), 1e-300)
    cos = unit @ unit.T
    for i in range(60):
        if i == 9:
            assert i not in got
            continue
        expected = sorted((-cos[i, j], j) for j in range(60) if j not in (i, 9))[:4]
        assert [j for j, _ in got[i]] == [j for _, j in expected], i
        assert [s for _, s in got[i]] == pytest.approx([-s for s, _ in expected], abs=1e-5)
    assert got[3][0][0] == 7 and got[3][0][1] == pytest.approx(1.0, abs=1e-6)


def brute_cooccurrence(history: dict[int, list[int]], measure: str, n: int) -> dict[int, list]:
    users_of: dict[int, set] = {}
    for u, items in history.items():
        for i in items:
            users_of.setdefault(i, set()).add(u)
    out = {}
    for a in users_of:
        scored = []
        for b in users_of:
            together = len(users_of[a] & users_of[b])
            if a == b or not together:
                continue
            na, nb = len(users_of[a]), len(users_of[b])
            score = {"count": together, "cosine": together / math.sqrt(na * nb),
                     "jaccard": together / (na + nb - together)}[measure]
            scored.append((-score, b))
        if scored:
            out[a] = [(b, -s) for s, b in sorted(scored)[:n]]
    return out


@pytest.fixture(scope="module")
def interactions(spark):
    """(user_idx, item_idx, last_event_ts): 30 users, 15 items; user u's i-th item was seen on day i."""
    rng = np.random.default_rng(4)
    rows = []
    history = {}
    for u in range(30):
        items = [int(i) for i in rng.choice(15, size=int(rng.integers(1, 9)), replace=False)]
        history[u] = items
        rows += [(u, i, dt.datetime(2026, 1, 1) + dt.timedelta(days=d)) for d, i in enumerate(items)]
    df = spark.createDataFrame(rows, f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.LAST_EVENT_TS} timestamp")
    return df, history


@pytest.mark.parametrize("measure", similar.COOCCURRENCE_MEASURES)
def test_cooccurrence_equals_brute_force(interactions, measure):
    df, history = interactions
    got = collected(similar.similar_items_cooccurrence(df, n=5, measure=measure))
    expected = brute_cooccurrence(history, measure, 5)
    assert {a: [b for b, _ in rows] for a, rows in got.items()} == {a: [b for b, _ in rows] for a, rows in expected.items()}
    for a, rows in got.items():
        assert [s for _, s in rows] == pytest.approx([s for _, s in expected[a]], rel=1e-6)


def test_cooccurrence_cap_keeps_each_users_most_recent_items(interactions):
    df, history = interactions
    capped = {u: items[::-1][:3] for u, items in history.items()}  # newest 3: the last ones in each list
    got = collected(similar.similar_items_cooccurrence(df, n=5, measure="count", max_items_per_user=3))
    expected = brute_cooccurrence(capped, "count", 5)
    assert {a: [b for b, _ in rows] for a, rows in got.items()} == {a: [b for b, _ in rows] for a, rows in expected.items()}


def test_cooccurrence_rejects_unknown_measure(interactions):
    with pytest.raises(ValueError, match="measure must be one of"):
        similar.similar_items_cooccurrence(interactions[0], n=3, measure="lift")
