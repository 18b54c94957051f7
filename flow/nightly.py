"""The nightly flow in one Spark session: ingest -> build_training -> train -> score -> publish, gated.

Each step is the library function its own job calls (flow.ingest, flow.training_table, flow.train, flow.score,
flow.publish), given the same typed options; after each step the data-quality gates of validation.gates run
(raw and silver after ingest, training, recommendations, snapshot; ``gates=False`` skips them). The silver gate
always checks the silver version training is built from: after ingest, or before build_training when there is no
new input, and again on the version build_training read if another writer committed in between. The flow stops
at the first failing step or gate by raising (GateFailed): what earlier steps committed stays, and the published
snapshot stays the last good one.

Ingest is incremental by default (``NIGHTLY_INGEST``): files already in meta/ingested_files with the same path,
size and modification time are skipped, so a night whose folder holds only yesterday's files reads nothing,
commits nothing to bronze, silver or quarantine, and trains on silver as it is (the raw gate has no run to check
and is skipped; the silver gate runs before build_training as without input). ``IngestOptions(incremental=False)``
reads every file again: silver still gains nothing (MERGE on the event key), bronze and quarantine record the rows
again under the new run id.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flow.ingest import NOTHING_NEW, IngestOptions, ingest
from flow.publish import PublishOptions, publish
from flow.score import ScoreOptions, score
from flow.train import TrainOptions, train
from flow.training_table import TrainingTableOptions, build_training
from lake import tables
from lake.registry import Lake
from validation.gates import GateOptions, GateResult, gates_after, run_gate

STEPS = ("ingest", "build_training", "train", "score", "publish")
NIGHTLY_INGEST = IngestOptions(incremental=True)


@dataclass(frozen=True, kw_only=True)
class NightlyOptions:
    """``input`` None: start from silver (no ingest step). The model version of ``train`` (or the new one it
    names) is the one scored and published."""
    input: str | None = None
    fmt: str = "movielens"
    ingest: IngestOptions = NIGHTLY_INGEST
    training: TrainingTableOptions = field(default_factory=TrainingTableOptions)
    train: TrainOptions = field(default_factory=TrainOptions)
    score: ScoreOptions = field(default_factory=ScoreOptions)
    publish: PublishOptions = field(default_factory=PublishOptions)
    gates: bool = True
    gate_options: GateOptions = field(default_factory=GateOptions)


def _step(spark, lake: Lake, name: str, options: NightlyOptions, model_version: str | None) -> dict:
    if name == "ingest":
        return ingest(spark, lake, options.input, options.fmt, options.ingest)
    if name == "build_training":
        return build_training(spark, lake, options.training)
    if name == "train":
        return train(spark, lake, options.train)
    if name == "score":
        return score(spark, lake, dataclasses.replace(options.score, model_version=model_version))
    return publish(spark, lake, dataclasses.replace(options.publish, model_version=model_version))


def nightly(spark, lake: Lake, options: NightlyOptions = NightlyOptions(), *,
            on_step: Callable[[str, dict], None] | None = None) -> dict[str, dict]:
    """Run the steps in order and the gates around them; returns {step: summary}, each summary with
    ``step_seconds`` and ``gates`` ({stage: {"run_id", "checks", "previous_run_id"}} of the gates run with it).
    ``on_step(name, summary)`` is called after each step, before its gates. Raises GateFailed at the first
    failing gate: no later step runs, so nothing is published."""
    results: dict[str, dict] = {}
    model_version = options.train.model_version
    done: list[GateResult] = []  # every gate run so far
    for name in STEPS if options.input else STEPS[1:]:
        started, before = time.time(), len(done)
        if options.gates and name == "build_training" and tables.exists(spark, lake.silver):
            done += _gate_silver(spark, lake, options, tables.version(spark, lake.silver), done)
        results[name] = _step(spark, lake, name, options, model_version)
        if name == "train":
            model_version = results[name]["model_version"]
        if on_step is not None:
            on_step(name, results[name])
        if options.gates and name == "build_training":  # another writer may have committed since the gate
            done += _gate_silver(spark, lake, options, results[name]["silver_version"], done)
        if options.gates and not _nothing_ingested(name, results[name]):
            done += gates_after(spark, name, lake, options=options.gate_options, ingest_summary=results.get("ingest"),
                                ingest_options=options.ingest, fmt=options.fmt, model_version=model_version,
                                n=options.score.n, snapshot_root=options.publish.snapshot_root)
        results[name]["gates"] = {r.stage: {"run_id": r.run_id, "checks": len(r.checks),
                                            "previous_run_id": r.previous_run_id} for r in done[before:]}
        results[name]["step_seconds"] = round(time.time() - started, 1)
    return results


def _nothing_ingested(name: str, summary: dict) -> bool:
    """True for an ingest step that found no new file: no run was recorded, so there is nothing to gate."""
    return name == "ingest" and summary.get("status") == NOTHING_NEW["status"]


def _gate_silver(spark, lake: Lake, options: NightlyOptions, version: int, done: list[GateResult]) -> list[GateResult]:
    """The silver gate on silver ``version``, unless it passed on that version earlier in this run (``done``)."""
    if any(r.stage == "silver" and (r.targets.get("silver_interactions") or {}).get("version") == version
           for r in done):
        return []
    return [run_gate(spark, "silver", lake, options=options.gate_options, fmt=options.fmt,
                     ingest_options=options.ingest, table_version=version)]
