"""Offline metrics computed on Spark (nothing is collected but the final averages), with stated denominators.

Ranking metrics take ``recs`` (user_idx, item_idx, rank: 1 = best) and ``relevant`` (user_idx, item_idx: the
held-out pairs; binary relevance). They are averaged over the *evaluated users*: every user with at least one
relevant item. A user the model gave no recommendation (cold, or no factors) still counts, with zeros, and
is reported as ``users_without_recs``. For one user with relevant set R and top-k list L (|L| <= k):

==================  =========================================================================================
``precision@k``     |L ∩ R| / k                     (denominator k, even when |L| < k; as Spark's precisionAt)
``recall@k``        |L ∩ R| / |R|
``ndcg@k``          DCG / IDCG, DCG = sum over hits at rank r of 1 / log2(r + 1);
                    IDCG = sum over r = 1..min(|R|, k) of 1 / log2(r + 1)
``map@k``           sum over hits at rank r of (hits in L[1..r]) / r, divided by min(|R|, k)
                    (as Spark's meanAveragePrecisionAt; some libraries divide by |R| or by the hit count)
``hit_rate@k``      1 if |L ∩ R| > 0 else 0
==================  =========================================================================================

``coverage`` (catalogue coverage) = distinct items in all users' top-k lists / catalogue size (items that can
be recommended: those in the training data). Rating metrics (explicit mode): RMSE and MAE over the rows that
have a prediction; rows without one are counted (``rows_without_prediction``), never turned into NaN.
"""
from __future__ import annotations

import math

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from transforms import columns as C

RANKING_KEYS = ("ndcg", "precision", "recall", "map", "hit_rate")


class MetricInputError(ValueError):
    """The input to a metric is malformed (missing columns, NaN, ranks outside 1..k)."""


