"""What each stage's gate checks: the targets (validation/gate.py) it builds from the lake.

raw: after ingest, the run's own accounting (meta/ingest_runs), the lines it quarantined and the rows it added to
silver (for their concentration on one user or item, against the last good batch);
before ingest, the input files read and parsed exactly as flow.ingest will with the same IngestOptions;
silver: silver/interactions; training: gold/training and the id maps; recommendations: gold/user_recommendations
and gold/popular_items of one model version and the training table it was trained on; snapshot: a published
snapshot folder.
"""
from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass, field

from pyspark.sql import functions as F

from flow.ingest import FUTURE_TOLERANCE_S, SILVER_COLUMNS, IngestOptions, already_ingested, input_format, read_rows
from flow.model_runs import latest_model_version, model_run, version_predicate
from flow.runs import RUN_TABLES, run_states
from lake import tables
from lake.fs import list_input_files
from flow import snapshot_store
from lake.registry import Lake
from serving import snapshot
from transforms import columns as C
from transforms import parse
from validation import suites
from validation.drift import ProfileSpec
from validation.gate import Target
from validation.report import CUSTOM, CheckResult

LATEST_RUN = "latest"  # an ingest run id meaning "the newest run"


class GateSetupError(RuntimeError):
    """The gate cannot run: what it should check is missing (the message names it and how to produce it)."""


@dataclass
class StageChecks:
    """What a stage checks: its targets, checks made outside great-expectations, the model version it concerns."""

    targets: list[Target] = field(default_factory=list)
    extra: list[CheckResult] = field(default_factory=list)
    model_version: str | None = None


class TempViews:
    """Temp views a suite's SQL refers to, named per gate run and dropped when the block ends."""

    def __init__(self, spark):
        self.spark, self.tag, self.names = spark, uuid.uuid4().hex[:8], []

    def add(self, df, name: str) -> str:
        full = f"gate_{self.tag}_{name}"
        df.createOrReplaceTempView(full)
        self.names.append(full)
        return full

    def __enter__(self) -> "TempViews":
        return self

    def __exit__(self, *exc) -> None:
        for name in self.names:
            self.spark.catalog.dropTempView(name)


def latest_ts(tolerance_s: float = FUTURE_TOLERANCE_S) -> dt.datetime:
    """The newest acceptable event time: now plus ingest's tolerance for clock skew (naive UTC, the session zone)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(seconds=tolerance_s)


def rating_scale(override: tuple[float, float] | None, fmt: str | None,
                 ingest_options: IngestOptions | None = None) -> tuple[float, float]:
    """``override``, else ingest's rating_min/rating_max, else the format's scale, else all formats' span."""
    if override:
        return override
    if fmt:
        f = parse.get_format(fmt)
        scale = (f.rating_min, f.rating_max)
    else:
        scale = (min(f.rating_min for f in parse.FORMATS.values()), max(f.rating_max for f in parse.FORMATS.values()))
    if ingest_options is not None:
        scale = (scale[0] if ingest_options.rating_min is None else ingest_options.rating_min,
                 scale[1] if ingest_options.rating_max is None else ingest_options.rating_max)
    return scale


def require_table(spark, path: str, hint: str) -> None:
    if not tables.exists(spark, path):
        raise GateSetupError(f"no Delta table at {path}: {hint}")


def _nothing_new(description: str) -> StageChecks:
    return StageChecks(extra=[CheckResult(target="raw_input", name="nothing_new", kind=CUSTOM, success=True,
                                          observed=0, description=description)])


# ---------------------------------------------------------------------------------------------- raw


def ingest_run(spark, lake: Lake, run_id: str) -> dict:
    """The meta/ingest_runs row of ``run_id`` (LATEST_RUN: the newest run) as a dict, its summary JSON parsed: the
    run's latest row (flow.runs), so a run that died shows as ``started``."""
    path = lake.ingest_runs
    require_table(spark, path, "run jobs.ingest first")
    runs = run_states(tables.read(spark, path), RUN_TABLES["ingest"])
    if run_id == LATEST_RUN:
        row = runs.orderBy(F.col("started_at").desc()).first()
    else:
        row = runs.where(F.col(C.INGEST_RUN_ID) == run_id).first()
    if row is None:
        raise GateSetupError(f"no ingest run {run_id!r} in {path}")
    return {**row.asDict(), "summary": json.loads(row["summary"] or "{}"), "path": path}


