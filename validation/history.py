"""The gates' run history, meta/validation_runs: one row per gate run, profiles included.

The last successful run of a stage is the next run's drift baseline; the snapshot rollback looks up the snapshots
that passed their gate here.
"""
from __future__ import annotations

import json

from pyspark.sql import functions as F

from lake import tables
from lake.registry import Lake
from transforms import columns as C
from validation.report import GateResult

RUNS_SCHEMA = (
    "run_id string, stage string, started_at timestamp, seconds double, success boolean, model_version string, "
    "checks int, failed int, failed_checks string, targets string, metrics string, report_path string, "
    "docs_path string"
)


def previous_success(spark, lake: Lake, stage: str) -> dict | None:
    """The last successful run of ``stage`` in meta/validation_runs: {"run_id", "metrics", "targets", ...}."""
    return previous_successes(spark, lake, [stage]).get(stage)


def previous_successes(spark, lake: Lake, stages) -> dict[str, dict]:
    """previous_success for several stages in one query (each read of the table costs about a second)."""
    runs = tables.read_if_exists(spark, lake.validation_runs)
    if runs is None:
        return {}
    latest = F.max_by(F.struct("run_id", C.MODEL_VERSION, "metrics", "targets"), "started_at").alias("last")
    rows = (runs.where(F.col("stage").isin(list(stages)) & F.col("success")).groupBy("stage").agg(latest)
            .collect())
    return {r["stage"]: {"run_id": r["last"]["run_id"], "model_version": r["last"][C.MODEL_VERSION],
                         "metrics": json.loads(r["last"]["metrics"]), "targets": json.loads(r["last"]["targets"])}
            for r in rows}


def passed_snapshots(spark, lake: Lake, *, besides: str | None, limit: int = 20) -> list[str]:
    """Model versions whose snapshot gate passed, newest first, ``besides`` left out."""
    runs = tables.read_if_exists(spark, lake.validation_runs)
    if runs is None:
        return []
    passed = runs.where((F.col("stage") == "snapshot") & F.col("success") & (F.col(C.MODEL_VERSION) != besides))
    rows = passed.orderBy(F.col("started_at").desc()).select(C.MODEL_VERSION).limit(limit).collect()
    return [r[C.MODEL_VERSION] for r in rows]


def record_run(spark, lake: Lake, result: GateResult) -> None:
    """Append one row per gate run to meta/validation_runs (profiles included: the next run's drift baseline)."""
    doc = result.to_json()
    row = (result.run_id, result.stage, result.started_at, float(result.seconds), result.success,
           result.model_version, len(result.checks), len(result.failures),
           json.dumps([{"target": c.target, "check": c.name, "description": c.description,
                        "observed": c.observed_text()} for c in result.failures]),
           json.dumps(doc["targets"]), json.dumps(doc["metrics"]), result.report_path, result.docs_path)
    tables.append(tables.one_row(spark, row, RUNS_SCHEMA), lake.validation_runs)
