"""Score a trained model: top-N per user with seen items excluded, similar items, and the popular fallback.

    summary = score(spark, Lake("./lake"), ScoreOptions(n=100, similar="cooccurrence"))

Writes, each partitioned by model_version:
  gold/user_recommendations  (model_version, user_id, rank, item_id, score)   exact top-N (models.topn)
  gold/similar_items         (model_version, item_id, rank, similar_item_id, score)   unless similar="none"
  gold/popular_items         (model_version, rank, item_id, score)   distinct users per item, all history
  gold/popular_items_recent  (model_version, rank, item_id, score)   the same over the last ``recent_days``
A re-run for the same model version replaces that version's rows of each table in one Delta commit
(replaceWhere): readers see the old rows or the new, never a mix. With similar="none", the version's similar
items are removed. "Seen" means every (user, item) in the training table version the model was trained on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from flow.model_runs import latest_model_version, model_run, version_predicate
from lake import tables
from lake.registry import Lake
from models.bundle import ModelBundle, load_bundle
from models.similar import (DEFAULT_MAX_ITEMS_PER_USER, SIMILAR_ITEM_IDX, similar_items_als,
                            similar_items_cooccurrence)
from models.topn import DEFAULT_BLOCK_BYTES, DEFAULT_ITEM_BUDGET_BYTES, recommend_top_n
from transforms import columns as C
from transforms.training import popular_items, recent_popular_items

DEFAULT_N = 100
SIMILAR_METHODS = ("als", "cooccurrence", "none")
SIMILAR_ITEM_ID = "similar_item_id"


@dataclass(frozen=True, kw_only=True)
class ScoreOptions:
    model_version: str | None = None  # model to score (None: the latest trained)
    n: int = DEFAULT_N  # recommendations per user
    popular_n: int | None = None  # length of the popular fallback (None: n)
    recent_days: float = 30.0  # window of gold/popular_items_recent before the newest event (0: skip it)
    similar: str = "als"  # one of SIMILAR_METHODS: cosine over item factors, users in common, or none
    similar_n: int | None = None  # neighbours per item (None: n)
    cooccurrence_measure: str = "cosine"  # cooccurrence: one of models.similar.COOCCURRENCE_MEASURES
    max_items_per_user: int = DEFAULT_MAX_ITEMS_PER_USER  # cooccurrence: most recent items kept per user
    min_cooccurrence: int = 1  # cooccurrence: drop pairs with fewer users in common
    block_bytes: int = DEFAULT_BLOCK_BYTES  # bound on one block's score matrix in a Python worker
    item_budget_bytes: int = DEFAULT_ITEM_BUDGET_BYTES  # item factors up to this size are broadcast whole
    direct_read: bool | None = None  # read plain local Parquet inputs with pyarrow (None: unless models.speed says not)

    @property
    def kernel(self) -> dict:
        """The keywords of the scoring kernel (models.topn, models.similar.similar_items_als)."""
        return {"block_bytes": self.block_bytes, "item_budget_bytes": self.item_budget_bytes}


def score(spark: SparkSession, lake: Lake, options: ScoreOptions) -> dict:
    """Write the version's recommendations, similar items and popular lists; returns the summary (row counts)."""
    if options.n < 1:
        raise ValueError(f"--n must be >= 1, got {options.n}")
    started = time.time()
    model_version = options.model_version or latest_model_version(spark, lake)
    where = version_predicate(model_version)
    meta = model_run(spark, lake, model_version)
    bundle = load_bundle(spark, meta["model_dir"])
    training = tables.read(spark, meta["training_table"], version=meta["training_version"])

    top = recommend_top_n(bundle.model.user_factors, bundle.model.item_factors,
                          training.select(C.USER_IDX, C.ITEM_IDX), n=options.n, direct_read=options.direct_read,
                          **options.kernel)
    recs = (
        top.join(bundle.user_ids, on=C.USER_IDX).join(bundle.item_ids, on=C.ITEM_IDX)
        .select(F.lit(model_version).alias(C.MODEL_VERSION), C.USER_ID, C.RANK, C.ITEM_ID, C.SCORE)
    )
    tables.overwrite(recs, lake.user_recommendations, partition_by=[C.MODEL_VERSION], replace_where=where)
    rec_rows = tables.last_metrics(spark, lake.user_recommendations).get("numOutputRows", 0)
    similar_rows = write_similar_items(spark, lake, options, bundle, training, model_version)
    popular_rows, recent_rows = write_popular_items(spark, lake, options, training, model_version)

    stats = (tables.read(spark, lake.user_recommendations).where(where)
             .agg(F.countDistinct(C.USER_ID).alias("users")).first())
    return {
        "model_version": model_version,
        "n": options.n,
        "users": stats["users"],
        "rows": rec_rows,
        "similar": options.similar,
        "similar_rows": similar_rows,
        "popular_items": popular_rows,
        "popular_items_recent": recent_rows,
        "seconds": round(time.time() - started, 1),
    }


