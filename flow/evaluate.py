"""Offline evaluation of ALS against baselines on a ratings or events file, with an honest protocol.

    report = evaluate(spark, "ratings.csv", "movielens", EvaluateOptions(k=10, tune=TuneOptions(), output="m.json"))

Reads the file exactly as ingest does (lake.fs.list_input_files, flow.ingest.read_rows, transforms.parse), builds
one row per (user, item) (implicit: summed event weights, ratings count with their value; explicit: the latest
rating), splits it deterministically and scores every model through the production top-N code (seen items
excluded). No Delta lake is needed; rows that cannot be used are counted by reason, never silently dropped, and
when more than ``max_rejected_share`` of them were rejected (or no pair is left) it raises MostlyRejectedError
(flow.input_checks: the top reasons, the first row of each, what the format expects) before fitting anything:
metrics on the remnant of a misread file would look like results. Implicit pairs are weighted as
build_training weighs them (``event_weights``, ``weight_scaling``); good events whose value a fixed weight
ignores are counted by type in the report (``input.value_ignored``) and named in a printed note.

Implicit (default): every held-out pair is relevant; the report has, for ``als`` and ``popularity``,
``ndcg@K``, ``precision@K``, ``recall@K``, ``map@K``, ``hit_rate@K``, ``coverage`` and the counts behind them,
plus the chosen ALS params (``als_params``). ``tune`` picks them by K-fold CV on the training part only.
Explicit (``explicit``): ``rmse`` and ``mae`` of explicit ALS from ``folds``-fold CV, beside the bias-only
baseline (global mean + user and item biases) scored on the same rows.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from flow.ingest import FUTURE_TOLERANCE_S, ROW_ID, read_rows
from flow.input_checks import (DEFAULT_MAX_REJECTED_SHARE, MostlyRejectedError, first_rejected_rows, mostly_rejected,
                               rejection_message, top_reasons)
from flow.tune import TuneOptions, protocol_tuning, store_fold_scores
from lake.fs import list_input_files
from models.als import AlsParams
from models.evaluation import evaluate_explicit, evaluate_implicit
from models.report import write_evaluation_report
from transforms import columns as C
from transforms import ids, parse, training

EXPLICIT_MODELS = ("als", "als_bias")


@dataclass(frozen=True, kw_only=True)
class EvaluateOptions:
    split: str = "user-random"  # one of transforms.splits.SPLIT_KINDS
    test_fraction: float = 0.25  # share of pairs held out for test
    k: int = 10  # cut-off of the ranking metrics
    seed: int = 42  # seed of the split, the folds and ALS
    explicit: bool = False  # rating prediction (RMSE/MAE) instead of ranking
    folds: int = 5  # explicit: folds of the reported CV
    explicit_model: str = "als_bias"  # explicit: one of EXPLICIT_MODELS
    min_rating: float | None = None  # implicit: ignore ratings below this value
    min_interactions: int = 2  # users with fewer pairs stay in train only
    als: AlsParams = field(default_factory=AlsParams)  # without tune; ``implicit`` and ``seed`` follow the above
    tune: TuneOptions | None = None  # choose the ALS params by K-fold CV on the training part (None: no tuning)
    output: str | None = None  # write the report as JSON here
    report: str | None = None  # write an HTML report here
    tuning_table: str | None = None  # with tune: append every configuration's fold scores to this Delta table
    checkpoint_dir: str | None = None  # ALS checkpoints (None: a temporary folder)
    event_types: tuple[str, ...] | None = None  # event logs: known event types (None: the format's)
    rating_max: float | None = None  # highest valid rating (None: the format's)
    event_weights: Mapping[str, float | None] | None = None  # implicit: weight per event type (None: the default)
    weight_scaling: str = "linear"  # implicit: one of transforms.training.WEIGHT_SCALINGS
    max_rejected_share: float = DEFAULT_MAX_REJECTED_SHARE  # more rejected rows than this: MostlyRejectedError


@dataclass(frozen=True)
class EvaluationInput:
    """The parsed rows of a run's input (persisted), its format, rows by reason (None: good) and the good events
    whose value implicit training ignores, by type."""
    parsed: DataFrame
    fmt: object
    by_reason: dict
    value_ignored: dict


def read_input(spark: SparkSession, pattern: str, fmt_name: str, options: EvaluateOptions) -> EvaluationInput:
    """The input parsed by the same file listing, reader and parser as flow.ingest (with the options' event
    types and rating scale), counted in one aggregation; MostlyRejectedError when most rows were rejected."""
    fmt = parse.get_format(fmt_name)
    lines = read_rows(spark, list_input_files(spark, pattern), fmt)
    parsed = parse.parse_lines(lines, fmt, max_event_ts_seconds=int(time.time()) + FUTURE_TOLERANCE_S,
                               rating_max=options.rating_max, event_types=options.event_types)
    parsed = parsed.persist(StorageLevel.MEMORY_AND_DISK)
    valued = F.when(F.col(C.REASON).isNull() & F.col(C.VALUE).isNotNull(), F.col(C.EVENT_TYPE))
    by_reason, values_by_type = {}, {}
    for r in parsed.groupBy(C.REASON, valued.alias("_valued")).count().collect():
        by_reason[r[C.REASON]] = by_reason.get(r[C.REASON], 0) + r["count"]
        if r["_valued"] is not None:
            values_by_type[r["_valued"]] = r["count"]
    found = EvaluationInput(parsed, fmt, by_reason, training.value_ignored_by_type(values_by_type,
                                                                                  options.event_weights))
    if mostly_rejected(by_reason, max_share=options.max_rejected_share):
        raise unusable_input(found, f"evaluate {pattern}: no metrics computed: ", options.max_rejected_share)
    return found


def unusable_input(found: EvaluationInput, prefix: str, max_share: float | None) -> MostlyRejectedError:
    """The error for input that cannot be evaluated: ``prefix``, then flow.input_checks.rejection_message with
    the first row of each top reason (in read order)."""
    examples = first_rejected_rows(found.parsed, top_reasons(found.by_reason), order=[ROW_ID])
    return MostlyRejectedError(prefix + rejection_message(found.fmt, found.by_reason, examples, max_share=max_share))


def build_pairs(events: DataFrame, options: EvaluateOptions) -> DataFrame:
    """One row per (user, item) with dense ids: (user_id, item_id, user_idx, item_idx, weight|rating, ...)."""
    if options.explicit:
        pairs = training.explicit_training(events)
    else:
        pairs = training.implicit_training(events, event_weights=options.event_weights, min_rating=options.min_rating,
                                           weight_scaling=options.weight_scaling)
    pairs = pairs.persist(StorageLevel.MEMORY_AND_DISK)
    user_map = ids.new_id_rows(None, pairs, id_col=C.USER_ID, idx_col=C.USER_IDX).cache()
    item_map = ids.new_id_rows(None, pairs, id_col=C.ITEM_ID, idx_col=C.ITEM_IDX).cache()
    with_ids = (pairs.join(F.broadcast(user_map) if user_map.count() < 1_000_000 else user_map, on=C.USER_ID)
                .join(item_map, on=C.ITEM_ID))
    return with_ids.persist(StorageLevel.MEMORY_AND_DISK)


def evaluate(spark: SparkSession, pattern: str, fmt: str, options: EvaluateOptions) -> dict:
    """Evaluate on the files ``pattern`` matches (format ``fmt``, transforms.parse.FORMATS); returns the report
    (also written to ``options.output`` and ``options.report`` when given). Progress goes to stdout as it runs."""
    started = time.time()
    checkpoint_dir = options.checkpoint_dir or tempfile.mkdtemp(prefix="recsys-evaluate-ckpt-")
    try:
        found = read_input(spark, pattern, fmt, options)
        reasons = {str(k): v for k, v in found.by_reason.items()}
        pairs = build_pairs(parse.valid_events(found.parsed, order_col=ROW_ID), options)
        counts = pairs.agg(F.count(F.lit(1)).alias("pairs"), F.countDistinct(C.USER_IDX).alias("users"),
                           F.countDistinct(C.ITEM_IDX).alias("items")).first()
        if not counts["pairs"]:
            raise unusable_input(found, f"evaluate {pattern}: no usable (user, item) pair: ", None)
        print(f"evaluate {pattern} ({fmt}): {counts['pairs']:,} pairs, {counts['users']:,} users, "
              f"{counts['items']:,} items; rows by reason {reasons}", flush=True)
        note = training.value_ignored_note(found.value_ignored)
        if note:
            print(f"note: {note}", flush=True)
        report = _run_protocol(pairs, options, checkpoint_dir)
        pairs.unpersist()
    finally:
        if not options.checkpoint_dir:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
    report["input"] = {"path": pattern, "format": fmt, "rows_by_reason": reasons, "value_ignored": found.value_ignored,
                       "pairs": counts["pairs"], "users": counts["users"], "items": counts["items"]}
    report["seconds"] = round(time.time() - started, 1)
    if options.tune and options.tuning_table:
        run_id = uuid.uuid4().hex
        store_fold_scores(spark, options.tuning_table, report["tuning"], run_id=run_id, mode=report["protocol"],
                          source=pattern, source_version=None)
        report["tuning_run_id"] = run_id
    _write_outputs(report, options)
    return report


def _run_protocol(pairs: DataFrame, options: EvaluateOptions, checkpoint_dir: str) -> dict:
    """The explicit or implicit protocol of models.evaluation on ``pairs``, with tuning when asked for."""
    common = dict(split=options.split, test_fraction=options.test_fraction, seed=options.seed, params=options.als,
                  checkpoint_dir=checkpoint_dir, min_interactions=options.min_interactions,
                  **protocol_tuning(options.tune, implicit=not options.explicit, seed=options.seed))
    if options.explicit:
        return evaluate_explicit(pairs, folds=options.folds, explicit_model=options.explicit_model, **common)
    return evaluate_implicit(pairs, k=options.k, **common)


def _write_outputs(report: dict, options: EvaluateOptions) -> None:
    if options.output:
        Path(options.output).parent.mkdir(parents=True, exist_ok=True)
        Path(options.output).write_text(json.dumps(report, indent=2, default=str))
    if options.report:
        write_evaluation_report(report, options.report)
