"""The shared behavioural suite: every model (ALS implicit, ALS explicit, ALS on bias residuals, popularity, bias)
passes the same tests.

Data: 30 users x 20 items with a taste structure (even users like even items more), ~300 rated pairs.
Models are fitted once per module; each test asserts on real output.
"""
from __future__ import annotations

import math

import pytest
from pyspark.sql import functions as F

from models import load_recommender
from models.als import AlsParams, AlsRecommender, BiasedAlsRecommender
from models.base import PREDICTION, SIMILAR_ITEM_IDX
from models.baseline import BiasBaseline
from models.popularity import PopularityRecommender
from transforms import columns as C

USERS, ITEMS, N = 30, 20, 5
ROWS = [(u, i, float(5 if (u + i) % 2 == 0 else 2), 1.0 + (u * i) % 3)
        for u in range(USERS) for i in range(ITEMS) if (u * 7 + i * 3) % 2 == 0 or i < 3]
SCHEMA = f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.RATING} double, {C.WEIGHT} double"


def make(name: str, tmp: str):
    if name == "als-implicit":
        return AlsRecommender(params=AlsParams(rank=4, max_iter=5, reg_param=0.1, alpha=5.0, seed=3),
                              checkpoint_dir=f"{tmp}/ckpt")
    if name == "als-explicit":
        return AlsRecommender(params=AlsParams(rank=4, max_iter=5, reg_param=0.1, implicit=False, seed=3),
                              checkpoint_dir=f"{tmp}/ckpt")
    if name == "als-bias":
        return BiasedAlsRecommender(params=AlsParams(rank=4, max_iter=5, reg_param=0.1, implicit=False, seed=3),
                                    checkpoint_dir=f"{tmp}/ckpt")
    if name == "popularity":
        return PopularityRecommender()
    return BiasBaseline()


@pytest.fixture(scope="module")
def training(spark):
    return spark.createDataFrame(ROWS, SCHEMA).cache()


@pytest.fixture(scope="module", params=["als-implicit", "als-explicit", "als-bias", "popularity", "bias"])
def fitted(request, training, tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp(request.param))
    model = make(request.param, tmp).fit(training)
    recs = model.recommend(training, n=N).cache()
    return request.param, model, recs, tmp


def seen_by_user():
    out = {}
    for u, i, _, _ in ROWS:
        out.setdefault(u, set()).add(i)
    return out


def test_recommend_gives_n_unseen_items_per_user_ranked(fitted):
    _, _, recs, _ = fitted
    rows = recs.collect()
    seen = seen_by_user()
    by_user = {}
    for r in rows:
        assert r[C.ITEM_IDX] not in seen[r[C.USER_IDX]], "a seen item was recommended"
        assert math.isfinite(r[C.SCORE])
        by_user.setdefault(r[C.USER_IDX], []).append((r[C.RANK], r[C.SCORE], r[C.ITEM_IDX]))
    assert set(by_user) == set(range(USERS))
    for u, lst in by_user.items():
        lst.sort()
        assert [rank for rank, _, _ in lst] == list(range(1, min(N, ITEMS - len(seen[u])) + 1))
        scores = [s for _, s, _ in lst]
        assert scores == sorted(scores, reverse=True)


def test_recommend_for_a_batch_only_unknown_users_get_nothing_and_seen_can_be_kept(fitted, spark):
    _, model, _, _ = fitted
    batch = spark.createDataFrame([(0,), (2,), (999,)], f"{C.USER_IDX} int")
    got = model.recommend(batch, n=ITEMS, exclude_seen=False).collect()
    assert {r[C.USER_IDX] for r in got} == {0, 2}
    assert len(got) == 2 * ITEMS  # with exclude_seen=False every item, seen ones too


