"""Train ALS on gold/training and save a versioned model with its lineage.

    summary = train(spark, Lake("./lake"), TrainOptions(als=AlsParams(rank=32), tune=TuneOptions()))

Writes <lake>/models/<model_version>/ (a models.bundle: factors, id maps, params.json; and report.html) and records
the run in meta/model_runs (flow.runs): a row ``started`` before anything is written, then ``succeeded`` with the
model version, params, training table version, code version, counts and metrics, or ``failed`` with the error;
only a version whose latest row succeeded is a model (flow.model_runs). The mode
(implicit or explicit) follows the training table: a `weight` column means implicit, a `rating` column explicit.

Unless ``evaluate`` is off, the model's offline metrics come first: gold/training is split per user
(``eval_fraction`` held out, the ALS seed), ALS and the popularity baseline (explicit: the bias baseline) are
fitted on the rest and scored on the held-out pairs with the production top-N code; then the model that is saved
is fitted on all the data. ``tune`` picks rank/regParam/alpha/maxIter by K-fold CV on the training part (fold
scores -> meta/tuning_results) before that, and the best configuration is refit on all the data.
"""
from __future__ import annotations

import datetime as dt
import html
import json
import logging
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from flow import runs
from flow.model_runs import checked_version, new_model_version
from flow.training_table import read_training, training_mode
from flow.tune import TuneOptions, protocol_tuning, store_fold_scores
from lake import fs, tables
from lake.registry import Lake
from models import als_blas
from models.als import AlsParams, AlsRecommender, blas_implementation
from models.bundle import save_bundle
from models.evaluation import NotEnoughDataError, evaluate_explicit_holdout, evaluate_implicit
from models.report import report_html
from models.tuning import cross_validate
from transforms import columns as C

log = logging.getLogger(__name__)

MODEL_RUNS_SCHEMA = (
    "model_version string, created_at timestamp, model_dir string, mode string, params string, "
    "training_table string, training_version long, code_version string, users long, items long, rows long, "
    "train_seconds double, metrics string"
)


@dataclass(frozen=True, kw_only=True)
class TrainOptions:
    als: AlsParams = field(default_factory=AlsParams)  # ``implicit`` is ignored: the training table decides
    model_version: str | None = None  # name of the new model (None: the UTC time, e.g. 20261123T010203Z)
    evaluate: bool = True  # the hold-out evaluation first (off: no metrics, a report without them)
    eval_fraction: float = 0.2  # share of each user's pairs held out
    k: int = 10  # cut-off of the ranking metrics
    tune: TuneOptions | None = None  # choose the ALS params by K-fold CV first (None: no tuning)


def code_version() -> str:
    """The git commit of the code, when it runs from a checkout (else 'unknown')."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parents[1])
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def offline_evaluation(spark: SparkSession, lake: Lake, data: DataFrame, params: AlsParams, options: TrainOptions,
                       *, model_version: str, training_version: int) -> tuple[AlsParams, dict | None]:
    """(params to train with, evaluation report or None): the hold-out protocol of models.evaluation, with tuning
    on the training part when ``options.tune``; fold scores are appended to meta/tuning_results."""
    tuning = protocol_tuning(options.tune, implicit=params.implicit, seed=params.seed)
    configs = tuning["tune_configs"]
    common = dict(seed=params.seed, params=params, checkpoint_dir=lake.checkpoints, **tuning)
    report = None
    try:
        if options.evaluate and params.implicit:
            report = evaluate_implicit(data, test_fraction=options.eval_fraction, k=options.k, **common)
        elif options.evaluate:
            report = evaluate_explicit_holdout(data, test_fraction=options.eval_fraction, **common)
    except NotEnoughDataError as exc:
        if configs:
            raise  # tuning was asked for explicitly: too little data is an error
        print(f"  offline evaluation skipped: {exc}", file=sys.stderr)
        return params, {"protocol": "skipped", "reason": str(exc)}
    if report is None and configs:
        result = cross_validate(data, configs, implicit=params.implicit, folds=tuning["tune_folds"],
                                test_folds=tuning["tune_test_folds"], seed=params.seed, k=options.k,
                                metric=tuning["metric"], checkpoint_dir=lake.checkpoints,
                                parallelism=tuning["parallelism"], base_params=params)
        report = {"protocol": "tuning-only", "tuning": result.to_dict()}
    if report is not None and "tuning" in report:
        tuning = report["tuning"]
        store_fold_scores(spark, lake.tuning_results, tuning, run_id=model_version,
                          mode="implicit" if params.implicit else "explicit", source=lake.training,
                          source_version=training_version, model_version=model_version)
        params = replace(params, **tuning["best"])
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


def train(spark: SparkSession, lake: Lake, options: TrainOptions) -> dict:
    """Fit ALS on gold/training (after the offline evaluation and tuning the options ask for), save the model and
    record it in meta/model_runs (``started`` first, then ``succeeded`` with the lineage or ``failed`` with the
    error); returns the summary: the lineage, mode, params, model folder and seconds."""
    started = time.time()
    training_version, data = read_training(spark, lake)
    params = replace(options.als, implicit=training_mode(data.columns))
    model_version = checked_version(options.model_version) if options.model_version else new_model_version()
    lineage = {"model_version": model_version, "training_table": lake.training, "training_version": training_version}
    _record_run(spark, lake, lineage, params, None, runs.STARTED)
    # params and lineage are read when the run ends: the tuned params and the full lineage
    with runs.finished(lambda state, error: _record_run(spark, lake, lineage, params, round(time.time() - started, 1),
                                                        state, error)):
        evaluate = options.evaluate or options.tune is not None
        report = None
        if evaluate:
            data = data.persist(StorageLevel.MEMORY_AND_DISK)
            params, report = offline_evaluation(spark, lake, data, params, options, model_version=model_version,
                                                training_version=training_version)
        lineage.update(_fit_and_save(spark, lake, data, params, report, model_version=model_version,
                                     training_version=training_version))
        if evaluate:
            data.unpersist()
    return {**lineage, "mode": "implicit" if params.implicit else "explicit", "params": asdict(params),
            "model_dir": _model_dir(lake, model_version), "seconds": round(time.time() - started, 1)}


def _model_dir(lake: Lake, model_version: str) -> str:
    return f"{lake.models}/{model_version}"


def _executor_blas(spark: SparkSession) -> dict | None:
    """Per executor host of a cluster, the ALS BLAS it has (models.als_blas.executor_libraries); None in local
    mode, where the executors are the driver's JVM. A host without the library named to it is logged."""
    if spark.sparkContext.master.startswith("local"):
        return None
    path = als_blas.executor_option_path(spark)
    hosts = als_blas.executor_libraries(spark, path)
    lacking = sorted(host for host, found in hosts.items() if path and not found["library"])
    if lacking:
        log.warning("executors on %s lack %s: their ALS runs on libblas.so.3 alone (or Java BLAS)", lacking, path)
    return hosts


