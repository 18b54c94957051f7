"""Score a trained model: top-N per user with seen items excluded, and the popular-items fallback.

    python -m jobs.score --lake ./lake [--model-version V] --n 100

Writes gold/user_recommendations (model_version, user_id, rank, item_id, score) and gold/popular_items
(model_version, rank, item_id, score), both partitioned by model_version. A re-run for the same model version
replaces that version's rows in one Delta commit (replaceWhere): readers see the old rows or the new, never a mix.
"Seen" means every (user, item) in the training table version the model was trained on.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/score.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from pyspark.sql import functions as F

from jobs import tables
from jobs.cli import Lake, add_lake_arg, base_parser, spark_from_args
from jobs.train import latest_model_version, model_run
from models.als import load_model
from models.topn import recommend_top_n
from transforms import columns as C
from transforms.training import popular_items

DEFAULT_N = 100


def build_parser():
    parser = base_parser(__doc__.split("\n\n")[0])
    add_lake_arg(parser)
    parser.add_argument("--model-version", default=None, help="model to score (default: the latest trained)")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="recommendations per user")
    parser.add_argument("--popular-n", type=int, default=None, help="length of the popular fallback (default: --n)")
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

    top = recommend_top_n(model.user_factors, model.item_factors, training.select(C.USER_IDX, C.ITEM_IDX), n=args.n)
    recs = (
        top.join(model.user_ids, on=C.USER_IDX).join(model.item_ids, on=C.ITEM_IDX)
        .select(F.lit(model_version).alias(C.MODEL_VERSION), C.USER_ID, C.RANK, C.ITEM_ID, C.SCORE)
    )
    where = version_predicate(model_version)
    recs_path = lake.table("gold", "user_recommendations")
    tables.overwrite(recs, recs_path, partition_by=[C.MODEL_VERSION], replace_where=where)
    rec_rows = tables.last_metrics(spark, recs_path).get("numOutputRows", 0)

    popular = popular_items(training, n=args.popular_n or args.n).select(
        F.lit(model_version).alias(C.MODEL_VERSION), C.RANK, C.ITEM_ID, C.SCORE)
    popular_path = lake.table("gold", "popular_items")
    tables.overwrite(popular, popular_path, partition_by=[C.MODEL_VERSION], replace_where=where)

    scored = tables.read(spark, recs_path).where(where)
    stats = scored.agg(F.countDistinct(C.USER_ID).alias("users"), F.min(C.SCORE).alias("min_score"),
                       F.max(C.SCORE).alias("max_score")).first()
    summary = {
        "model_version": model_version,
        "n": args.n,
        "users": stats["users"],
        "rows": rec_rows,
        "popular_items": tables.read(spark, popular_path).where(where).count(),
        "seconds": round(time.time() - started, 1),
    }
    print(f"score {model_version}  top-{args.n} for {summary['users']:,} users ({rec_rows:,} rows), "
          f"{summary['popular_items']} popular items  {summary['seconds']} s")
    print(json.dumps(summary), file=sys.stderr)
    return summary


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
