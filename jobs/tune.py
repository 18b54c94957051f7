"""Cross-validated ALS hyper-parameters on gold/training: every configuration's fold scores go to a Delta table.

    python -m jobs.tune --lake ./lake [--search grid|random] [--ranks 32,64 --reg-params 0.01,0.1,1 ...]

Implicit training tables (a ``weight`` column) are tuned on nDCG@k (``--metric`` for another ranking metric),
explicit ones (``rating``) on RMSE. Folds are per user (each user's pairs dealt to ``--tune-folds`` folds),
deterministic for ``--seed``. Rows go to meta/tuning_results (tuning_run_id, config, fold, score, all metrics,
fit time, is_best); the summary names the best configuration. ``jobs.train --tune`` runs the same search and
refits the best configuration on all the data.
"""
from __future__ import annotations

import datetime as dt
import json
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/tune.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from jobs import tables
from jobs.cli import Lake, add_lake_arg, base_parser, spark_from_args
from models.als import AlsParams
from models.tuning import (DEFAULT_EXPLICIT_SPACE, DEFAULT_IMPLICIT_SPACE, DEFAULT_TUNE_FOLDS, DEFAULT_TUNE_TEST_FOLDS,
                           TUNING_TABLE_SCHEMA, SearchSpace, TuningResult, cross_validate, fold_rows, grid_configs,
                           random_configs)

TUNING_RESULTS = ("meta", "tuning_results")


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def add_tuning_args(parser, *, with_flag: bool = True) -> None:
    """The search flags shared by jobs.tune, jobs.train --tune and jobs.evaluate --tune."""
    tune = parser.add_argument_group("tuning")
    if with_flag:
        tune.add_argument("--tune", action="store_true", help="choose ALS params by K-fold CV first")
    tune.add_argument("--tune-folds", type=int, default=DEFAULT_TUNE_FOLDS,
                      help="folds of the tuning CV, dealt per user (default %(default)s)")
    tune.add_argument("--tune-test-folds", type=int, default=None,
                      help=f"how many of those folds are held out and scored in turn (default: at most "
                           f"{DEFAULT_TUNE_TEST_FOLDS}); with 10 folds every fit trains on 90%% of the data, which "
                           f"matters as the best rank grows with the data")
    tune.add_argument("--search", choices=("grid", "random"), default="grid", help="grid or random search")
    tune.add_argument("--n-configs", type=int, default=8, help="random search: configurations to draw")
    tune.add_argument("--ranks", type=_ints, default=None, help="comma list (default: a small built-in grid)")
    tune.add_argument("--reg-params", type=_floats, default=None,
                      help="comma list; random search draws log-uniform between min and max. Spark scales "
                           "regParam per user/item count (ALS-WR): search a wide log range")
    tune.add_argument("--alphas", type=_floats, default=None, help="implicit only; comma list or random range")
    tune.add_argument("--max-iters", type=_ints, default=None, help="comma list")
    tune.add_argument("--parallelism", type=int, default=1,
                      help="fits run at once (raise on a cluster with idle executors; 1 is best on 2 cores)")
    tune.add_argument("--metric", default=None, help="selection metric (default: ndcg@k implicit, rmse explicit)")


def tune_test_folds(args) -> int:
    """The folds scored: --tune-test-folds, or at most DEFAULT_TUNE_TEST_FOLDS of --tune-folds."""
    return args.tune_test_folds or min(DEFAULT_TUNE_TEST_FOLDS, args.tune_folds)


def tuning_configs(args, *, implicit: bool) -> list[dict]:
    """The configurations the flags describe (the built-in default space where a list is not given)."""
    default = DEFAULT_IMPLICIT_SPACE if implicit else DEFAULT_EXPLICIT_SPACE
    space = SearchSpace(rank=args.ranks or default.rank, reg_param=args.reg_params or default.reg_param,
                        alpha=args.alphas or default.alpha, max_iter=args.max_iters or default.max_iter)
    if args.search == "random":
        return random_configs(space, n=args.n_configs, seed=args.seed, implicit=implicit)
    return grid_configs(space, implicit=implicit)


def store_fold_scores(spark, path: str, tuning: dict, *, run_id: str, mode: str, source: str,
                      source_version: int | None, model_version: str | None = None) -> None:
    """Append one row per (configuration, fold) to the Delta table at ``path``."""
    extra = {"source": source, "source_version": source_version, "model_version": model_version,
             "created_at": dt.datetime.now(dt.timezone.utc)}
    rows = fold_rows(tuning, run_id=run_id, mode=mode, extra=extra)
    tables.append(spark.createDataFrame(rows, schema=TUNING_TABLE_SCHEMA), path)


def print_tuning(result: TuningResult) -> None:
    print(f"\n{'id':>3} {'rank':>5} {'reg':>9} {'alpha':>7} {'iter':>5} {result.metric + ' mean':>14} {'sd':>8} {'fit s':>7}")
    for row in result.summary():
        mark = "  <- best" if row["config_id"] == result.best_config_id else ""
        print(f"{row['config_id']:>3} {row['rank']:>5} {row['reg_param']:>9g} {row['alpha']:>7g} {row['max_iter']:>5} "
              f"{row['mean']:>14.4f} {row['std']:>8.4f} {row['fit_seconds']:>7.1f}{mark}")


def build_parser():
    parser = base_parser(__doc__.split("\n\n")[0])
    add_lake_arg(parser)
    add_tuning_args(parser, with_flag=False)
    parser.add_argument("--k", type=int, default=10, help="cut-off of the ranking metrics (implicit)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the folds and of ALS")
    parser.add_argument("--num-blocks", type=int, default=None, help="ALS user/item blocks")
    return parser


def run(spark, args) -> dict:
    from jobs.train import training_mode

    started = time.time()
    lake = Lake(args.lake)
    gold_path = lake.table("gold", "training")
    if not tables.exists(spark, gold_path):
        raise FileNotFoundError(f"no training table at {gold_path}: run jobs.build_training first")
    version = tables.version(spark, gold_path)
    data = tables.read(spark, gold_path, version=version)
    implicit = training_mode(data.columns)
    configs = tuning_configs(args, implicit=implicit)
    test_folds = tune_test_folds(args)
    print(f"tune gold/training v{version} ({'implicit' if implicit else 'explicit'}): {len(configs)} configurations "
          f"x {test_folds} of {args.tune_folds} folds", flush=True)
    result = cross_validate(data, configs, implicit=implicit, folds=args.tune_folds,
                            test_folds=test_folds, seed=args.seed, k=args.k,
                            metric=args.metric, checkpoint_dir=lake.checkpoints, parallelism=args.parallelism,
                            base_params=AlsParams(num_blocks=args.num_blocks))
    run_id = uuid.uuid4().hex
    path = lake.table(*TUNING_RESULTS)
    store_fold_scores(spark, path, result.to_dict(), run_id=run_id, mode="implicit" if implicit else "explicit",
                      source=gold_path, source_version=version)
    print_tuning(result)
    summary = {"tuning_run_id": run_id, "training_version": version, "metric": result.metric,
               "best": result.best_config, "best_score": result.summary()[result.best_config_id]["mean"],
               "configs": len(configs), "folds": args.tune_folds,
               "test_folds": test_folds, "table": path,
               "seconds": round(time.time() - started, 1)}
    print(f"best {summary['best']} ({result.metric} {summary['best_score']:.4f}); fold scores -> {path}")
    print(json.dumps(summary, default=str), file=sys.stderr)
    return summary


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    spark = spark_from_args("recsys-tune", args)
    try:
        run(spark, args)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
