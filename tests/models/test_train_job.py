"""jobs.train --tune: tuned, evaluated, refit on all data; lineage and metrics in meta/model_runs; a report."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from pyspark.sql import functions as F

from flow import runs
from flow import train as train_flow
from flow.model_runs import NoModelError, latest_model_version, model_run
from jobs import train, tune
from lake import tables
from lake.registry import Lake
from models.bundle import load_bundle
from conftest import two_group_ratings
from transforms import columns as C


def write_gold(spark, lake: Lake) -> None:
    rows = [(f"u{u}", f"i{i}", u, i, r, 1, dt.datetime.fromtimestamp(t, dt.timezone.utc))
            for u, i, r, t in two_group_ratings()]
    schema = (f"{C.USER_ID} string, {C.ITEM_ID} string, {C.USER_IDX} int, {C.ITEM_IDX} int, {C.WEIGHT} double, "
              f"{C.N_EVENTS} long, {C.LAST_EVENT_TS} timestamp")
    tables.overwrite(spark.createDataFrame(rows, schema), lake.training)


def run_on_gold(spark, tmp_path, job, flags: list[str]) -> tuple[Lake, dict]:
    """A lake whose gold/training holds the two-group data; ``job`` run on it with ``flags``."""
    lake = Lake(str(tmp_path / "lake"))
    write_gold(spark, lake)
    return lake, job.run(spark, job.build_parser().parse_args(["--lake", lake.root, *flags]))


@pytest.mark.slow
def test_train_with_tuning_records_lineage_metrics_and_a_report(spark, tmp_path):
    lake, summary = run_on_gold(spark, tmp_path, train, [
        "--model-version", "m1", "--seed", "7", "--k", "5", "--num-blocks", "1",
        "--tune", "--tune-folds", "2", "--ranks", "4", "--reg-params", "0.05", "--alphas", "5", "--max-iters", "4"])
    run = runs.read_states(spark, lake, "train").where(F.col(C.MODEL_VERSION) == "m1").first()
    assert run[runs.STATE] == runs.SUCCEEDED and model_run(spark, lake, "m1")["rows"] == run["rows"] > 0
    metrics = json.loads(run["metrics"])
    assert metrics["als"]["ndcg@5"] > metrics["popularity"]["ndcg@5"]
    assert run["training_version"] == 0 and run["code_version"]
    params = json.loads(run["params"])
    tuned = tables.read(spark, lake.tuning_results).where(F.col(C.MODEL_VERSION) == "m1")
    assert tuned.count() == 2  # one configuration x 2 folds
    best = tuned.where("is_best").first()
    assert (params["rank"], params["reg_param"]) == (best["rank"], best["reg_param"])
    model = load_bundle(spark, summary["model_dir"])
    assert model.model.user_factors.count() == 24  # refit on all data: every user has factors
    assert model.info["metrics"]["als"]["ndcg@5"] == metrics["als"]["ndcg@5"]
    html = (tmp_path / "lake" / "models" / "m1" / "report.html").read_text()
    assert "<svg" in html and "Lineage" in html


@pytest.mark.slow
def test_tune_job_appends_fold_scores_for_the_training_table_version(spark, tmp_path):
    lake, summary = run_on_gold(spark, tmp_path, tune, [
        "--seed", "3", "--k", "5", "--num-blocks", "1", "--tune-folds", "2",
        "--search", "random", "--n-configs", "1", "--ranks", "4", "--reg-params", "0.01,1", "--alphas", "1,10",
        "--max-iters", "3"])
    rows = tables.read(spark, lake.tuning_results).where(F.col("tuning_run_id") == summary["tuning_run_id"])
    assert rows.count() == 2 and {r["source_version"] for r in rows.collect()} == {0}
    assert 0.01 <= summary["best"]["reg_param"] <= 1 and summary["metric"] == "ndcg@5"


@pytest.mark.slow
def test_a_training_that_fails_is_recorded_failed_and_is_no_model(spark, tmp_path, monkeypatch):
    def fit_fails(*_args, **_kwargs):
        raise RuntimeError("executor lost")

    monkeypatch.setattr(train_flow, "_fit_and_save", fit_fails)
    with pytest.raises(RuntimeError, match="executor lost"):
        run_on_gold(spark, tmp_path, train, ["--model-version", "broken", "--no-evaluate"])
    lake = Lake(str(tmp_path / "lake"))
    rows = tables.read(spark, lake.model_runs).orderBy(runs.RECORDED_AT).collect()
    assert [(r[C.MODEL_VERSION], r[runs.STATE], r[runs.ERROR]) for r in rows] == [
        ("broken", "started", None), ("broken", "failed", "RuntimeError: executor lost")]
    with pytest.raises(NoModelError, match="no model"):
        latest_model_version(spark, lake)
    with pytest.raises(NoModelError, match="failed or did not finish"):
        model_run(spark, lake, "broken")
