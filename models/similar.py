"""Similar items per item ("users who liked this also liked"), two ways, same output.

* ``similar_items_als``: cosine similarity of the ALS item factors. Item vectors are normalised to unit length
  and scored against each other with the exact top-N scorer of ``models.topn`` (the item itself excluded, the
  same way seen items are excluded for users). Items whose factor vector is all zeros have no direction and
  are left out on both sides.
* ``similar_items_cooccurrence``: memory-based, computed in Spark from the interactions alone: for every pair of
  items, the number of users who interacted with both, optionally normalised (cosine or Jaccard). The self-join
  on users costs the sum over users of (items per user)^2, so each user's items are capped (most recent first
  when ``last_event_ts`` is there); the item counts used to normalise come from the same capped data, so cosine
  and Jaccard stay within [0, 1].

Both return (item_idx, similar_item_idx, score float, rank int): rank 1 is the most similar, ties are broken by
similar_item_idx ascending, at most n rows per item.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from models import topn
from transforms import columns as C

SIMILAR_ITEM_IDX = "similar_item_idx"
OUTPUT_COLUMNS = (C.ITEM_IDX, SIMILAR_ITEM_IDX, C.SCORE, C.RANK)
COOCCURRENCE_MEASURES = ("count", "cosine", "jaccard")
DEFAULT_MAX_ITEMS_PER_USER = 500


def similar_items_als(item_factors: DataFrame, *, n: int, block_bytes: int = topn.DEFAULT_BLOCK_BYTES,
                      item_budget_bytes: int = topn.DEFAULT_ITEM_BUDGET_BYTES) -> DataFrame:
    """Top-n neighbours of every item by cosine over ALS item factors (item_idx, features), itself excluded."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    squared = F.aggregate(C.FEATURES, F.lit(0.0).cast("double"), lambda acc, x: acc + x.cast("double") * x)
    normed = (
        item_factors.select(C.ITEM_IDX, C.FEATURES).withColumn("norm", F.sqrt(squared)).where(F.col("norm") > 0)
        .select(C.ITEM_IDX, F.transform(C.FEATURES, lambda x: (x / F.col("norm")).cast("float")).alias(C.FEATURES))
    )
    queries = normed.withColumnRenamed(C.ITEM_IDX, C.USER_IDX)
    itself = normed.select(F.col(C.ITEM_IDX).alias(C.USER_IDX), C.ITEM_IDX)
    top = topn.recommend_top_n(queries, normed, itself, n=n, block_bytes=block_bytes,
                               item_budget_bytes=item_budget_bytes)
    return top.select(F.col(C.USER_IDX).alias(C.ITEM_IDX), F.col(C.ITEM_IDX).alias(SIMILAR_ITEM_IDX), C.SCORE, C.RANK)


def capped_interactions(interactions: DataFrame, *, max_items_per_user: int) -> DataFrame:
    """(user_idx, item_idx), at most ``max_items_per_user`` distinct items per user: the most recent ones when
    ``last_event_ts`` is a column (ties and otherwise: the heaviest ``weight``, then the smallest item_idx)."""
    if max_items_per_user < 1:
        raise ValueError(f"max_items_per_user must be >= 1, got {max_items_per_user}")
    pairs = interactions
    order = []
    if C.LAST_EVENT_TS in pairs.columns:
        order.append(F.col(C.LAST_EVENT_TS).desc_nulls_last())
    if C.WEIGHT in pairs.columns:
        order.append(F.col(C.WEIGHT).desc_nulls_last())
    order.append(F.col(C.ITEM_IDX).asc())
    keep = [c for c in (C.USER_IDX, C.ITEM_IDX, C.LAST_EVENT_TS, C.WEIGHT) if c in pairs.columns]
    pairs = pairs.select(*keep).dropDuplicates([C.USER_IDX, C.ITEM_IDX])
    per_user = Window.partitionBy(C.USER_IDX).orderBy(*order)
    return (pairs.withColumn("_n", F.row_number().over(per_user)).where(F.col("_n") <= max_items_per_user)
            .select(C.USER_IDX, C.ITEM_IDX))


def similar_items_cooccurrence(interactions: DataFrame, *, n: int, measure: str = "cosine",
                               max_items_per_user: int = DEFAULT_MAX_ITEMS_PER_USER,
                               min_count: int = 1) -> DataFrame:
    """Top-n neighbours of every item by co-occurrence in users' histories (Spark only, no factors).

    ``interactions`` has (user_idx, item_idx), e.g. gold/training. ``measure``: ``count`` (users in common),
    ``cosine`` (count / sqrt(users_a * users_b)) or ``jaccard`` (count / (users_a + users_b - count)).
    Pairs with fewer than ``min_count`` users in common are dropped.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if measure not in COOCCURRENCE_MEASURES:
        raise ValueError(f"measure must be one of {COOCCURRENCE_MEASURES}, got {measure!r}")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    pairs = capped_interactions(interactions, max_items_per_user=max_items_per_user)
    item_users = pairs.groupBy(C.ITEM_IDX).agg(F.count(F.lit(1)).alias("users"))
    a = pairs.alias("a")
    b = pairs.alias("b")
    together = (
        a.join(b, on=(F.col(f"a.{C.USER_IDX}") == F.col(f"b.{C.USER_IDX}"))
               & (F.col(f"a.{C.ITEM_IDX}") != F.col(f"b.{C.ITEM_IDX}")))
        .groupBy(F.col(f"a.{C.ITEM_IDX}").alias(C.ITEM_IDX), F.col(f"b.{C.ITEM_IDX}").alias(SIMILAR_ITEM_IDX))
        .agg(F.count(F.lit(1)).alias("together"))
        .where(F.col("together") >= min_count)
    )
    counts_a = item_users.select(F.col(C.ITEM_IDX), F.col("users").alias("users_a"))
    counts_b = item_users.select(F.col(C.ITEM_IDX).alias(SIMILAR_ITEM_IDX), F.col("users").alias("users_b"))
    scored = together.join(counts_a, on=C.ITEM_IDX).join(counts_b, on=SIMILAR_ITEM_IDX)
    together_d = F.col("together").cast("double")
    if measure == "count":
        score = together_d
    elif measure == "cosine":
        score = together_d / F.sqrt(F.col("users_a").cast("double") * F.col("users_b"))
    else:
        score = together_d / (F.col("users_a") + F.col("users_b") - F.col("together")).cast("double")
    per_item = Window.partitionBy(C.ITEM_IDX).orderBy(F.col("_score").desc(), F.col(SIMILAR_ITEM_IDX).asc())
    return (
        scored.withColumn("_score", score)
        .withColumn(C.RANK, F.row_number().over(per_item))
        .where(F.col(C.RANK) <= n)
        .select(C.ITEM_IDX, SIMILAR_ITEM_IDX, F.col("_score").cast("float").alias(C.SCORE),
                F.col(C.RANK).cast("int").alias(C.RANK))
    )
