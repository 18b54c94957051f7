"""Train ALS on gold/training and save a versioned model with its lineage.

    python -m jobs.train --lake ./lake --rank 32 --reg-param 0.1 --alpha 10 --max-iter 15 [--tune] [--no-evaluate]

Writes <lake>/models/<model_version>/ (ALS factors, the id maps used, params.json, report.html) and appends one
row to meta/model_runs (model version, params, training table version, code version, counts, metrics). The mode
(implicit or explicit) follows the training table: a `weight` column means implicit, a `rating` column explicit.

Unless ``--no-evaluate``, the model's offline metrics come first: gold/training is split per user
(``--eval-fraction`` held out, ``--seed``), ALS and the popularity baseline (explicit: the bias baseline) are fitted
on the rest and scored on the held-out pairs with the production top-N code; then the model that is saved is
fitted on all the data. ``--tune`` picks rank/regParam/alpha/maxIter by K-fold CV on the training part (fold
scores -> meta/tuning_results) before that, and the best configuration is refit on all the data.
"""
from __future__ import annotations

import datetime as dt
import html
import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/train.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from pyspark import StorageLevel
from pyspark.sql import Row
from pyspark.sql import functions as F

from jobs import tables
from jobs.cli import Lake, add_lake_arg, base_parser, spark_from_args
from models import als_blas
from models.als import AlsParams, blas_implementation, fit_als, save_model
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
    evaluation = parser.add_argument_group("offline evaluation")
    evaluation.add_argument("--no-evaluate", dest="evaluate", action="store_false",
                            help="skip the hold-out evaluation (no metrics, a report without them)")
    evaluation.add_argument("--eval-fraction", type=float, default=0.2, help="share of each user's pairs held out")
    evaluation.add_argument("--k", type=int, default=10, help="cut-off of the ranking metrics")
    from jobs.tune import add_tuning_args

    add_tuning_args(parser)
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


def offline_evaluation(spark, lake: Lake, data, params: AlsParams, args, *, model_version: str,
                       gold_path: str, training_version: int) -> tuple[AlsParams, dict | None]:
    """(params to train with, evaluation report or None): the hold-out protocol of models.evaluation, with tuning
    on the training part when --tune; fold scores are appended to meta/tuning_results."""
    from jobs.tune import TUNING_RESULTS, store_fold_scores, tune_test_folds, tuning_configs
    from models.evaluation import NotEnoughDataError, evaluate_explicit_holdout, evaluate_implicit
    from models.tuning import cross_validate

    configs = tuning_configs(args, implicit=params.implicit) if args.tune else None
    report = None
    common = dict(seed=params.seed, params=params, tune_configs=configs, tune_folds=args.tune_folds,
                  tune_test_folds=tune_test_folds(args),
                  parallelism=args.parallelism, checkpoint_dir=lake.checkpoints, metric=args.metric)
    try:
        if args.evaluate and params.implicit:
            report = evaluate_implicit(data, test_fraction=args.eval_fraction, k=args.k, **common)
        elif args.evaluate:
            report = evaluate_explicit_holdout(data, test_fraction=args.eval_fraction, **common)
    except NotEnoughDataError as exc:
        if configs:
            raise  # tuning was asked for explicitly: too little data is an error
        print(f"  offline evaluation skipped: {exc}", file=sys.stderr)
        return params, {"protocol": "skipped", "reason": str(exc)}
    if report is None and configs:
        result = cross_validate(data, configs, implicit=params.implicit, folds=args.tune_folds,
                                test_folds=common["tune_test_folds"], seed=params.seed,
                                k=args.k, metric=args.metric, checkpoint_dir=lake.checkpoints,
                                parallelism=args.parallelism, base_params=params)
        report = {"protocol": "tuning-only", "tuning": result.to_dict()}
    if report is not None and "tuning" in report:
        tuning = report["tuning"]
        store_fold_scores(spark, lake.table(*TUNING_RESULTS), tuning, run_id=model_version,
                          mode="implicit" if params.implicit else "explicit", source=gold_path,
                          source_version=training_version, model_version=model_version)
        best = tuning["best"]
        params = AlsParams(**{**asdict(params), **best})
    return params, report