def ingest_run_checks(spark, lake: Lake, run: dict, *, max_quarantine_rate: float) -> StageChecks:
    """An ingest run after the fact: its accounting (one row) and the lines it quarantined. Nothing is re-read."""
    run_id = run[C.INGEST_RUN_ID]
    if run["status"] == "nothing new":
        return _nothing_new(f"ingest run {run_id[:8]} found no new input file: nothing to check")
    runs = run_states(tables.read(spark, run["path"]), RUN_TABLES["ingest"]).where(F.col(C.INGEST_RUN_ID) == run_id)
    targets = [Target(
        name="raw_input", source=f"{run['path']} ({C.INGEST_RUN_ID} {run_id})", frame=suites.ingest_run_frame(runs),
        expectations=suites.ingest_run_suite(max_quarantine_rate=max_quarantine_rate),
        profile=ProfileSpec(rows_col="read", ratios={"quarantine_rate": ("quarantined", "read")}),
    )]
    quarantine = lake.quarantine
    if run["quarantined"] and tables.exists(spark, quarantine):
        targets.append(Target(
            name="quarantined_lines", source=quarantine, version=(run["summary"].get("versions") or {}).get("quarantine"),
            frame=tables.read(spark, quarantine).where(F.col(C.INGEST_RUN_ID) == run_id), cache=True,  # read once
            expectations=suites.quarantined_lines_suite(known_reasons=list(parse.REASONS)), drift=False))
    batch = _batch_events_target(spark, lake, run)
    return StageChecks(targets + ([batch] if batch is not None else []))


def _batch_events_target(spark, lake: Lake, run: dict) -> Target | None:
    """The rows the run added to silver (at the version it committed), profiled for the share of them on the top
    user and the top item; only that is compared with the last good batch (its size is raw_input's to judge).
    Only the 64-bit hashes of the ids are read and counted (validation/drift.py counts over hashes anyway); the
    ids themselves are checked by the silver gate, over all of silver. None when the run committed nothing."""
    run_id, version = run[C.INGEST_RUN_ID], (run["summary"].get("versions") or {}).get("silver")
    if version is None or not tables.exists(spark, lake.silver):
        return None
    rows = tables.read(spark, lake.silver, version=version).where(F.col(C.INGEST_RUN_ID) == F.lit(run_id))
    keys = rows.select(*(F.xxhash64(c).alias(c) for c in (C.USER_ID, C.ITEM_ID)))  # 16 bytes a row to cache
    return Target(name="batch_events", source=f"{lake.silver} ({C.INGEST_RUN_ID} {run_id})", version=version,
                  frame=keys, cache=True, expectations=[],
                  profile=ProfileSpec(user_col=C.USER_ID, item_col=C.ITEM_ID),
                  drift_only=("top_share_increase", "top_share_min_rows"))


def raw_input_checks(spark, lake: Lake, pattern: str, fmt_name: str | None, options: IngestOptions, *,
                     max_quarantine_rate: float) -> StageChecks:
    """The input files ahead of ingest, read and parsed exactly as flow.ingest will with ``options``."""
    if not fmt_name:
        raise GateSetupError("stage raw checks input files: give their format too (as for jobs.ingest)")
    fmt = input_format(fmt_name, options)
    files = list_input_files(spark, pattern)
    if options.incremental:
        seen = already_ingested(spark, lake.ingested_files)
        files = [f for f in files if f.key not in seen]
        if not files:
            return _nothing_new("no new input file (--incremental): nothing to check")
    event_options = ({"event_types": list(options.event_types) if options.event_types else None,
                      "max_value": options.max_value} if parse.is_event_format(fmt) else {})
    parsed = parse.parse_lines(
        read_rows(spark, files, fmt), fmt,
        max_event_ts_seconds=int(time.time() + options.future_tolerance_hours * 3600),
        rating_min=options.rating_min, rating_max=options.rating_max, min_event_date=options.min_event_date,
        **event_options)
    return StageChecks([Target(
        name="raw_input", frame=suites.raw_lines_frame(parsed), source=pattern, cache=True,
        expectations=suites.raw_suite(known_reasons=list(parse.REASONS), max_quarantine_rate=max_quarantine_rate),
        profile=ProfileSpec(rates={"quarantine_rate": F.col(suites.LINE_STATUS) == suites.QUARANTINED_LINE}),
        examples_frame=suites.raw_lines_frame(parsed, keep=(C.RAW, C.SOURCE_FILE)),
    )])


