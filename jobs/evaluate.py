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
as jobs.ingest; rows that cannot be used are counted by reason in the JSON, never silently dropped. Also
``pairs`` and ``pairs-parquet``: user, item and an optional weight (a play or purchase count), with
``--weight-scaling log1p`` for counts. The weighting flags (``--event-types``, ``--rating-max``,
``--event-weights``, ``--weight-scaling``) are the ones jobs.ingest and jobs.nightly take.

When more than ``--max-rejected-share`` of the rows (default half) are rejected, or no pair is left, the job
exits non-zero before fitting anything, with the top reasons, the first row of each and the columns the format
expects: it never reports metrics on the remnant of a misread file.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/evaluate.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from flow.evaluate import EXPLICIT_MODELS, EvaluateOptions, evaluate
from jobs.cli import (add_als_args, add_input_args, add_rejection_arg, add_tuning_args, add_weighting_args, als_params,
                      base_parser, run_job, tune_options)
from transforms.splits import SPLIT_KINDS


def build_parser():
    parser = base_parser(__doc__.split("\n\n")[0])
    add_input_args(parser, input_help="a file, a folder or a glob")
    parser.add_argument("--split", choices=SPLIT_KINDS, default=EvaluateOptions.split,
                        help="user-random: a random fraction of each user's pairs; user-chrono: each user's "
                             "latest; time-cut: everything after a global time cut")
    parser.add_argument("--test-fraction", type=float, default=EvaluateOptions.test_fraction,
                        help="share of pairs held out for test")
    parser.add_argument("--k", type=int, default=EvaluateOptions.k, help="cut-off of the ranking metrics")
    parser.add_argument("--seed", type=int, default=EvaluateOptions.seed, help="seed of the split, the folds and ALS")
    parser.add_argument("--explicit", action="store_true", help="rating prediction (RMSE/MAE) instead of ranking")
    parser.add_argument("--folds", type=int, default=EvaluateOptions.folds, help="explicit: folds of the reported CV")
    parser.add_argument("--explicit-model", choices=EXPLICIT_MODELS, default=EvaluateOptions.explicit_model,
                        help="explicit: plain ALS, or ALS fitted on the residuals of the bias baseline "
                             "(mean + user + item biases + factors)")
    parser.add_argument("--min-rating", type=float, default=EvaluateOptions.min_rating,
                        help="implicit: ignore ratings below this value (default: every rating counts)")
    parser.add_argument("--min-interactions", type=int, default=EvaluateOptions.min_interactions,
                        help="users with fewer pairs stay in train only (counted in the report)")
    parser.add_argument("--output", required=True, help="where to write the metrics JSON")
    parser.add_argument("--report", default=None, help="also write an HTML report here")
    parser.add_argument("--tuning-table", default=None,
                        help="with --tune: append every configuration's fold scores to this Delta table")
    parser.add_argument("--checkpoint-dir", default=None, help="ALS checkpoints (default: a temporary folder)")
    add_weighting_args(parser)
    add_rejection_arg(parser)
    add_als_args(parser, title="ALS (without --tune)", with_seed=False)
    add_tuning_args(parser)
    return parser


def main(argv=None) -> int:
    return run_job("recsys-evaluate", build_parser, run, argv)


def options(args) -> EvaluateOptions:
    return EvaluateOptions(
        split=args.split, test_fraction=args.test_fraction, k=args.k, seed=args.seed, explicit=args.explicit,
        folds=args.folds, explicit_model=args.explicit_model, min_rating=args.min_rating,
        min_interactions=args.min_interactions, als=als_params(args), tune=tune_options(args) if args.tune else None,
        output=args.output, report=args.report, tuning_table=args.tuning_table, checkpoint_dir=args.checkpoint_dir,
        event_types=args.event_types, rating_max=args.rating_max, event_weights=args.event_weights,
        weight_scaling=args.weight_scaling, max_rejected_share=args.max_rejected_share)


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
    report = evaluate(spark, args.input, args.format, options(args))
    print_table(report)
    print(f"\nmetrics -> {args.output}" + (f", report -> {args.report}" if args.report else "")
          + f"  ({report['seconds']} s)")
    return report


if __name__ == "__main__":
    sys.exit(main())