def write_popular_items(spark: SparkSession, lake: Lake, options: ScoreOptions, training: DataFrame,
                        model_version: str) -> tuple[int, int | None]:
    """Replace this version's rows of gold/popular_items and (unless recent_days is 0) gold/popular_items_recent;
    returns their row counts (None: no recent list)."""
    where = version_predicate(model_version)
    popular_n = options.popular_n or options.n
    popular = popular_items(training, n=popular_n).select(
        F.lit(model_version).alias(C.MODEL_VERSION), C.RANK, C.ITEM_ID, C.SCORE)
    tables.overwrite(popular, lake.popular_items, partition_by=[C.MODEL_VERSION], replace_where=where)
    recent_rows = None
    if options.recent_days > 0:
        recent = recent_popular_items(training, n=popular_n, days=options.recent_days).select(
            F.lit(model_version).alias(C.MODEL_VERSION), C.RANK, C.ITEM_ID, C.SCORE)
        tables.overwrite(recent, lake.popular_items_recent, partition_by=[C.MODEL_VERSION], replace_where=where)
        recent_rows = tables.read(spark, lake.popular_items_recent).where(where).count()
    return tables.read(spark, lake.popular_items).where(where).count(), recent_rows


def write_similar_items(spark: SparkSession, lake: Lake, options: ScoreOptions, bundle: ModelBundle,
                        training: DataFrame, model_version: str) -> int:
    """Replace this version's rows of gold/similar_items (or remove them with similar="none"); rows written."""
    where = version_predicate(model_version)
    if options.similar == "none":
        tables.delete(spark, lake.similar_items, where)
        return 0
    n = options.similar_n or options.n
    if n < 1:
        raise ValueError(f"--similar-n must be >= 1, got {n}")
    if options.similar == "als":
        similar = similar_items_als(bundle.model.item_factors, n=n, **options.kernel)
    else:
        similar = similar_items_cooccurrence(training, n=n, measure=options.cooccurrence_measure,
                                             max_items_per_user=options.max_items_per_user,
                                             min_count=options.min_cooccurrence)
    ids = bundle.item_ids
    other = ids.select(F.col(C.ITEM_IDX).alias(SIMILAR_ITEM_IDX), F.col(C.ITEM_ID).alias(SIMILAR_ITEM_ID))
    rows = (
        similar.join(ids, on=C.ITEM_IDX).join(other, on=SIMILAR_ITEM_IDX)
        .select(F.lit(model_version).alias(C.MODEL_VERSION), C.ITEM_ID, C.RANK, SIMILAR_ITEM_ID,
                F.col(C.SCORE).cast("float").alias(C.SCORE))
    )
    tables.overwrite(rows, lake.similar_items, partition_by=[C.MODEL_VERSION], replace_where=where)
    return tables.last_metrics(spark, lake.similar_items).get("numOutputRows", 0)
