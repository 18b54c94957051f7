"""The gate engine: check one stage of the lake, undo what failed, report and record; raise GateFailed.

    result = run_gate(spark, "silver", Lake("./lake"), options=GateOptions(), fmt="movielens")
    results = gates_after(spark, "ingest", lake, ingest_summary=summary, ingest_options=options, fmt="movielens")

Each run prints a readable report (every failed check, its observed value and a few bad rows), writes it as JSON
under <reports_dir>/results/<stage>/, appends a row to meta/validation_runs and renders great-expectations Data
Docs (<reports_dir>/data_docs/index.html; <reports_dir> defaults to <lake>/validation for a local lake). Drift
checks compare each table's profile with the previous successful run of the same stage; a run with none says so
(its profiles become the baseline if it passes).

What a failed gate leaves behind: the steps after it do not run, so gold tables and the served snapshot stay the
last good ones; validation/rollback.py takes a failed ingest run's rows out of silver and points LATEST back at
the last snapshot that passed.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from flow.ingest import IngestOptions
from lake.registry import Lake, local_path
from validation import STAGES, stages
from validation.drift import resolve_thresholds
from validation.gate import evaluate
from validation.history import previous_success, previous_successes, record_run
from validation.report import GateFailed, GateResult, write_report
from validation.rollback import restore_latest, restore_silver
from validation.runner import GxRunner
from validation.stages import LATEST_RUN, GateSetupError, StageChecks, TempViews

__all__ = ["GATES_AFTER", "LATEST_RUN", "GateFailed", "GateOptions", "GateResult", "GateSetupError", "gates_after",
           "run_gate"]

# The gates the nightly flow runs after its steps: each checks what its step wrote, before the next step reads it.
GATES_AFTER = {"ingest": ("raw", "silver"), "build_training": ("training",), "score": ("recommendations",),
               "publish": ("snapshot",)}
_LOOK_UP = object()  # run_gate's default for ``previous``: read it from meta/validation_runs


@dataclass(frozen=True)
class GateOptions:
    """Settings shared by every gate of a run (the flags of jobs.validate)."""

    drift: bool = True  # compare with the previous successful run
    drift_thresholds: dict | str | None = None  # overrides, see validation/drift.py
    max_quarantine_rate: float = 0.05  # raw: largest share of quarantined lines
    rating_scale: tuple[float, float] | None = None  # default: the input format's scale (all formats' if unknown)
    reports_dir: str | None = None  # JSON reports + Data Docs; default <lake>/validation for a local lake
    docs_dir: str | None = None  # default <reports_dir>/data_docs
    examples: int = 5  # bad rows kept per failed check
    record: bool = True  # append the run to meta/validation_runs
    restore_latest: bool = True  # snapshot: on failure, point LATEST back at the last good snapshot
    restore_silver: bool = True  # raw/silver after an ingest run: on failure, take the run's rows out of silver


@dataclass(frozen=True)
class _Request:
    """What one gate run is asked to check (run_gate's keyword arguments)."""

    fmt: str | None
    ingest_options: IngestOptions | None
    input: str | None
    ingest_run_id: str | None
    model_version: str | None
    n: int | None
    snapshot_root: str | None
    table_version: int | None


def run_gate(spark, stage: str, lake: Lake, *, options: GateOptions | None = None, fmt: str | None = None,
             ingest_options: IngestOptions | None = None, input: str | None = None,
             ingest_run_id: str | None = None, model_version: str | None = None, n: int | None = None,
             snapshot_root: str | None = None, table_version: int | None = None, run_id: str | None = None,
             raise_on_failure: bool = True, previous: dict | None | object = _LOOK_UP) -> GateResult:
    """Check ``stage``; undo, record and print on the way; raise GateFailed if a check failed (unless told not to).

    Arguments a stage does not use are ignored, so a caller can pass the same ones to every gate.
    raw: with ``ingest_run_id`` (a run id or LATEST_RUN), or with no ``input``, checks an ingest run after the
    fact; with ``input`` (and ``fmt``, ``ingest_options``) alone, parses the files ahead of ingest as flow.ingest
    will. ``ingest_options`` also tell the silver gate ingest's event types and rating scale; ``fmt`` the rating
    scale of silver and training. silver, training: ``table_version`` (default: the latest). recommendations:
    ``model_version`` (default: the latest trained), ``n`` (default: the largest rank). snapshot:
    ``snapshot_root`` (default: <lake>/snapshots), ``model_version`` (default: LATEST).
    ``previous``: the drift baseline when the caller has read it already (history.previous_successes).
    Raises GateSetupError when what the stage checks does not exist.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {list(STAGES)}")
    opts = options or GateOptions()
    request = _Request(fmt, ingest_options, input, ingest_run_id, model_version, n, snapshot_root, table_version)
    if not opts.drift:
        previous = None
    elif previous is _LOOK_UP:
        previous = previous_success(spark, lake, stage)
    run = None  # raw after the fact: the ingest run checked (and undone on failure), read once
    if stage == "raw" and (ingest_run_id is not None or input is None):
        run = stages.ingest_run(spark, lake, ingest_run_id or LATEST_RUN)
    reports = _reports_dir(lake, opts)
    with TempViews(spark) as views:
        checks = _stage_checks(spark, stage, lake, request, opts, previous, views, run)
        result = _evaluate(stage, checks, opts, previous, reports, run_id or uuid.uuid4().hex)
    if not result.success:
        result.actions.extend(_roll_back(spark, lake, result, request, opts, run))
    if reports:
        write_report(reports, result)
    if opts.record:
        record_run(spark, lake, result)
    print(result.describe(examples=opts.examples), flush=True)
    if not result.success and raise_on_failure:
        raise GateFailed(result)
    return result


def gates_after(spark, step: str, lake: Lake, *, options: GateOptions | None = None,
                ingest_summary: dict | None = None, ingest_options: IngestOptions | None = None,
                fmt: str | None = None, model_version: str | None = None, n: int | None = None,
                snapshot_root: str | None = None) -> list[GateResult]:
    """Run the gates that follow the nightly ``step`` (GATES_AFTER; none for other steps); raises GateFailed at
    the first failing one.

    After "ingest": raw, then silver, both on the run of ``ingest_summary`` (what flow.ingest.ingest returned;
    its "run_id", else the newest run) with its ``ingest_options`` and format ``fmt``; a failure takes the run's
    rows out of silver. After "build_training": training; "score": recommendations of ``model_version`` with
    ``n`` per user; "publish": the snapshot of ``model_version`` under ``snapshot_root``.
    """
    names = GATES_AFTER.get(step, ())
    opts = options or GateOptions()
    ingest_run_id = ((ingest_summary or {}).get("run_id") or LATEST_RUN) if step == "ingest" else None
    baselines = previous_successes(spark, lake, names) if opts.drift and names else {}  # one read for all
    return [run_gate(spark, stage, lake, options=opts, fmt=fmt, ingest_options=ingest_options,
                     ingest_run_id=ingest_run_id, model_version=model_version, n=n, snapshot_root=snapshot_root,
                     previous=baselines.get(stage)) for stage in names]


def _stage_checks(spark, stage: str, lake: Lake, request: _Request, opts: GateOptions, previous: dict | None,
                  views: TempViews, run: dict | None) -> StageChecks:
    if stage == "raw" and run is not None:
        return stages.ingest_run_checks(spark, lake, run, max_quarantine_rate=opts.max_quarantine_rate)
    if stage == "raw":
        return stages.raw_input_checks(spark, lake, request.input, request.fmt,
                                       request.ingest_options or IngestOptions(),
                                       max_quarantine_rate=opts.max_quarantine_rate)
    if stage == "silver":
        return stages.silver_checks(spark, lake, request.table_version, request.fmt, request.ingest_options,
                                    scale=opts.rating_scale)
    if stage == "training":
        return stages.training_checks(spark, lake, request.table_version, request.fmt, previous, views,
                                      scale=opts.rating_scale)
    if stage == "recommendations":
        return stages.recommendation_checks(spark, lake, request.model_version, request.n, views)
    return stages.snapshot_checks(spark, lake, request.snapshot_root, request.model_version)


def _evaluate(stage: str, checks: StageChecks, opts: GateOptions, previous: dict | None, reports: Path | None,
              run_id: str) -> GateResult:
    docs = opts.docs_dir or (str(reports / "data_docs") if reports else None)
    runner = GxRunner(docs_dir=docs, store_dir=reports / "gx_validation_results" if reports else None,
                      examples=opts.examples)
    return evaluate(
        stage, checks.targets, runner=runner, run_id=run_id,
        previous_metrics=(previous or {}).get("metrics"), previous_run_id=(previous or {}).get("run_id"),
        thresholds=resolve_thresholds(stage, opts.drift_thresholds) if opts.drift else None,
        extra_checks=checks.extra, model_version=checks.model_version)


def _roll_back(spark, lake: Lake, result: GateResult, request: _Request, opts: GateOptions,
               run: dict | None) -> list[str]:
    """What a failed gate undoes (validation/rollback.py), as sentences for GateResult.actions."""
    if result.stage == "snapshot" and opts.restore_latest:
        return [restore_latest(spark, lake, request.snapshot_root, result.model_version)]
    if result.stage in ("raw", "silver") and opts.restore_silver and request.ingest_run_id is not None:
        # the run the raw gate just checked, not a re-read (a newer run may have landed since)
        return [restore_silver(spark, lake, run or stages.ingest_run(spark, lake, request.ingest_run_id))]
    return []


def _reports_dir(lake: Lake, opts: GateOptions) -> Path | None:
    if opts.reports_dir:
        return local_path(opts.reports_dir)
    if "://" in lake.root and not lake.root.startswith("file:"):
        return None  # a remote lake: JSON and Data Docs need a local reports_dir
    return local_path(lake.root) / "validation"
