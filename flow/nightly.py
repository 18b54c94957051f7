"""The nightly flow in one Spark session: ingest -> build_training -> train -> score -> publish, gated.

Each step is the library function its own job calls (flow.ingest, flow.training_table, flow.train, flow.score,
flow.publish), given the same typed options; after each step the data-quality gates of validation.gates run
(raw and silver after ingest, training, recommendations, snapshot; ``gates=False`` skips them). The flow stops
at the first failing step or gate by raising: what earlier steps committed stays, and the published snapshot
stays the last good one.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flow.ingest import IngestOptions, ingest
from flow.publish import PublishOptions, publish
from flow.score import ScoreOptions, score
from flow.train import TrainOptions, train
from flow.training_table import TrainingTableOptions, build_training
from lake.registry import Lake
from validation.gates import GateOptions, gates_after

STEPS = ("ingest", "build_training", "train", "score", "publish")


@dataclass(frozen=True, kw_only=True)
class NightlyOptions:
    """``input`` None: start from silver (no ingest step). The model version of ``train`` (or the new one it
    names) is the one scored and published."""
    input: str | None = None
    fmt: str = "movielens"
    ingest: IngestOptions = field(default_factory=IngestOptions)
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
    """Run the steps in order (each one's summary gets ``step_seconds``) and the gates after each; returns
    {step: summary}. ``on_step(name, summary)`` is called after each step, before its gates."""
    results: dict[str, dict] = {}
    model_version = options.train.model_version
    for name in STEPS if options.input else STEPS[1:]:
        started = time.time()
        results[name] = _step(spark, lake, name, options, model_version)
        if name == "train":
            model_version = results[name]["model_version"]
        if on_step is not None:
            on_step(name, results[name])
        if options.gates:
            gates_after(spark, name, lake, options=options.gate_options, ingest_summary=results.get("ingest"),
                        ingest_options=options.ingest, fmt=options.fmt, model_version=model_version,
                        n=options.score.n, snapshot_root=options.publish.snapshot_root)
        results[name]["step_seconds"] = round(time.time() - started, 1)
    return results
