"""Score a trained model: top-N per user with seen items excluded, similar items, and the popular fallback.

    python -m jobs.score --lake ./lake [--model-version V] --n 100 [--similar als|cooccurrence|none]

Writes, each partitioned by model_version:
  gold/user_recommendations  (model_version, user_id, rank, item_id, score)   exact top-N (models.topn)
  gold/similar_items         (model_version, item_id, rank, similar_item_id, score)   unless --similar none
  gold/popular_items         (model_version, rank, item_id, score)   distinct users per item, all history
  gold/popular_items_recent  (model_version, rank, item_id, score)   the same over the last --recent-days
A re-run for the same model version replaces that version's rows of each table in one Delta commit
(replaceWhere): readers see the old rows or the new, never a mix. With --similar none, the version's similar
items are removed. "Seen" means every (user, item) in the training table version the model was trained on.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/score.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from delta.tables import DeltaTable
from pyspark.sql import functions as F

from jobs import tables
from jobs.cli import Lake, add_lake_arg, base_parser, spark_from_args
from jobs.train import latest_model_version, model_run
from models.als import load_model
from models.similar import (COOCCURRENCE_MEASURES, DEFAULT_MAX_ITEMS_PER_USER, SIMILAR_ITEM_IDX,
                            similar_items_als, similar_items_cooccurrence)
from models.topn import DEFAULT_BLOCK_BYTES, DEFAULT_ITEM_BUDGET_BYTES, GEMM_BACKENDS, recommend_top_n
from transforms import columns as C
from transforms.training import popular_items, recent_popular_items

DEFAULT_N = 100
SIMILAR_METHODS = ("als", "cooccurrence", "none")
SIMILAR_ITEM_ID = "similar_item_id"
DEFAULT_RECENT_DAYS = 30.0


def build_parser():
    parser = base_parser(__doc__.split("\n\n")[0])
    add_lake_arg(parser)
    parser.add_argument("--model-version", default=None, help="model to score (default: the latest trained)")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="recommendations per user")
    parser.add_argument("--popular-n", type=int, default=None, help="length of the popular fallback (default: --n)")
    parser.add_argument("--recent-days", type=float, default=DEFAULT_RECENT_DAYS,
                        help="window of gold/popular_items_recent, in days before the newest event (0: skip it)")
    similar = parser.add_argument_group("similar items")
    similar.add_argument("--similar", choices=SIMILAR_METHODS, default="als",
                         help="als: cosine over item factors; cooccurrence: users in common (Spark); none: skip")
    similar.add_argument("--similar-n", type=int, default=None, help="neighbours per item (default: --n)")
    similar.add_argument("--cooccurrence-measure", choices=COOCCURRENCE_MEASURES, default="cosine",
                         help="cooccurrence: raw count of users in common, or normalised by cosine or Jaccard")
    similar.add_argument("--max-items-per-user", type=int, default=DEFAULT_MAX_ITEMS_PER_USER,
                         help="cooccurrence: most recent items kept per user (bounds the self-join)")
    similar.add_argument("--min-cooccurrence", type=int, default=1,
                         help="cooccurrence: drop pairs with fewer users in common")
    scoring = parser.add_argument_group("scoring kernel and memory")
    scoring.add_argument("--gemm", choices=GEMM_BACKENDS, default="auto",
                         help="who computes the score blocks: BLIS, numpy's BLAS, or auto (the faster of the two "
                              "on this job's block shape, timed on the driver)")
    scoring.add_argument("--block-mb", type=int, default=DEFAULT_BLOCK_BYTES >> 20,
                         help="bound on one block's score matrix (users x items x 4 bytes) in a Python worker")
    scoring.add_argument("--item-budget-mb", type=int, default=DEFAULT_ITEM_BUDGET_BYTES >> 20,
                         help="item factors up to this size are broadcast whole; larger ones are scored in chunks")
    scoring.add_argument("--read-through-spark", action="store_true",
                         help="read the seen pairs, item factors and user factors through Spark even when they are "
                              "plain Parquet files on a local or mounted filesystem (which the driver, and for the "
                              "user factors the scoring tasks, otherwise read with pyarrow: models.parquet_direct)")
    return parser


def version_predicate(model_version: str) -> str:
    escaped = model_version.replace("'", "''")
    return f"{C.MODEL_VERSION} = '{escaped}'"


def run(spark, args) -> dict:
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    started = time.time()
    lake = Lake(args.lake)
    model_version = args.model_version or latest_model_version(spark, lake)
    meta = model_run(spark, lake, model_version)
    model = load_model(spark, meta["model_dir"])
    training = tables.read(spark, meta["training_table"], version=meta["training_version"])
    where = version_predicate(model_version)
    scoring_options = {"block_bytes": args.block_mb << 20, "item_budget_bytes": args.item_budget_mb << 20,
                       "gemm": args.gemm}

    top = recommend_top_n(model.user_factors, model.item_factors, training.select(C.USER_IDX, C.ITEM_IDX),
                          n=args.n, direct_read=not args.read_through_spark, **scoring_options)
    recs = (
        top.join(model.user_ids, on=C.USER_IDX).join(model.item_ids, on=C.ITEM_IDX)
        .select(F.lit(model_version).alias(C.MODEL_VERSION), C.USER_ID, C.RANK, C.ITEM_ID, C.SCORE)
    )
    recs_path = lake.table("gold", "user_recommendations")
    tables.overwrite(recs, recs_path, partition_by=[C.MODEL_VERSION], replace_where=where)
    rec_rows = tables.last_metrics(spark, recs_path).get("numOutputRows", 0)

    similar_rows = write_similar_items(spark, args, lake, model, training, model_version, scoring_options)

    popular_n = args.popular_n or args.n
    popular = popular_items(training, n=popular_n).select(
        F.lit(model_version).alias(C.MODEL_VERSION), C.RANK, C.ITEM_ID, C.SCORE)
    popular_path = lake.table("gold", "popular_items")
    tables.overwrite(popular, popular_path, partition_by=[C.MODEL_VERSION], replace_where=where)
    recent_rows = None
    if args.recent_days > 0:
        recent = recent_popular_items(training, n=popular_n, days=args.recent_days).select(
            F.lit(model_version).alias(C.MODEL_VERSION), C.RANK, C.ITEM_ID, C.SCORE)
        recent_path = lake.table("gold", "popular_items_recent")
        tables.overwrite(recent, recent_path, partition_by=[C.MODEL_VERSION], replace_where=where)
        recent_rows = tables.read(spark, recent_path).where(where).count()

    scored = tables.read(spark, recs_path).where(where)
    stats = scored.agg(F.countDistinct(C.USER_ID).alias("users"), F.min(C.SCORE).alias("min_score"),
                       F.max(C.SCORE).alias("max_score")).first()
    summary = {
        "model_version": model_version,
        "n": args.n,
        "users": stats["users"],
        "rows": rec_rows,
        "similar": args.similar,
        "similar_rows": similar_rows,
        "popular_items": tables.read(spark, popular_path).where(where).count(),
        "popular_items_recent": recent_rows,
        "seconds": round(time.time() - started, 1),
    }
    similar_note = f", {similar_rows:,} similar-item rows ({args.similar})" if args.similar != "none" else ""
    print(f"score {model_version}  top-{args.n} for {summary['users']:,} users ({rec_rows:,} rows){similar_note}, "
          f"{summary['popular_items']} popular items  {summary['seconds']} s")
    print(json.dumps(summary), file=sys.stderr)
    return summary


def write_similar_items(spark, args, lake: Lake, model, training, model_version: str, scoring_options: dict) -> int:
    """Replace this version's rows of gold/similar_items (or remove them with --similar none); rows written."""
    path = lake.table("gold", "similar_items")
    where = version_predicate(model_version)
    if args.similar == "none":
        if tables.exists(spark, path):
            DeltaTable.forPath(spark, path).delete(where)
        return 0
    n = args.similar_n or args.n
    if n < 1:
        raise ValueError(f"--similar-n must be >= 1, got {n}")
    if args.similar == "als":
        similar = similar_items_als(model.item_factors, n=n, **scoring_options)
    else:
        similar = similar_items_cooccurrence(training, n=n, measure=args.cooccurrence_measure,
                                             max_items_per_user=args.max_items_per_user,
                                             min_count=args.min_cooccurrence)
    ids = model.item_ids
    other = ids.select(F.col(C.ITEM_IDX).alias(SIMILAR_ITEM_IDX), F.col(C.ITEM_ID).alias(SIMILAR_ITEM_ID))
    rows = (
        similar.join(ids, on=C.ITEM_IDX).join(other, on=SIMILAR_ITEM_IDX)
        .select(F.lit(model_version).alias(C.MODEL_VERSION), C.ITEM_ID, C.RANK, SIMILAR_ITEM_ID,
                F.col(C.SCORE).cast("float").alias(C.SCORE))
    )
    tables.overwrite(rows, path, partition_by=[C.MODEL_VERSION], replace_where=where)
    return tables.last_metrics(spark, path).get("numOutputRows", 0)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    spark = spark_from_args("recsys-score", args)
    try:
        run(spark, args)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
