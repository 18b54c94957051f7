"""Offline evaluation of ALS against baselines on a ratings or events file, with an honest protocol.

    python -m jobs.evaluate --input ratings.csv --format movielens --split user-random --test-fraction 0.25 \\
        --k 10 --seed 42 [--tune] [--explicit] --output metrics.json

Reads the file exactly as ingest does (transforms.parse), builds one row per (user, item) (implicit: summed
event weights, ratings count with their value; explicit: the latest rating), splits it deterministically and
scores every model through the production top-N code (seen items excluded). No Delta lake is needed.

Implicit (default): every held-out pair is relevant; the JSON has, for ``als`` and ``popularity``,
``ndcg@K``, ``precision@K``, ``recall@K``, ``map@K``, ``hit_rate@K``, ``coverage`` and the counts behind them,
plus the chosen ALS params (``als_params``). ``--tune`` picks them by K-fold CV (``--tune-folds``) on the
training part only. Explicit (``--explicit``): ``rmse`` and ``mae`` of explicit ALS from ``--folds``-fold CV,
beside the bias-only baseline (global mean + user and item biases) scored on the same rows.

``--format events``: the project's event log, CSV lines ``user_id,item_id,event_type,event_ts[,value]`` (header
optional; ``event_ts`` ISO-8601 or unix seconds; ``value`` is the rating of ``rating`` events); also
``events-json`` and ``events-parquet`` (see transforms.parse). Files are listed, read and parsed by the same code
as jobs.ingest; rows that cannot be used are counted by reason in the JSON, never silently dropped.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/evaluate.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.cli import base_parser, spark_from_args
from jobs.tune import add_tuning_args, store_fold_scores, tune_test_folds, tuning_configs
from models.als import AlsParams
from models.evaluation import evaluate_explicit, evaluate_implicit
from transforms import columns as C
from transforms import ids, parse, training
from transforms.splits import SPLIT_KINDS

FORMATS = sorted(parse.FORMATS)
FUTURE_TOLERANCE_S = 24 * 3600


def build_parser():
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="a file, a folder or a glob")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="; ".join(f"{f.name}: {f.description}" for f in parse.FORMATS.values()))
    parser.add_argument("--split", choices=SPLIT_KINDS, default="user-random",
                        help="user-random: a random fraction of each user's pairs; user-chrono: each user's "
                             "latest; time-cut: everything after a global time cut")
    parser.add_argument("--test-fraction", type=float, default=0.25, help="share of pairs held out for test")
    parser.add_argument("--k", type=int, default=10, help="cut-off of the ranking metrics")
    parser.add_argument("--seed", type=int, default=42, help="seed of the split, the folds and ALS")
    parser.add_argument("--explicit", action="store_true", help="rating prediction (RMSE/MAE) instead of ranking")
    parser.add_argument("--folds", type=int, default=5, help="explicit: folds of the reported CV")
    parser.add_argument("--explicit-model", choices=("als", "als_bias"), default="als_bias",
                        help="explicit: plain ALS, or ALS fitted on the residuals of the bias baseline "
                             "(mean + user + item biases + factors)")
    parser.add_argument("--min-rating", type=float, default=None,
                        help="implicit: ignore ratings below this value (default: every rating counts)")
    parser.add_argument("--min-interactions", type=int, default=2,
                        help="users with fewer pairs stay in train only (counted in the report)")
    parser.add_argument("--output", required=True, help="where to write the metrics JSON")
    parser.add_argument("--report", default=None, help="also write an HTML report here")
    parser.add_argument("--tuning-table", default=None,
                        help="with --tune: append every configuration's fold scores to this Delta table")
    parser.add_argument("--checkpoint-dir", default=None, help="ALS checkpoints (default: a temporary folder)")
    als = parser.add_argument_group("ALS (without --tune)")
    defaults = AlsParams()
    als.add_argument("--rank", type=int, default=defaults.rank)
    als.add_argument("--reg-param", type=float, default=defaults.reg_param)
    als.add_argument("--alpha", type=float, default=defaults.alpha)
    als.add_argument("--max-iter", type=int, default=defaults.max_iter)
    als.add_argument("--num-blocks", type=int, default=None, help="user/item blocks (default: Spark's parallelism)")
    add_tuning_args(parser)
    return parser


def read_input(spark, path: str, fmt_name: str) -> tuple[DataFrame, dict]:
    """(valid events, row counts by reason): the same file listing, reader and parser as jobs.ingest."""
    from jobs.ingest import list_input_files, read_rows

    fmt = parse.get_format(fmt_name)
    lines = read_rows(spark, list_input_files(spark, path), fmt)
    parsed = parse.parse_lines(lines, fmt, max_event_ts_seconds=int(time.time()) + FUTURE_TOLERANCE_S)
    parsed = parsed.persist(StorageLevel.MEMORY_AND_DISK)
    reasons = {str(r[C.REASON]): r["count"] for r in parsed.groupBy(C.REASON).count().collect()}
    return parse.valid_events(parsed), reasons


def build_pairs(events: DataFrame, *, explicit: bool, min_rating: float | None) -> DataFrame:
    """One row per (user, item) with dense ids: (user_id, item_id, user_idx, item_idx, weight|rating, ...)."""
    pairs = training.explicit_training(events) if explicit else training.implicit_training(events, min_rating=min_rating)
    pairs = pairs.persist(StorageLevel.MEMORY_AND_DISK)
    user_map = ids.new_id_rows(None, pairs, id_col=C.USER_ID, idx_col=C.USER_IDX).cache()
    item_map = ids.new_id_rows(None, pairs, id_col=C.ITEM_ID, idx_col=C.ITEM_IDX).cache()
    with_ids = (pairs.join(F.broadcast(user_map) if user_map.count() < 1_000_000 else user_map, on=C.USER_ID)
                .join(item_map, on=C.ITEM_ID))
    return with_ids.persist(StorageLevel.MEMORY_AND_DISK)


def print_table(report: dict) -> None:
    if report["protocol"] == "implicit":
        k = report["k"]
        keys = [f"ndcg@{k}", f"precision@{k}", f"recall@{k}", f"map@{k}", f"hit_rate@{k}", "coverage"]
        print(f"\n{'model':<12}" + "".join(f"{key:>14}" for key in keys))
        for name in ("als", "popularity"):
            print(f"{name:<12}" + "".join(f"{report[name][key]:>14.4f}" for key in keys))
        a = report["als"]
        s = report["split"]
        print(f"\nusers evaluated {a['users_evaluated']:,} (of {s['users']:,}; {s.get('train_only_users') or 0:,} "
              f"with too few pairs kept in train only, {s.get('cold_users') or 0:,} cold); ALS gave no list to "
              f"{a['users_without_recs']:,}; relevant pairs {a['relevant_pairs']:,}; catalogue "
              f"{a['catalogue_size']:,} items")
        print(f"ALS params: {report['als_params']}")
    else:
        print(f"\n{'model':<12}{'rmse':>10}{'± std':>10}{'mae':>10}   ({report['cv']['folds']}-fold CV)")
        for name in ("als", "bias"):
            r = report[name]
            label = r.get("model", name)
            print(f"{label:<12}{r['rmse']:>10.4f}{r['rmse_std']:>10.4f}{r['mae']:>10.4f}")
        if "holdout" in report:
            h = report["holdout"]
            print(f"hold-out (never seen by tuning): ALS rmse {h['als']['rmse']:.4f}, bias rmse {h['bias']['rmse']:.4f}")
        print(f"ALS params: {report['als_params']}")


def run(spark, args) -> dict:
    started = time.time()
    checkpoint_dir = args.checkpoint_dir or tempfile.mkdtemp(prefix="recsys-evaluate-ckpt-")
    try:
        events, reasons = read_input(spark, args.input, args.format)
        pairs = build_pairs(events, explicit=args.explicit, min_rating=args.min_rating)
        counts = pairs.agg(F.count(F.lit(1)).alias("pairs"), F.countDistinct(C.USER_IDX).alias("users"),
                           F.countDistinct(C.ITEM_IDX).alias("items")).first()
        if not counts["pairs"]:
            raise ValueError(f"{args.input} ({args.format}) holds no usable pair; rows by reason: {reasons}")
        print(f"evaluate {args.input} ({args.format}): {counts['pairs']:,} pairs, {counts['users']:,} users, "
              f"{counts['items']:,} items; rows by reason {reasons}", flush=True)
        params = AlsParams(rank=args.rank, reg_param=args.reg_param, alpha=args.alpha, max_iter=args.max_iter,
                           seed=args.seed, num_blocks=args.num_blocks, implicit=not args.explicit)
        configs = tuning_configs(args, implicit=not args.explicit) if args.tune else None
        common = dict(split=args.split, test_fraction=args.test_fraction, seed=args.seed, params=params,
                      tune_configs=configs, tune_folds=args.tune_folds, tune_test_folds=tune_test_folds(args),
                      parallelism=args.parallelism,
                      checkpoint_dir=checkpoint_dir, min_interactions=args.min_interactions, metric=args.metric)
        if args.explicit:
            report = evaluate_explicit(pairs, folds=args.folds, explicit_model=args.explicit_model, **common)
        else:
            report = evaluate_implicit(pairs, k=args.k, **common)
        report["input"] = {"path": args.input, "format": args.format, "rows_by_reason": reasons,
                           "pairs": counts["pairs"], "users": counts["users"], "items": counts["items"]}
        report["seconds"] = round(time.time() - started, 1)
        if args.tune and args.tuning_table:
            run_id = uuid.uuid4().hex
            store_fold_scores(spark, args.tuning_table, report["tuning"], run_id=run_id, mode=report["protocol"],
                              source=args.input, source_version=None)
            report["tuning_run_id"] = run_id
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2, default=str))
        if args.report:
            from models.report import write_evaluation_report

            write_evaluation_report(report, args.report)
        print_table(report)
        print(f"\nmetrics -> {args.output}" + (f", report -> {args.report}" if args.report else "")
              + f"  ({report['seconds']} s)")
        pairs.unpersist()
        return report
    finally:
        if not args.checkpoint_dir:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    spark = spark_from_args("recsys-evaluate", args)
    try:
        run(spark, args)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