def test_similar_items_exclude_the_item_and_predict_is_null_only_for_unknowns(fitted, training, spark):
    _, model, _, _ = fitted
    sims = model.similar_items(training.select(C.ITEM_IDX), n=3).collect()
    assert sims and all(r[C.ITEM_IDX] != r[SIMILAR_ITEM_IDX] for r in sims)
    per_item = {}
    for r in sims:
        per_item.setdefault(r[C.ITEM_IDX], []).append(r[C.RANK])
    assert set(per_item) == set(range(ITEMS)) and all(sorted(v) == [1, 2, 3] for v in per_item.values())
    pairs = spark.createDataFrame([(0, 0), (1, 1), (999, 0)], f"{C.USER_IDX} int, {C.ITEM_IDX} int")
    got = {(r[C.USER_IDX], r[C.ITEM_IDX]): r[PREDICTION] for r in model.predict(pairs).collect()}
    assert math.isfinite(got[(0, 0)]) and math.isfinite(got[(1, 1)]) and got[(999, 0)] is None


def test_save_load_round_trip_gives_the_same_recommendations(fitted, training):
    name, model, recs, tmp = fitted
    model.save(f"{tmp}/saved")
    loaded = load_recommender(training.sparkSession, f"{tmp}/saved")
    assert type(loaded) is type(model)
    with pytest.raises(ValueError, match="seen"):
        loaded.recommend(training, n=N)  # a loaded model must be told what was seen
    again = loaded.recommend(training, n=N, seen=training)
    key = [C.USER_IDX, C.RANK]
    a = [(r[C.USER_IDX], r[C.RANK], r[C.ITEM_IDX]) for r in recs.orderBy(key).collect()]
    b = [(r[C.USER_IDX], r[C.RANK], r[C.ITEM_IDX]) for r in again.orderBy(key).collect()]
    assert a == b, name


def test_als_is_deterministic_for_a_seed(fitted, training):
    name, model, _, tmp = fitted
    if name not in ("als-implicit", "als-explicit"):
        pytest.skip("plain ALS only")
    again = AlsRecommender(params=model.params, checkpoint_dir=f"{tmp}/ckpt2").fit(training)
    a = {r[C.USER_IDX]: r[C.FEATURES] for r in model.user_factors.collect()}
    b = {r[C.USER_IDX]: r[C.FEATURES] for r in again.user_factors.collect()}
    assert a.keys() == b.keys()
    assert all(a[u] == pytest.approx(b[u], abs=1e-5) for u in a)


def test_nan_factors_are_an_error(spark):
    from types import SimpleNamespace

    from models.als import NaNFactorsError, _raise_on_nan

    good = spark.createDataFrame([(0, [0.1, 0.2])], "id int, features array<float>")
    bad = spark.createDataFrame([(0, [0.1, float("nan")]), (1, [0.3, 0.4])], "id int, features array<float>")
    ok = SimpleNamespace(model=SimpleNamespace(userFactors=good, itemFactors=good), params=AlsParams())
    _raise_on_nan(ok)
    broken = SimpleNamespace(model=SimpleNamespace(userFactors=good, itemFactors=bad), params=AlsParams())
    with pytest.raises(NaNFactorsError, match="1 item factor vectors contain NaN"):
        _raise_on_nan(broken)


# -- known answers, per model ------------------------------------------------------------------------------------
def test_popularity_ranks_by_distinct_users_then_item(spark):
    rows = [(u, i) for i, users in {0: 1, 1: 3, 2: 3, 3: 2}.items() for u in range(users)] + [(9, 4)]
    train = spark.createDataFrame(rows, f"{C.USER_IDX} int, {C.ITEM_IDX} int")
    recs = PopularityRecommender().fit(train).recommend(train.where(F.col(C.USER_IDX) == 9), n=3)
    assert [r[C.ITEM_IDX] for r in recs.orderBy(C.RANK).collect()] == [1, 2, 3]  # 1 and 2 tie: lower idx first


def test_bias_baseline_without_regularisation_recovers_additive_ratings(spark):
    # rating = 3 + user effect + item effect exactly: with reg 0 the fit is exact (RMSE ~ 0)
    ue, ie = [0.5, -0.5, 0.0], [1.0, 0.0, -1.0, 0.25]
    rows = [(u, i, 3 + ue[u] + ie[i]) for u in range(3) for i in range(4)]
    train = spark.createDataFrame(rows, f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.RATING} double")
    model = BiasBaseline(reg_user=0.0, reg_item=0.0, iterations=3).fit(train)
    pred = model.predict(train).collect()
    assert max(abs(r[PREDICTION] - r[C.RATING]) for r in pred) < 1e-4
