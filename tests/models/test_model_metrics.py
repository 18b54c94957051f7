"""models.metrics on Spark vs the pure-Python reference and vs Spark's own RankingEvaluator."""
from __future__ import annotations

import math
import random

import pytest
from pyspark.ml.evaluation import RankingEvaluator

import ranking_reference as ref
from models import metrics
from transforms import columns as C

# Hand-made case. user 1: hits at ranks 1 and 3 of 5 relevant; user 2: one hit at rank 2, list shorter than k;
# user 3: no hit; user 4: relevant items but no recommendations at all (cold); user 5: recs but no relevant
# item (not evaluated).
RECS = {1: [10, 11, 12, 13], 2: [20, 21], 3: [30, 31, 32, 33], 5: [50, 51]}
RELEVANT = {1: {10, 12, 14, 15, 16}, 2: {21}, 3: {99}, 4: {40, 41}}
K = 4


def frames(spark, recs, relevant):
    rec_rows = [(u, i, r + 1) for u, items in recs.items() for r, i in enumerate(items)]
    rel_rows = [(u, i) for u, items in relevant.items() for i in items]
    return (spark.createDataFrame(rec_rows, f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.RANK} int"),
            spark.createDataFrame(rel_rows, f"{C.USER_IDX} int, {C.ITEM_IDX} int"))


def test_hand_computed_case(spark):
    recs, rel = frames(spark, RECS, RELEVANT)
    got = metrics.ranking_metrics(recs, rel, k=K, catalogue_size=20)
    # by hand: user 1 precision 2/4, recall 2/5, AP (1/1 + 2/3) / min(5, 4), DCG 1 + 1/log2(4), IDCG over 4 ranks
    idcg4 = 1 + 1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(5)
    u1 = dict(p=2 / 4, r=2 / 5, ap=(1 + 2 / 3) / 4, ndcg=(1 + 1 / math.log2(4)) / idcg4)
    u2 = dict(p=1 / 4, r=1.0, ap=(1 / 2) / 1, ndcg=(1 / math.log2(3)) / 1.0)
    zero = dict(p=0.0, r=0.0, ap=0.0, ndcg=0.0)
    users = [u1, u2, zero, zero]  # users 1-4 are evaluated; user 5 has nothing relevant
    assert got["precision@4"] == pytest.approx(sum(u["p"] for u in users) / 4)
    assert got["recall@4"] == pytest.approx(sum(u["r"] for u in users) / 4)
    assert got["map@4"] == pytest.approx(sum(u["ap"] for u in users) / 4)
    assert got["ndcg@4"] == pytest.approx(sum(u["ndcg"] for u in users) / 4)
    assert got["hit_rate@4"] == pytest.approx(2 / 4)
    assert got["users_evaluated"] == 4 and got["users_without_recs"] == 1
    assert got["users_with_short_lists"] == 2  # user 2 (2 recs) and user 4 (none)
    assert got["recommended_items"] == 12 and got["coverage"] == pytest.approx(12 / 20)
    assert {k: got[k] for k in ref.mean_metrics(RECS, RELEVANT, K)} == pytest.approx(ref.mean_metrics(RECS, RELEVANT, K))
    per_user = {r[C.USER_IDX]: r for r in metrics.per_user_ranking_metrics(recs, rel, k=K).collect()}
    assert set(per_user) == {1, 2, 3, 4}
    assert per_user[1]["ndcg"] == pytest.approx(u1["ndcg"]) and per_user[1]["map"] == pytest.approx(u1["ap"])


def test_matches_spark_ranking_evaluator(spark):
    """Same numbers as Spark's RankingEvaluator (RankingMetrics) on users that have recommendations."""
    recs_by_user = {u: v for u, v in RECS.items() if u in RELEVANT}
    relevant = {u: RELEVANT[u] for u in recs_by_user}
    recs, rel = frames(spark, recs_by_user, relevant)
    ours = metrics.ranking_metrics(recs, rel, k=K)
    rows = [([float(i) for i in recs_by_user[u]], [float(i) for i in sorted(relevant[u])]) for u in recs_by_user]
    df = spark.createDataFrame(rows, "prediction array<double>, label array<double>")
    for spark_name, ours_name in (("precisionAtK", "precision@4"), ("recallAtK", "recall@4"),
                                  ("ndcgAtK", "ndcg@4"), ("meanAveragePrecisionAtK", "map@4")):
        value = RankingEvaluator(metricName=spark_name, k=K).evaluate(df)
        assert ours[ours_name] == pytest.approx(value), spark_name


def test_random_cases_match_reference(spark):
    rng = random.Random(7)
    recs_by_user, relevant = {}, {}
    for u in range(40):
        recs_by_user[u] = rng.sample(range(30), rng.randint(0, 8))
        relevant[u] = set(rng.sample(range(30), rng.randint(1, 6)))
    recs, rel = frames(spark, recs_by_user, relevant)
    many = metrics.ranking_metrics_at(recs, rel, ks=[1, 5, 10])
    for k in (1, 5, 10):
        want = ref.mean_metrics(recs_by_user, relevant, k)
        assert {name: many[k][name] for name in want} == pytest.approx(want)


def test_rating_metrics_count_missing_predictions_instead_of_nan(spark):
    rows = [(1, 1, 4.0, 3.5), (1, 2, 2.0, 3.0), (2, 1, 5.0, None), (2, 2, 3.0, float("nan"))]
    df = spark.createDataFrame(rows, f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.RATING} double, prediction double")
    got = metrics.rating_metrics(df)
    assert got["rmse"] == pytest.approx(ref.rmse([(3.5, 4.0), (3.0, 2.0)]))
    assert got["mae"] == pytest.approx(ref.mae([(3.5, 4.0), (3.0, 2.0)]))
    assert got["rows"] == 2 and got["rows_without_prediction"] == 2


def test_empty_test_set_is_an_error_not_nan(spark):
    recs, _ = frames(spark, RECS, RELEVANT)
    empty = spark.createDataFrame([], f"{C.USER_IDX} int, {C.ITEM_IDX} int")
    with pytest.raises(metrics.MetricInputError, match="empty"):
        metrics.ranking_metrics(recs, empty, k=3)


def test_popularity_bias_shares(spark):
    # items 0..3 by popularity: 0 (4 users) > 1 (3) > 2 (2) > 3 (1)
    train = spark.createDataFrame([(u, i) for i in range(4) for u in range(4 - i)], f"{C.USER_IDX} int, {C.ITEM_IDX} int")
    recs = spark.createDataFrame([(9, 0, 1), (9, 1, 2), (8, 0, 1), (8, 3, 2)],
                                 f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.RANK} int")
    got = metrics.popularity_bias(recs, train, k=2, buckets=2)
    assert got["recommendation_share"] == pytest.approx([3 / 4, 1 / 4])
    assert got["training_share"] == pytest.approx([7 / 10, 3 / 10])
