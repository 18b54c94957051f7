"""Train ALS on gold/training and save a versioned model with its lineage.

    python -m jobs.train --lake ./lake --rank 32 --reg-param 0.1 --alpha 10 --max-iter 15

Writes <lake>/models/<model_version>/ (ALS factors, the id maps used, params.json) and appends one row to
meta/model_runs (model version, params, training table version, counts). The mode (implicit or explicit)
follows the training table: a `weight` column means implicit, a `rating` column explicit.
"""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/train.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from pyspark.sql import Row
from pyspark.sql import functions as F

from jobs import tables
from jobs.cli import Lake, add_lake_arg, base_parser, spark_from_args
from models.als import AlsParams, fit_als, save_model
from transforms import columns as C

MODEL_RUNS = ("meta", "model_runs")


class NoModelError(RuntimeError):
    """No trained model matches what was asked for."""


def new_model_version() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def code_version() -> str:
    """The git commit of the code, when it runs from a checkout (else 'unknown')."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parents[1])
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def add_als_args(parser) -> None:
    defaults = AlsParams()
    als = parser.add_argument_group("ALS")
    als.add_argument("--rank", type=int, default=defaults.rank, help="number of latent factors")
    als.add_argument("--reg-param", type=float, default=defaults.reg_param,
                     help="L2 regularisation (Spark scales it by each user's and item's count: ALS-WR)")
    als.add_argument("--alpha", type=float, default=defaults.alpha, help="implicit: confidence = 1 + alpha * weight")
    als.add_argument("--max-iter", type=int, default=defaults.max_iter, help="ALS iterations")
    als.add_argument("--seed", type=int, default=defaults.seed, help="random seed (same seed, same factors)")
    als.add_argument("--num-blocks", type=int, default=None, help="user/item blocks (default: Spark's parallelism)")


def build_parser():
    parser = base_parser(__doc__.split("\n\n")[0])
    add_lake_arg(parser)
    add_als_args(parser)
    parser.add_argument("--model-version", default=None, help="name of the new model (default: UTC time, e.g. 20261123T010203Z)")
    return parser


def training_mode(columns: list[str]) -> bool:
    """True for implicit (weight column), False for explicit (rating column)."""
    if C.WEIGHT in columns:
        return True
    if C.RATING in columns:
        return False
    raise ValueError(f"gold/training has neither {C.WEIGHT!r} nor {C.RATING!r} (columns: {columns}): "
                     "rebuild it with jobs.build_training")


def latest_model_version(spark, lake: Lake) -> str:
    path = lake.table(*MODEL_RUNS)
    runs = tables.read_if_exists(spark, path)
    row = runs.orderBy(F.col("created_at").desc(), F.col(C.MODEL_VERSION).desc()).first() if runs is not None else None
    if row is None:
        raise NoModelError(f"no model in {path}: run jobs.train first")
    return row[C.MODEL_VERSION]


def model_run(spark, lake: Lake, model_version: str) -> Row:
    path = lake.table(*MODEL_RUNS)
    runs = tables.read_if_exists(spark, path)
    row = runs.where(F.col(C.MODEL_VERSION) == model_version).first() if runs is not None else None
    if row is None:
        raise NoModelError(f"model version {model_version!r} is not in {path}")
    return row


def run(spark, args) -> dict:
    started = time.time()
    lake = Lake(args.lake)
    gold_path = lake.table("gold", "training")
    if not tables.exists(spark, gold_path):
        raise NoModelError(f"no training table at {gold_path}: run jobs.build_training first")
    training_version = tables.version(spark, gold_path)
    data = tables.read(spark, gold_path, version=training_version)
    params = AlsParams(rank=args.rank, reg_param=args.reg_param, alpha=args.alpha, max_iter=args.max_iter,
                       seed=args.seed, num_blocks=args.num_blocks, implicit=training_mode(data.columns))
    model_version = args.model_version or new_model_version()
    model_dir = f"{lake.models}/{model_version}"

    trained = fit_als(data, params, checkpoint_dir=lake.checkpoints)
    counts = data.agg(F.countDistinct(C.USER_IDX).alias("users"), F.countDistinct(C.ITEM_IDX).alias("items"),
                      F.count(F.lit(1)).alias("rows")).first()
    lineage = {
        "model_version": model_version,
        "training_table": gold_path,
        "training_version": training_version,
        "code_version": code_version(),
        "users": counts["users"], "items": counts["items"], "rows": counts["rows"],
    }
    save_model(trained, model_dir,
               user_ids=data.select(C.USER_ID, C.USER_IDX).distinct(),
               item_ids=data.select(C.ITEM_ID, C.ITEM_IDX).distinct(), info=lineage)
    seconds = round(time.time() - started, 1)
    run_row = Row(
        model_version=model_version, created_at=dt.datetime.now(dt.timezone.utc), model_dir=model_dir,
        mode="implicit" if params.implicit else "explicit", params=json.dumps(asdict(params)),
        training_table=gold_path, training_version=training_version, code_version=lineage["code_version"],
        users=counts["users"], items=counts["items"], rows=counts["rows"], train_seconds=float(seconds),
        metrics="{}",
    )
    tables.append(spark.createDataFrame([run_row], schema=MODEL_RUNS_SCHEMA), lake.table(*MODEL_RUNS))

    summary = {**lineage, "mode": run_row["mode"], "params": asdict(params), "model_dir": model_dir, "seconds": seconds}
    print(f"train {model_version} ({run_row['mode']} ALS, rank {params.rank}, reg {params.reg_param}, "
          f"alpha {params.alpha}, {params.max_iter} iterations)  gold/training v{training_version}  {seconds} s")
    print(f"  users {counts['users']:,}  items {counts['items']:,}  rows {counts['rows']:,}  -> {model_dir}")
    print(json.dumps(summary, default=str), file=sys.stderr)
    return summary


MODEL_RUNS_SCHEMA = (
    "model_version string, created_at timestamp, model_dir string, mode string, params string, "
    "training_table string, training_version long, code_version string, users long, items long, rows long, "
    "train_seconds double, metrics string"
)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    spark = spark_from_args("recsys-train", args)
    try:
        run(spark, args)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
