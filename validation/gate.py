"""The gate runner: every target of a stage through its suite, its profile and its drift checks, one GateResult.

A *target* is one DataFrame to check (a table version, a parsed input, a snapshot table) with its suite and
what to profile. ``evaluate`` knows nothing about the lake: validation/stages.py builds the targets of a stage,
passes the previous successful run's profiles, and records the result.
"""
from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame

from validation import STAGES
from validation.drift import ProfileSpec, compare, profile
from validation.report import CheckResult, GateFailed, GateResult
from validation.runner import GxRunner

__all__ = ["STAGES", "Target", "evaluate", "GateFailed", "GateResult"]


@dataclass
class Target:
    """One DataFrame a gate checks.

    ``cache``: persist ``frame`` while its checks run (worth it for a small projection of an expensive
    computation, e.g. parsed raw lines; not for a Delta table, which Spark reads column by column).
    ``examples_frame``: where example bad rows are drawn from, when wider than ``frame``.
    ``drift``: compare this target's profile with the previous run's (off for naturally erratic targets).
    ``drift_only``: the drift thresholds that apply to this target (None: every one), e.g. only the
    concentration of a batch whose size is checked elsewhere.
    """

    name: str
    frame: DataFrame
    expectations: list
    source: str
    version: int | None = None
    profile: ProfileSpec = field(default_factory=ProfileSpec)
    cache: bool = False
    examples_frame: DataFrame | None = None
    drift: bool = True
    drift_only: tuple[str, ...] | None = None


def evaluate(stage: str, targets: list[Target], *, runner: GxRunner, run_id: str | None = None,
             previous_metrics: dict | None = None, previous_run_id: str | None = None,
             thresholds: dict | None = None, extra_checks: list[CheckResult] | None = None,
             model_version: str | None = None) -> GateResult:
    """Check every target; drift is measured against ``previous_metrics`` (target -> profile) when
    ``thresholds`` is given (None switches drift off). Never raises for failed checks: see GateResult.success."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {list(STAGES)}")
    run_id = run_id or uuid.uuid4().hex
    started_at = dt.datetime.now(dt.timezone.utc)
    started = time.monotonic()
    checks: list[CheckResult] = list(extra_checks or [])
    metrics: dict[str, dict] = {}
    described: dict[str, dict] = {}
    for target in targets:
        frame = target.frame.persist(StorageLevel.MEMORY_AND_DISK) if target.cache else target.frame
        try:
            metrics[target.name] = profile(frame, target.profile)
            checks += runner.validate(f"{stage}.{target.name}", target.name, frame, target.expectations,
                                      run_name=f"{stage}-{run_id[:8]}", examples_df=target.examples_frame)
        finally:
            if target.cache:
                frame.unpersist()
        if thresholds is not None and target.drift:
            applied = thresholds if target.drift_only is None else {
                key: value if key in target.drift_only else None for key, value in thresholds.items()}
            checks += compare(target.name, metrics[target.name], (previous_metrics or {}).get(target.name), applied)
        described[target.name] = {"source": target.source, "version": target.version,
                                  "rows": metrics[target.name]["rows"]}
    docs = runner.build_docs()
    return GateResult(stage=stage, run_id=run_id, started_at=started_at,
                      seconds=round(time.monotonic() - started, 2), targets=described, checks=checks,
                      metrics=metrics, model_version=model_version,
                      previous_run_id=previous_run_id if thresholds is not None else None, docs_path=docs,
                      drift_checked=thresholds is not None)