# ---------------------------------------------------------------------------------------------- silver, training


def silver_checks(spark, lake: Lake, version: int | None, fmt: str | None, options: IngestOptions | None, *,
                  scale: tuple[float, float] | None = None) -> StageChecks:
    """silver/interactions at ``version`` (default: the latest), against ingest's event types and rating scale."""
    path = lake.silver
    require_table(spark, path, "run jobs.ingest first")
    version = tables.version(spark, path) if version is None else version
    low, high = rating_scale(scale, fmt, options)
    options = options or IngestOptions()
    return StageChecks([Target(
        name="silver_interactions", source=path, version=version,
        frame=suites.silver_frame(tables.read(spark, path, version=version)),
        expectations=suites.silver_suite(
            rating_min=low, rating_max=high, latest_ts=latest_ts(options.future_tolerance_hours * 3600),
            event_types=list(options.event_types or parse.DEFAULT_EVENT_TYPES),
            max_value=parse.EventFormat.max_value if options.max_value is None else options.max_value,
            columns=list(SILVER_COLUMNS)),
        profile=ProfileSpec(user_col=C.USER_ID, item_col=C.ITEM_ID, null_cols=(C.VALUE,), value_col=suites.RATING_VALUE),
    )])


def _id_map_target(spark, lake: Lake, name: str, id_col: str, idx_col: str, previous: dict | None,
                   views: TempViews) -> tuple[Target, str]:
    """One id map at its latest version, checked against the version the last good run saw (still in history)."""
    path = getattr(lake, name)
    require_table(spark, path, "run jobs.build_training first")
    map_version = tables.version(spark, path)
    id_map = tables.read(spark, path, version=map_version)
    view = views.add(id_map, name)
    before = ((previous or {}).get("targets") or {}).get(name, {}).get("version")
    previous_view = None
    if before is not None and before <= map_version and before >= tables.oldest_version(spark, path):
        previous_view = views.add(tables.read(spark, path, version=before), f"{name}_before")
    target = Target(name=name, source=path, version=map_version, frame=id_map,
                    expectations=suites.id_map_suite(id_col=id_col, idx_col=idx_col, previous_view=previous_view))
    return target, view


def training_checks(spark, lake: Lake, version: int | None, fmt: str | None, previous: dict | None,
                    views: TempViews, *, scale: tuple[float, float] | None = None) -> StageChecks:
    """gold/training at ``version`` (default: the latest) and the id maps it refers to."""
    gold = lake.training
    require_table(spark, gold, "run jobs.build_training first")
    version = tables.version(spark, gold) if version is None else version
    training = tables.read(spark, gold, version=version)
    value_col = C.RATING if C.RATING in training.columns and C.WEIGHT not in training.columns else C.WEIGHT
    low, high = rating_scale(scale, fmt)
    users, user_view = _id_map_target(spark, lake, "user_ids", C.USER_ID, C.USER_IDX, previous, views)
    items, item_view = _id_map_target(spark, lake, "item_ids", C.ITEM_ID, C.ITEM_IDX, previous, views)
    gold_target = Target(
        name="gold_training", source=gold, version=version, frame=training,
        expectations=suites.training_suite(value_col=value_col, rating_min=low, rating_max=high,
                                           latest_ts=latest_ts(), user_map_view=user_view, item_map_view=item_view),
        profile=ProfileSpec(user_col=C.USER_ID, item_col=C.ITEM_ID, null_cols=(value_col,), value_col=value_col),
    )
    return StageChecks([gold_target, users, items])