def _check(df: DataFrame, cols: list[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise MetricInputError(f"{what} needs columns {missing}; it has {df.columns}")


def _log2_discount(rank: F.Column) -> F.Column:
    return F.lit(1.0) / F.log2(rank.cast("double") + F.lit(1.0))


def _ideal_dcg(ideal_len: F.Column) -> F.Column:
    """IDCG of a list with ``ideal_len`` hits at its top: sum over r = 1..ideal_len of 1 / log2(r + 1)."""
    return F.aggregate(F.sequence(F.lit(1), ideal_len), F.lit(0.0),
                       lambda acc, r: acc + F.lit(1.0) / F.log2(r.cast("double") + F.lit(1.0)))


def per_user_ranking_metrics(recs: DataFrame, relevant: DataFrame, *, k: int, user_col: str = C.USER_IDX,
                             item_col: str = C.ITEM_IDX, rank_col: str = C.RANK) -> DataFrame:
    """One row per evaluated user: n_relevant, n_recs, hits and each metric at k (see the module docstring)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    _check(recs, [user_col, item_col, rank_col], "recs")
    _check(relevant, [user_col, item_col], "relevant")
    top = recs.where(F.col(rank_col) <= k).select(user_col, item_col, F.col(rank_col).cast("int").alias("_rank"))
    rel = relevant.select(user_col, item_col).distinct()
    n_rel = rel.groupBy(user_col).agg(F.count(F.lit(1)).alias("n_relevant"))
    n_recs = top.groupBy(user_col).agg(F.count(F.lit(1)).alias("n_recs"))
    hits = top.join(rel, on=[user_col, item_col], how="inner")
    # j-th hit (by rank) at rank r contributes j / r to the average precision
    hits = hits.withColumn("_j", F.row_number().over(Window.partitionBy(user_col).orderBy("_rank")))
    per_hit = hits.groupBy(user_col).agg(
        F.count(F.lit(1)).alias("hits"),
        F.sum(_log2_discount(F.col("_rank"))).alias("dcg"),
        F.sum(F.col("_j") / F.col("_rank")).alias("ap_sum"),
    )
    ideal_len = F.least(F.col("n_relevant"), F.lit(k))
    idcg = _ideal_dcg(ideal_len)
    users = (
        n_rel.join(n_recs, on=user_col, how="left").join(per_hit, on=user_col, how="left")
        .fillna(0, subset=["n_recs", "hits", "dcg", "ap_sum"])
    )
    return users.select(
        user_col, "n_relevant", "n_recs", "hits",
        (F.col("hits") / F.lit(float(k))).alias("precision"),
        (F.col("hits") / F.col("n_relevant")).alias("recall"),
        (F.col("dcg") / idcg).alias("ndcg"),
        (F.col("ap_sum") / ideal_len).alias("map"),
        (F.col("hits") > 0).cast("double").alias("hit_rate"),
    )


def ranking_metrics(recs: DataFrame, relevant: DataFrame, *, k: int, catalogue_size: int | None = None,
                    user_col: str = C.USER_IDX, item_col: str = C.ITEM_IDX, rank_col: str = C.RANK) -> dict:
    """Averages over evaluated users: ``ndcg@k``, ``precision@k``, ``recall@k``, ``map@k``, ``hit_rate@k``,
    ``coverage`` (when ``catalogue_size`` is given) and the counts behind them."""
    return ranking_metrics_at(recs, relevant, ks=[k], catalogue_size=catalogue_size, user_col=user_col,
                              item_col=item_col, rank_col=rank_col)[k]


def _per_user_counts_at(top: DataFrame, relevant: DataFrame, ks: list[int], *, user_col: str,
                        item_col: str) -> DataFrame:
    """One row per evaluated user: n_relevant and, for each k, n_recs_k, hits_k, dcg_k and ap_k (0 without recs).

    ``top`` holds the recommendations up to the largest k, with their rank as ``_rank``.
    """
    rel = relevant.select(user_col, item_col).distinct()
    n_rel = rel.groupBy(user_col).agg(F.count(F.lit(1)).alias("n_relevant"))
    listed = top.groupBy(user_col).agg(*[F.sum((F.col("_rank") <= k).cast("int")).alias(f"n_recs_{k}") for k in ks])
    hits = top.join(rel, on=[user_col, item_col], how="inner")
    hits = hits.withColumn("_j", F.row_number().over(Window.partitionBy(user_col).orderBy("_rank")))
    within = {k: F.col("_rank") <= k for k in ks}
    per_hit = hits.groupBy(user_col).agg(
        *[F.sum(within[k].cast("int")).alias(f"hits_{k}") for k in ks],
        *[F.sum(F.when(within[k], _log2_discount(F.col("_rank"))).otherwise(0.0)).alias(f"dcg_{k}") for k in ks],
        *[F.sum(F.when(within[k], F.col("_j") / F.col("_rank")).otherwise(0.0)).alias(f"ap_{k}") for k in ks],
    )
    filled = [f"{p}_{k}" for k in ks for p in ("n_recs", "hits", "dcg", "ap")]
    return n_rel.join(listed, on=user_col, how="left").join(per_hit, on=user_col, how="left").fillna(0, subset=filled)


def _averages_at(ks: list[int]) -> list[F.Column]:
    """The aggregates over _per_user_counts_at's rows: users, relevant pairs, and for each k the averaged metrics
    (``ndcg@k`` ...) and the users without recommendations (``without_k``) or with fewer than k (``short_k``)."""
    aggs = [F.count(F.lit(1)).alias("users"), F.sum("n_relevant").alias("relevant")]
    for k in ks:
        ideal_len = F.least(F.col("n_relevant"), F.lit(k))
        h = F.col(f"hits_{k}")
        aggs += [
            F.avg(F.col(f"dcg_{k}") / _ideal_dcg(ideal_len)).alias(f"ndcg@{k}"),
            F.avg(h / F.lit(float(k))).alias(f"precision@{k}"),
            F.avg(h / F.col("n_relevant")).alias(f"recall@{k}"),
            F.avg(F.col(f"ap_{k}") / ideal_len).alias(f"map@{k}"),
            F.avg((h > 0).cast("double")).alias(f"hit_rate@{k}"),
            F.sum((F.col(f"n_recs_{k}") == 0).cast("int")).alias(f"without_{k}"),
            F.sum((F.col(f"n_recs_{k}") < k).cast("int")).alias(f"short_{k}"),
        ]
    return aggs


def _metrics_at(k: int, row, distinct_items, catalogue_size: int | None) -> dict:
    """ranking_metrics' dict at k from the row of _averages_at and the row of distinct recommended items;
    MetricInputError when a metric is NaN."""
    result = {f"{name}@{k}": float(row[f"{name}@{k}"]) for name in RANKING_KEYS}
    result.update({
        "users_evaluated": int(row["users"]),
        "users_without_recs": int(row[f"without_{k}"] or 0),
        "users_with_short_lists": int(row[f"short_{k}"] or 0),
        "relevant_pairs": int(row["relevant"] or 0),
        "recommended_items": int(distinct_items[f"items_{k}"] or 0),
    })
    if catalogue_size is not None:
        result["catalogue_size"] = int(catalogue_size)
        result["coverage"] = result["recommended_items"] / catalogue_size
    for key, value in result.items():
        if isinstance(value, float) and math.isnan(value):
            raise MetricInputError(f"metric {key} is NaN: check the recommendations for NaN scores or ranks")
    return result


def ranking_metrics_at(recs: DataFrame, relevant: DataFrame, *, ks: list[int], catalogue_size: int | None = None,
                       user_col: str = C.USER_IDX, item_col: str = C.ITEM_IDX, rank_col: str = C.RANK) -> dict:
    """{k: metrics at k} for several cut-offs in two Spark jobs (one over users, one over recommended items).

    Works because the hits within the top k are a prefix of the hits in rank order: the j-th hit has the same j
    at every cut-off, so one pass computes every k with conditional sums.
    """
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"every k must be >= 1, got {ks}")
    if catalogue_size is not None and catalogue_size < 1:
        raise MetricInputError(f"catalogue_size must be >= 1, got {catalogue_size}")
    _check(recs, [user_col, item_col, rank_col], "recs")
    _check(relevant, [user_col, item_col], "relevant")
    top = recs.where(F.col(rank_col) <= ks[-1]).select(user_col, item_col, F.col(rank_col).cast("int").alias("_rank"))
    users = _per_user_counts_at(top, relevant, ks, user_col=user_col, item_col=item_col)
    row = users.agg(*_averages_at(ks)).first()
    if not row["users"]:
        raise MetricInputError("no user has a relevant item: the test set is empty")
    distinct_items = top.agg(*[F.countDistinct(F.when(F.col("_rank") <= k, F.col(item_col))).alias(f"items_{k}")
                               for k in ks]).first()
    return {k: _metrics_at(k, row, distinct_items, catalogue_size) for k in ks}


def rating_metrics(predictions: DataFrame, *, label_col: str = C.RATING, prediction_col: str = "prediction") -> dict:
    """RMSE and MAE over rows with a finite prediction; the others are counted, not averaged."""
    _check(predictions, [label_col, prediction_col], "predictions")
    pred = F.col(prediction_col).cast("double")
    valid = pred.isNotNull() & ~F.isnan(pred)
    err = pred - F.col(label_col).cast("double")
    row = predictions.agg(
        F.sqrt(F.avg(F.when(valid, err * err))).alias("rmse"),
        F.avg(F.when(valid, F.abs(err))).alias("mae"),
        F.sum(F.when(valid, 1).otherwise(0)).alias("rows"),
        F.sum(F.when(valid, 0).otherwise(1)).alias("missing"),
    ).first()
    if not row["rows"]:
        raise MetricInputError("no row has a prediction: nothing to compute RMSE on")
    return {"rmse": float(row["rmse"]), "mae": float(row["mae"]), "rows": int(row["rows"]),
            "rows_without_prediction": int(row["missing"] or 0)}


def popularity_bias(recs: DataFrame, training: DataFrame, *, k: int, buckets: int = 10,
                    user_col: str = C.USER_IDX, item_col: str = C.ITEM_IDX, rank_col: str = C.RANK) -> dict:
    """How concentrated the top-k lists are on popular items.

    Items are ranked by training popularity (distinct users) and cut into ``buckets`` equal-sized groups
    (0 = most popular). Returns the share of recommendations per group, the share of training interactions per
    group (for comparison) and the mean popularity percentile of recommended items (1.0 = the most popular).
    """
    pop = training.groupBy(item_col).agg(F.countDistinct(user_col).alias("users"))
    n_items = pop.count()
    if n_items == 0:
        raise MetricInputError("training is empty: no item popularity to compare with")
    ranked = pop.withColumn("_pos", F.row_number().over(Window.orderBy(F.col("users").desc(), F.col(item_col))) - 1)
    ranked = ranked.withColumn("bucket", F.floor(F.col("_pos") * buckets / F.lit(n_items)).cast("int")).withColumn(
        "percentile", F.lit(1.0) - F.col("_pos") / F.lit(float(max(1, n_items - 1)) if n_items > 1 else 1.0))
    top = recs.where(F.col(rank_col) <= k).join(ranked, on=item_col, how="left")
    rec_share = {r["bucket"]: r["n"] for r in top.groupBy("bucket").agg(F.count(F.lit(1)).alias("n")).collect()}
    train_share = {r["bucket"]: r["n"] for r in training.join(ranked.select(item_col, "bucket"), on=item_col)
                   .groupBy("bucket").agg(F.count(F.lit(1)).alias("n")).collect()}
    total_recs = sum(v for key, v in rec_share.items() if key is not None) or 1
    total_train = sum(train_share.values()) or 1
    mean_pct = top.agg(F.avg("percentile")).first()[0]
    return {
        "buckets": buckets,
        "recommendation_share": [rec_share.get(b, 0) / total_recs for b in range(buckets)],
        "training_share": [train_share.get(b, 0) / total_train for b in range(buckets)],
        "mean_popularity_percentile": float(mean_pct) if mean_pct is not None else None,
    }
