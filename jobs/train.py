"""Train ALS on gold/training and save a versioned model with its lineage.

    python -m jobs.train --lake ./lake --rank 32 --reg-param 0.1 --alpha 10 --max-iter 15 [--tune] [--no-evaluate]

Writes <lake>/models/<model_version>/ (a models.bundle: factors, id maps, params.json; and report.html) and appends one
row to meta/model_runs (model version, params, training table version, code version, counts, metrics). The mode
(implicit or explicit) follows the training table: a `weight` column means implicit, a `rating` column explicit.

Unless ``--no-evaluate``, the model's offline metrics come first: gold/training is split per user
(``--eval-fraction`` held out, ``--seed``), ALS and the popularity baseline (explicit: the bias baseline) are fitted
on the rest and scored on the held-out pairs with the production top-N code; then the model that is saved is
fitted on all the data. ``--tune`` picks rank/regParam/alpha/maxIter by K-fold CV on the training part (fold
scores -> meta/tuning_results) before that, and the best configuration is refit on all the data.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/train.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from flow.train import TrainOptions, train
from jobs.cli import add_als_args, add_tuning_args, als_params, lake_parser, print_json, run_job, tune_options
from lake.registry import Lake


def build_parser():
    parser = lake_parser(__doc__)
    add_als_args(parser)
    parser.add_argument("--model-version", default=TrainOptions.model_version,
                        help="name of the new model (default: UTC time, e.g. 20261123T010203Z)")
    evaluation = parser.add_argument_group("offline evaluation")
    evaluation.add_argument("--no-evaluate", dest="evaluate", action="store_false",
                            help="skip the hold-out evaluation (no metrics, a report without them)")
    evaluation.add_argument("--eval-fraction", type=float, default=TrainOptions.eval_fraction,
                            help="share of each user's pairs held out")
    evaluation.add_argument("--k", type=int, default=TrainOptions.k, help="cut-off of the ranking metrics")
    add_tuning_args(parser)
    return parser


def main(argv=None) -> int:
    return run_job("recsys-train", build_parser, run, argv)


def options(args) -> TrainOptions:
    return TrainOptions(als=als_params(args), model_version=args.model_version, evaluate=args.evaluate,
                        eval_fraction=args.eval_fraction, k=args.k, tune=tune_options(args) if args.tune else None)


def run(spark, args) -> dict:
    summary = train(spark, Lake(args.lake), options(args))
    params, metrics = summary["params"], summary["metrics"]
    print(f"train {summary['model_version']} ({summary['mode']} ALS, rank {params['rank']}, reg {params['reg_param']}, "
          f"alpha {params['alpha']}, {params['max_iter']} iterations)  gold/training v{summary['training_version']}  "
          f"{summary['seconds']} s")
    print(f"  users {summary['users']:,}  items {summary['items']:,}  rows {summary['rows']:,}  -> {summary['model_dir']}")
    if metrics.get("protocol") == "implicit":
        k = args.k
        print(f"  hold-out nDCG@{k}: ALS {metrics['als'][f'ndcg@{k}']:.4f}, popularity "
              f"{metrics['popularity'][f'ndcg@{k}']:.4f}")
    elif metrics.get("protocol") == "explicit":
        print(f"  hold-out RMSE: ALS {metrics['als']['rmse']:.4f}, bias baseline {metrics['bias']['rmse']:.4f}")
    return print_json(summary)


if __name__ == "__main__":
    sys.exit(main())