def _fit_and_save(spark: SparkSession, lake: Lake, data: DataFrame, params: AlsParams, report: dict | None, *,
                  model_version: str, training_version: int) -> dict:
    """Fit on all of ``data``, save the model with its lineage and report; returns the lineage."""
    model = AlsRecommender(params=params, checkpoint_dir=lake.checkpoints).fit(data)
    counts = data.agg(F.countDistinct(C.USER_IDX).alias("users"), F.countDistinct(C.ITEM_IDX).alias("items"),
                      F.count(F.lit(1)).alias("rows")).first()
    lineage = {
        "model_version": model_version,
        "training_table": lake.training,
        "training_version": training_version,
        "code_version": code_version(),
        "users": counts["users"], "items": counts["items"], "rows": counts["rows"],
        "blas": blas_implementation(spark),
        "blas_library": als_blas.loaded_library(spark) or "libblas.so.3",
        "lapack_library": als_blas.loaded_lapack_library(spark) or "liblapack.so.3",
        "executor_blas": _executor_blas(spark),
        "metrics": headline_metrics(report),
    }
    model_dir = _model_dir(lake, model_version)
    save_bundle(model, model_dir, user_ids=data.select(C.USER_ID, C.USER_IDX).distinct(),
                item_ids=data.select(C.ITEM_ID, C.ITEM_IDX).distinct(), info={"params": asdict(params), **lineage})
    write_model_report(spark, model_dir, report, lineage=lineage, params=params)
    return lineage


def _record_run(spark: SparkSession, lake: Lake, lineage: dict, params: AlsParams, seconds: float | None,
                state: str, error: str | None = None) -> None:
    """Append the run's row to meta/model_runs in ``state`` (flow.runs.record); what the lineage does not hold
    yet (a started or failed run's counts and metrics) is null."""
    version = lineage["model_version"]
    metrics = lineage.get("metrics")
    run_row = Row(
        model_version=version, created_at=dt.datetime.now(dt.timezone.utc), model_dir=_model_dir(lake, version),
        mode="implicit" if params.implicit else "explicit", params=json.dumps(asdict(params)),
        training_table=lineage["training_table"], training_version=lineage["training_version"],
        code_version=lineage.get("code_version"), users=lineage.get("users"), items=lineage.get("items"),
        rows=lineage.get("rows"), train_seconds=seconds,
        metrics=None if metrics is None else json.dumps(metrics, default=str),
    )
    runs.record(spark, lake.model_runs, tables.one_row(spark, run_row, MODEL_RUNS_SCHEMA), state=state, error=error,
                tag=runs.tag("train", version))


def write_model_report(spark: SparkSession, model_dir: str, report: dict | None, *, lineage: dict,
                       params: AlsParams) -> None:
    """model_dir/report.html: the offline evaluation (if any) with the model's lineage."""
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
    fs.write_bytes(spark, f"{model_dir}/report.html", text.encode("utf-8"))