# ---------------------------------------------------------------------------------------------- recommendations


def recommendation_checks(spark, lake: Lake, model_version: str | None, n: int | None,
                          views: TempViews) -> StageChecks:
    """One model version's lists (default: the latest trained) and popular items; ``n`` default: the largest rank."""
    model_version = model_version or latest_model_version(spark, lake)
    meta = model_run(spark, lake, model_version)
    where = version_predicate(model_version)
    recs_path, popular_path = lake.user_recommendations, lake.popular_items
    for path in (recs_path, popular_path):
        require_table(spark, path, "run jobs.score first")
    recs = tables.read(spark, recs_path).where(where)
    popular = tables.read(spark, popular_path).where(where)
    if n is None:
        n = recs.agg(F.max(C.RANK)).first()[0] or 1  # an empty table fails "not empty", whatever n is
    seen = tables.read(spark, meta["training_table"], version=meta["training_version"]).select(C.USER_ID, C.ITEM_ID)
    seen_view = views.add(seen, "seen")
    targets = [
        Target(name="user_recommendations", source=recs_path, version=tables.version(spark, recs_path), frame=recs,
               expectations=suites.recommendations_suite(n=int(n), seen_view=seen_view),
               profile=ProfileSpec(user_col=C.USER_ID, item_col=C.ITEM_ID, value_col=C.SCORE)),
        Target(name="popular_items", source=popular_path, version=tables.version(spark, popular_path),
               frame=popular, expectations=suites.popular_items_suite()),
    ]
    return StageChecks(targets, model_version=model_version)


# ---------------------------------------------------------------------------------------------- snapshot


def snapshot_checks(spark, lake: Lake, snapshot_root: str | None, model_version: str | None) -> StageChecks:
    """A published snapshot (default: the one LATEST names; with ``model_version``, serving.snapshot.published_dir):
    its manifest verifies, then its tables' suites."""
    root = snapshot_store.snapshot_root(spark, lake, snapshot_root)
    try:
        version_dir = (snapshot.published_dir(root, model_version) if model_version
                       else snapshot.latest_version_dir(root))
    except snapshot.SnapshotError as exc:
        raise GateSetupError(f"no snapshot to check: {exc}") from None
    check = CheckResult(target="snapshot", name="snapshot_manifest_verifies", kind=CUSTOM, success=True,
                        description="the manifest, file checksums, row counts and schemas verify "
                                    "(serving.snapshot.verify_snapshot, as the lookup service does)")
    try:
        manifest = snapshot.verify_snapshot(version_dir)
    except snapshot.SnapshotError as exc:
        check.success, check.error = False, str(exc)
        return StageChecks(extra=[check], model_version=snapshot.model_version_of(version_dir.name))
    check.observed = {"model_version": manifest.model_version, "n": manifest.n,
                      **{f"{name}_rows": entry["rows"] for name, entry in manifest.tables.items()}}
    named = CheckResult(target="snapshot", name="snapshot_names_its_folder", kind=CUSTOM,
                        success=manifest.model_version == snapshot.model_version_of(version_dir.name),
                        description="the snapshot folder is named after the manifest's model_version",
                        observed=manifest.model_version, expected=version_dir.name)
    lists_dir, popular_dir = manifest.table_dir("user_recommendations"), manifest.table_dir("popular_items")
    targets = [
        Target(name="snapshot_user_recommendations", source=str(lists_dir),
               frame=suites.snapshot_lists_frame(spark.read.parquet(snapshot_store.spark_uri(lists_dir))),
               expectations=suites.snapshot_lists_suite(n=manifest.n,
                                                        rows=manifest.tables["user_recommendations"]["rows"])),
        Target(name="snapshot_popular_items", source=str(popular_dir),
               frame=spark.read.parquet(snapshot_store.spark_uri(popular_dir)),
               expectations=suites.popular_items_suite(rows=manifest.tables["popular_items"]["rows"])),
    ]
    return StageChecks(targets, [check, named], manifest.model_version)