def headline_metrics(report: dict | None) -> dict:
    """The numbers that go into meta/model_runs.metrics (the full report is in the model folder)."""
    if not report or report.get("protocol") == "tuning-only":
        return {}
    if report.get("protocol") == "skipped":
        return {"skipped": report["reason"]}
    if report["protocol"] == "implicit":
        k = report["k"]
        keys = [f"ndcg@{k}", f"precision@{k}", f"recall@{k}", f"map@{k}", f"hit_rate@{k}", "coverage",
                "users_evaluated", "users_without_recs"]
        return {"protocol": "implicit", "split": report["split"],
                **{name: {key: report[name][key] for key in keys} for name in ("als", "popularity")}}
    return {"protocol": "explicit", "als": {k: report["als"][k] for k in ("rmse", "mae")},
            "bias": {k: report["bias"][k] for k in ("rmse", "mae")}}


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

    evaluate = getattr(args, "evaluate", False) or getattr(args, "tune", False)
    report = None
    if evaluate:
        data = data.persist(StorageLevel.MEMORY_AND_DISK)
        params, report = offline_evaluation(spark, lake, data, params, args, model_version=model_version,
                                            gold_path=gold_path, training_version=training_version)
    trained = fit_als(data, params, checkpoint_dir=lake.checkpoints)
    counts = data.agg(F.countDistinct(C.USER_IDX).alias("users"), F.countDistinct(C.ITEM_IDX).alias("items"),
                      F.count(F.lit(1)).alias("rows")).first()
    metrics = headline_metrics(report)
    lineage = {
        "model_version": model_version,
        "training_table": gold_path,
        "training_version": training_version,
        "code_version": code_version(),
        "users": counts["users"], "items": counts["items"], "rows": counts["rows"],
        "blas": blas_implementation(spark),
        "blas_library": als_blas.loaded_library(spark) or "libblas.so.3",
        "lapack_library": als_blas.loaded_lapack_library(spark) or "liblapack.so.3",
        "metrics": metrics,
    }
    save_model(trained, model_dir,
               user_ids=data.select(C.USER_ID, C.USER_IDX).distinct(),
               item_ids=data.select(C.ITEM_ID, C.ITEM_IDX).distinct(), info=lineage)
    write_model_report(spark, model_dir, report, lineage=lineage, params=params)
    seconds = round(time.time() - started, 1)
    run_row = Row(
        model_version=model_version, created_at=dt.datetime.now(dt.timezone.utc), model_dir=model_dir,
        mode="implicit" if params.implicit else "explicit", params=json.dumps(asdict(params)),
        training_table=gold_path, training_version=training_version, code_version=lineage["code_version"],
        users=counts["users"], items=counts["items"], rows=counts["rows"], train_seconds=float(seconds),
        metrics=json.dumps(metrics, default=str),
    )
    tables.append(tables.one_row(spark, run_row, MODEL_RUNS_SCHEMA), lake.table(*MODEL_RUNS))
    if evaluate:
        data.unpersist()

    summary = {**lineage, "mode": run_row["mode"], "params": asdict(params), "model_dir": model_dir, "seconds": seconds}
    print(f"train {model_version} ({run_row['mode']} ALS, rank {params.rank}, reg {params.reg_param}, "
          f"alpha {params.alpha}, {params.max_iter} iterations)  gold/training v{training_version}  {seconds} s")
    print(f"  users {counts['users']:,}  items {counts['items']:,}  rows {counts['rows']:,}  -> {model_dir}")
    if metrics.get("protocol") == "implicit":
        k = args.k
        print(f"  hold-out nDCG@{k}: ALS {metrics['als'][f'ndcg@{k}']:.4f}, popularity "
              f"{metrics['popularity'][f'ndcg@{k}']:.4f}")
    elif metrics.get("protocol") == "explicit":
        print(f"  hold-out RMSE: ALS {metrics['als']['rmse']:.4f}, bias baseline {metrics['bias']['rmse']:.4f}")
    print(json.dumps(summary, default=str), file=sys.stderr)
    return summary


def write_model_report(spark, model_dir: str, report: dict | None, *, lineage: dict, params: AlsParams) -> None:
    """model_dir/report.html: the offline evaluation (if any) with the model's lineage."""
    from models.als import _write_text
    from models.report import report_html

    title = f"Model {lineage['model_version']}"
    if report and report.get("protocol") in ("implicit", "explicit"):
        text = report_html(report, title=title)
    else:
        reason = (report or {}).get("reason", "--no-evaluate")
        text = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
                f"<h1>{title}</h1><p>No offline evaluation for this model: {html.escape(reason)}.</p>"
                "</body></html>")
    lineage_html = ("<h2>Lineage</h2><pre>" + json.dumps({**lineage, "params": asdict(params)}, indent=2, default=str)
                    .replace("&", "&amp;").replace("<", "&lt;") + "</pre>")
    text = text.replace("</body></html>", lineage_html + "</body></html>") if "</body></html>" in text else text + lineage_html
    _write_text(spark, f"{model_dir}/report.html", text)


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
