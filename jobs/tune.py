"""Cross-validated ALS hyper-parameters on gold/training: every configuration's fold scores go to a Delta table.

    python -m jobs.tune --lake ./lake [--search grid|random] [--ranks 32,64 --reg-params 0.01,0.1,1 ...]

Implicit training tables (a ``weight`` column) are tuned on nDCG@k (``--metric`` for another ranking metric),
explicit ones (``rating``) on RMSE. Folds are per user (each user's pairs dealt to ``--tune-folds`` folds),
deterministic for ``--seed``. Rows go to meta/tuning_results (tuning_run_id, config, fold, score, all metrics,
fit time, is_best); the summary names the best configuration. ``jobs.train --tune`` runs the same search and
refits the best configuration on all the data.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/tune.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from flow.tune import TuneRunOptions, tune
from jobs.cli import add_tuning_args, lake_parser, print_json, run_job, tune_options
from lake.registry import Lake


def build_parser():
    parser = lake_parser(__doc__)
    add_tuning_args(parser, with_flag=False)
    parser.add_argument("--k", type=int, default=TuneRunOptions.k, help="cut-off of the ranking metrics (implicit)")
    parser.add_argument("--seed", type=int, default=TuneRunOptions.seed, help="seed of the folds and of ALS")
    parser.add_argument("--num-blocks", type=int, default=TuneRunOptions.num_blocks, help="ALS user/item blocks")
    return parser


def main(argv=None) -> int:
    return run_job("recsys-tune", build_parser, run, argv)


def options(args) -> TuneRunOptions:
    return TuneRunOptions(search=tune_options(args), k=args.k, seed=args.seed, num_blocks=args.num_blocks)


def print_configurations(summary: dict) -> None:
    metric = summary["metric"]
    print(f"\n{'id':>3} {'rank':>5} {'reg':>9} {'alpha':>7} {'iter':>5} {metric + ' mean':>14} {'sd':>8} {'fit s':>7}")
    for row in summary["configurations"]:
        mark = "  <- best" if row["config_id"] == summary["best_config_id"] else ""
        print(f"{row['config_id']:>3} {row['rank']:>5} {row['reg_param']:>9g} {row['alpha']:>7g} {row['max_iter']:>5} "
              f"{row['mean']:>14.4f} {row['std']:>8.4f} {row['fit_seconds']:>7.1f}{mark}")


def run(spark, args) -> dict:
    summary = tune(spark, Lake(args.lake), options(args))
    print_configurations(summary)
    print(f"best {summary['best']} ({summary['metric']} {summary['best_score']:.4f}); fold scores -> {summary['table']}")
    return print_json(summary)


if __name__ == "__main__":
    sys.exit(main())
