"""Data-quality gate: check one stage's data with great-expectations suites and drift checks; exit 1 on failure.

    python -m jobs.validate --lake ./lake --stage raw [--ingest-run-id R]         # after ingest (default: last run)
    python -m jobs.validate --lake ./lake --stage raw --input ratings.csv --format movielens   # before ingest
    python -m jobs.validate --lake ./lake --stage silver
    python -m jobs.validate --lake ./lake --stage training
    python -m jobs.validate --lake ./lake --stage recommendations [--model-version V] [--n 100]
    python -m jobs.validate --lake ./lake --stage snapshot [--snapshot-root R] [--model-version V]

Stages and what they read:
raw: after ingest, the run's own accounting (meta/ingest_runs, from its commits' metrics) and the lines it
  quarantined, nothing re-read; before ingest (--input/--format, plus --ingest-flags), the files read and parsed
  exactly as that ingest will, which costs one extra parse of the input;
silver: silver/interactions; training: gold/training and the id maps silver/user_ids, silver/item_ids;
recommendations: gold/user_recommendations and gold/popular_items of one model version (default: the latest
  trained) and the training table it was trained on; snapshot: a published snapshot folder (default: LATEST).

Each run prints a readable report (every failed check, its observed value and a few bad rows), writes it as JSON
under <reports-dir>/results/<stage>/, appends a row to meta/validation_runs and renders great-expectations
Data Docs (<reports-dir>/data_docs/index.html; <reports-dir> defaults to <lake>/validation). Drift checks
compare each table's profile with the previous successful run of the same stage.

What a failed gate leaves behind: the steps after it do not run, so gold tables and the served snapshot stay the
last good ones. A failed raw or silver gate for an ingest run restores silver to the version before that run (if
nothing committed since; bronze and quarantine keep the rows). A failed snapshot gate points LATEST back at the
last snapshot that passed.

In-process (jobs.nightly): ``gate_step(spark, "after", step, step_result=..., ...)`` runs the gates that follow a
nightly step; ``run_gate(spark, stage, lake=...)`` runs one; both raise GateFailed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/validate.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from pyspark.sql import functions as F

from deploy import snapshot
from jobs import ingest, tables
from jobs.cli import Lake, add_lake_arg, base_parser, local_path, spark_from_args
from jobs.score import version_predicate
from jobs.train import latest_model_version, model_run
from transforms import columns as C
from transforms import parse
from validation import STAGES, suites
from validation.drift import ProfileSpec, resolve_thresholds
from validation.gate import Target, evaluate
from validation.report import CUSTOM, CheckResult, GateFailed, GateResult
from validation.runner import GxRunner

VALIDATION_RUNS = ("meta", "validation_runs")
_LOOK_UP = object()  # run_gate's default for ``previous``: read it from meta/validation_runs
RUNS_SCHEMA = (
    "run_id string, stage string, started_at timestamp, seconds double, success boolean, model_version string, "
    "checks int, failed int, failed_checks string, targets string, metrics string, report_path string, "
    "docs_path string"
)
# Gates the nightly flow runs after its steps: each checks what its step wrote, before the next step reads it.
# (No gate runs before a step by default; GATES_BEFORE is there for a pre-ingest raw check, see run_gate.)
GATES_BEFORE: dict[str, tuple[str, ...]] = {}
GATES_AFTER = {"ingest": ("raw", "silver"), "build_training": ("training",), "score": ("recommendations",),
               "publish": ("snapshot",)}
LATEST_RUN = "latest"


class GateSetupError(RuntimeError):
    """The gate cannot run: what it should check is missing (the message names it and how to produce it)."""


@dataclass
class GateOptions:
    """Settings shared by every gate of a run (flags: ``add_gate_args``)."""

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


def add_gate_args(parser: argparse.ArgumentParser) -> None:
    gates = parser.add_argument_group("data-quality gates")
    gates.add_argument("--drift-thresholds", default=None, metavar="JSON",
                       help='drift limits, e.g. \'{"rows_ratio": [0.8, 1.5], "silver": {"mean_change": 0.1}}\' '
                            "(keys: see validation/drift.py)")
    gates.add_argument("--no-drift", action="store_true", help="skip drift checks (e.g. for a first backfill)")
    gates.add_argument("--max-quarantine-rate", type=float, default=GateOptions.max_quarantine_rate,
                       help="raw: largest share of input lines that may be quarantined")
    gates.add_argument("--rating-scale", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                       help="valid ratings (default: the input format's scale; all formats' when unknown)")
    gates.add_argument("--reports-dir", default=None, help="JSON reports and Data Docs (default: <lake>/validation)")
    gates.add_argument("--docs-dir", default=None, help="Data Docs folder (default: <reports-dir>/data_docs)")
    gates.add_argument("--examples", type=int, default=GateOptions.examples, help="bad rows shown per failed check")


def gate_options(args: argparse.Namespace) -> GateOptions:
    return GateOptions(drift=not args.no_drift, drift_thresholds=args.drift_thresholds,
                       max_quarantine_rate=args.max_quarantine_rate,
                       rating_scale=tuple(args.rating_scale) if args.rating_scale else None,
                       reports_dir=args.reports_dir, docs_dir=args.docs_dir, examples=args.examples)


def build_parser():
    parser = base_parser(__doc__.split("\n\n")[0])
    add_lake_arg(parser)
    parser.add_argument("--stage", required=True, choices=STAGES)
    parser.add_argument("--ingest-run-id", default=None,
                        help=f"raw, silver: the ingest run to check ('{LATEST_RUN}': the newest); on failure its "
                             "rows are taken back out of silver (raw: the default is the newest run)")
    parser.add_argument("--input", default=None, help="raw before ingest: the file(s) ingest will read")
    parser.add_argument("--format", default=None, choices=sorted(parse.FORMATS),
                        help="raw: their format; silver, training: sets the rating scale")
    parser.add_argument("--ingest-flags", default=None, metavar="FLAGS",
                        help='raw, silver: ingest\'s other flags, as one string (e.g. "--incremental --event-types '
                             'view,click"): the raw gate reads and parses as that ingest will')
    parser.add_argument("--table-version", type=int, default=None,
                        help="silver, training: the Delta version to check (default: the latest)")
    parser.add_argument("--model-version", default=None,
                        help="recommendations: default the latest trained; snapshot: default LATEST")
    parser.add_argument("--n", type=int, default=None,
                        help="recommendations: list length (default: the largest rank); snapshot: the manifest's")
    parser.add_argument("--snapshot-root", default=None, help="snapshot: default <lake>/snapshots")
    add_gate_args(parser)
    return parser


def run(spark, args) -> dict:
    ingest_argv = None
    if args.ingest_flags and not (args.input and args.format):
        raise SystemExit("--ingest-flags needs --input and --format too (the ingest command line they belong to)")
    if args.input:
        ingest_argv = ["--lake", args.lake, *(["--input", args.input] if args.input else []),
                       *(["--format", args.format] if args.format else []), *shlex.split(args.ingest_flags or "")]
    result = run_gate(spark, args.stage, lake=args.lake, fmt=args.format, ingest_argv=ingest_argv,
                      ingest_run_id=args.ingest_run_id, model_version=args.model_version, n=args.n,
                      snapshot_root=args.snapshot_root,
                      table_version=args.table_version, options=gate_options(args))
    return result.to_json()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    spark = spark_from_args(f"recsys-validate-{args.stage}", args)
    try:
        run(spark, args)
    except GateFailed as failed:
        print(f"validate: gate {args.stage} failed: {'; '.join(failed.result.failed_names())}", file=sys.stderr)
        return 1
    finally:
        spark.stop()
    return 0


# ---------------------------------------------------------------------------------------------- library entry


def gate_step(spark, when: str, step: str, *, step_argv: list[str] | None = None, step_result: dict | None = None,
              **kwargs) -> list[GateResult]:
    """Run the gates that belong ``when`` ("before" or "after") the nightly ``step``; raises GateFailed.

    ``step_argv`` is the step's own command line and ``step_result`` what its run() returned: after ingest, the
    raw and silver gates check that very run (its id) with its flags (event types, rating scale). Other kwargs
    go to run_gate; passing the same ones after every step is fine.
    """
    if when not in ("before", "after"):
        raise ValueError(f"when must be 'before' or 'after', got {when!r}")
    stages = (GATES_BEFORE if when == "before" else GATES_AFTER).get(step, ())
    if step == "ingest":
        if step_argv is not None:
            kwargs["ingest_argv"] = step_argv
        if when == "after":
            kwargs["ingest_run_id"] = (step_result or {}).get("run_id") or LATEST_RUN
    options = kwargs.get("options") or GateOptions()
    if len(stages) > 1 and options.drift and "lake" in kwargs:  # one read of the run history for every stage
        baselines = previous_successes(spark, Lake(kwargs["lake"]), stages)
        return [run_gate(spark, stage, previous=baselines.get(stage), **kwargs) for stage in stages]
    return [run_gate(spark, stage, **kwargs) for stage in stages]


def run_gate(spark, stage: str, *, lake: str, input: str | None = None, fmt: str | None = None,
             ingest_argv: list[str] | None = None, ingest_run_id: str | None = None,
             model_version: str | None = None, n: int | None = None, snapshot_root: str | None = None,
             table_version: int | None = None, options: GateOptions | None = None, run_id: str | None = None,
             raise_on_failure: bool = True, previous: dict | None | object = _LOOK_UP) -> GateResult:
    """Check ``stage``; record and print the result; raise GateFailed if a check failed (unless told not to).

    Arguments a stage does not use are ignored, so a caller can pass the same ones to every gate. ``previous``:
    the drift baseline when the caller has already read it (``previous_successes``), else it is looked up.
    raw: with ``ingest_run_id`` (a run id or "latest"), or with no input given, checks an ingest run after the
    fact; with ``input``/``fmt`` or ``ingest_argv`` (ingest's command line) alone, parses the files ahead of
    ingest. ``ingest_argv`` also tells the silver gate ingest's event types and rating scale.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {list(STAGES)}")
    opts = options or GateOptions()
    lake_ = Lake(lake)
    ingest_args = _ingest_args(lake, input, fmt, ingest_argv)
    fmt = fmt or (ingest_args.format if ingest_args else None)
    if not opts.drift:
        previous = None
    elif previous is _LOOK_UP:
        previous = previous_success(spark, lake_, stage)
    reports = _reports_dir(lake_, opts)
    docs = opts.docs_dir or (str(reports / "data_docs") if reports else None)
    runner = GxRunner(docs_dir=docs, store_dir=reports / "gx_validation_results" if reports else None,
                      examples=opts.examples)
    views: list[str] = []
    run_id = run_id or uuid.uuid4().hex
    tag = uuid.uuid4().hex[:8]  # names this run's temp views
    try:
        extra, version, ingest_run = [], None, None
        if stage == "raw" and (ingest_run_id is not None or ingest_args is None):  # after ingest: the run itself
            ingest_run = _ingest_run(spark, lake_, ingest_run_id or LATEST_RUN)
            targets, extra = _ingest_run_targets(spark, lake_, ingest_run, opts)
        elif stage == "raw":  # ahead of ingest: the files, parsed as ingest will
            targets, extra = _raw_targets(spark, lake_, ingest_args, opts)
        elif stage == "silver":
            targets = _silver_targets(spark, lake_, table_version, ingest_args, fmt, opts)
        elif stage == "training":
            targets = _training_targets(spark, lake_, table_version, fmt, opts, previous, views, tag)
        elif stage == "recommendations":
            targets, extra, version = _recommendation_targets(spark, lake_, model_version, n, views, tag)
        else:
            targets, extra, version = _snapshot_targets(spark, lake_, snapshot_root, model_version)
        result = evaluate(
            stage, targets, runner=runner, run_id=run_id,
            previous_metrics=(previous or {}).get("metrics"), previous_run_id=(previous or {}).get("run_id"),
            thresholds=resolve_thresholds(stage, opts.drift_thresholds) if opts.drift else None,
            extra_checks=extra, model_version=version)
    finally:
        for view in views:
            spark.catalog.dropTempView(view)

    if stage == "snapshot" and not result.success and opts.restore_latest:
        result.actions.append(_restore_latest(spark, lake_, snapshot_root, result.model_version))
    if stage in ("raw", "silver") and not result.success and opts.restore_silver and ingest_run_id is not None:
        # the run the raw gate just checked, not a re-read (a newer run may have landed since)
        result.actions.append(_restore_silver(spark, lake_, ingest_run or _ingest_run(spark, lake_, ingest_run_id)))
    if reports:
        result.report_path = str(_write_report(reports, result))
    if opts.record:
        record_run(spark, lake_, result)
    print(result.describe(examples=opts.examples), flush=True)
    if not result.success and raise_on_failure:
        raise GateFailed(result)
    return result


# ---------------------------------------------------------------------------------------------- stage targets


def _latest_ts(tolerance_s: float = ingest.FUTURE_TOLERANCE_S) -> dt.datetime:
    """The newest acceptable event time: now plus ingest's tolerance for clock skew (naive UTC, the session zone)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(seconds=tolerance_s)


def _ingest_args(lake: str, input: str | None, fmt: str | None, argv: list[str] | None) -> argparse.Namespace | None:
    """ingest's parsed flags: from its command line, else from input and format alone, else None."""
    if argv is None and input and fmt:
        argv = ["--input", input, "--format", fmt]
    if argv is None:
        return None
    if "--lake" not in argv:
        argv = ["--lake", lake, *argv]
    return ingest.build_parser().parse_args(argv)


def _rating_scale(opts: GateOptions, fmt: str | None,
                  ingest_args: argparse.Namespace | None = None) -> tuple[float, float]:
    """--rating-scale, else ingest's --rating-min/--rating-max, else the format's scale, else all formats' span."""
    if opts.rating_scale:
        return opts.rating_scale
    scale = None
    if fmt:
        f = parse.get_format(fmt)
        scale = (f.rating_min, f.rating_max)
    else:
        scale = (min(f.rating_min for f in parse.FORMATS.values()), max(f.rating_max for f in parse.FORMATS.values()))
    if ingest_args is not None:
        scale = (scale[0] if ingest_args.rating_min is None else ingest_args.rating_min,
                 scale[1] if ingest_args.rating_max is None else ingest_args.rating_max)
    return scale


def _ingest_run(spark, lake: Lake, run_id: str) -> dict:
    """The meta/ingest_runs row of ``run_id`` ("latest": the newest run) as a dict, its summary JSON parsed."""
    path = lake.table(*ingest.INGEST_RUNS)
    _require_table(spark, path, "run jobs.ingest first")
    runs = tables.read(spark, path)
    if run_id == LATEST_RUN:
        row = runs.orderBy(F.col("started_at").desc()).first()
    else:
        row = runs.where(F.col(C.INGEST_RUN_ID) == run_id).first()
    if row is None:
        raise GateSetupError(f"no ingest run {run_id!r} in {path}")
    return {**row.asDict(), "summary": json.loads(row["summary"] or "{}"), "path": path}


def _ingest_run_targets(spark, lake: Lake, run: dict, opts: GateOptions) -> tuple[list[Target], list[CheckResult]]:
    """An ingest run after the fact: its accounting (one row) and the lines it quarantined. Nothing is re-read."""
    run_id = run[C.INGEST_RUN_ID]
    if run["status"] == "nothing new":
        note = CheckResult(target="raw_input", name="nothing_new", kind=CUSTOM, success=True, observed=0,
                           description=f"ingest run {run_id[:8]} found no new input file: nothing to check")
        return [], [note]
    runs = tables.read(spark, run["path"]).where(F.col(C.INGEST_RUN_ID) == run_id)
    targets = [Target(
        name="raw_input", source=f"{run['path']} ({C.INGEST_RUN_ID} {run_id})", frame=suites.ingest_run_frame(runs),
        expectations=suites.ingest_run_suite(max_quarantine_rate=opts.max_quarantine_rate),
        profile=ProfileSpec(rows_col="read", ratios={"quarantine_rate": ("quarantined", "read")}),
    )]
    quarantine = lake.table(*ingest.QUARANTINE)
    if run["quarantined"] and tables.exists(spark, quarantine):
        targets.append(Target(
            name="quarantined_lines", source=quarantine, version=(run["summary"].get("versions") or {}).get("quarantine"),
            frame=tables.read(spark, quarantine).where(F.col(C.INGEST_RUN_ID) == run_id), cache=True,  # read once
            expectations=suites.quarantined_lines_suite(known_reasons=list(parse.REASONS)), drift=False))
    return targets, []


def _raw_targets(spark, lake: Lake, args: argparse.Namespace | None,
                 opts: GateOptions) -> tuple[list[Target], list[CheckResult]]:
    """The input files, read and parsed exactly as jobs.ingest will (its own functions and flags)."""
    if args is None:
        raise GateSetupError("stage raw checks input files: pass --input and --format (as for jobs.ingest)")
    fmt = ingest.input_format(args)
    files = ingest.list_input_files(spark, args.input)
    if args.incremental:
        seen = ingest.already_ingested(spark, lake.table(*ingest.INGESTED_FILES))
        files = [f for f in files if f.key not in seen]
        if not files:
            note = CheckResult(target="raw_input", name="nothing_new", kind=CUSTOM, success=True, observed=0,
                               description="no new input file (--incremental): nothing to check")
            return [], [note]
    event_types = [t.strip() for t in args.event_types.split(",") if t.strip()] if args.event_types else None
    parsed = parse.parse_lines(
        ingest.read_rows(spark, files, fmt), fmt,
        max_event_ts_seconds=int(time.time() + args.future_tolerance_hours * 3600),
        rating_min=args.rating_min, rating_max=args.rating_max,
        **({"event_types": event_types, "max_value": args.max_value} if parse.is_event_format(fmt) else {}))
    target = Target(
        name="raw_input", frame=suites.raw_lines_frame(parsed), source=args.input, cache=True,
        expectations=suites.raw_suite(known_reasons=list(parse.REASONS), max_quarantine_rate=opts.max_quarantine_rate),
        profile=ProfileSpec(rates={"quarantine_rate": F.col(suites.LINE_STATUS) == suites.QUARANTINED_LINE}),
        examples_frame=suites.raw_lines_frame(parsed, keep=(C.RAW, C.SOURCE_FILE)),
    )
    return [target], []


def _require_table(spark, path: str, hint: str) -> None:
    if not tables.exists(spark, path):
        raise GateSetupError(f"no Delta table at {path}: {hint}")


def _silver_targets(spark, lake: Lake, version: int | None, args: argparse.Namespace | None, fmt: str | None,
                    opts: GateOptions) -> list[Target]:
    path = lake.table(*ingest.SILVER)
    _require_table(spark, path, "run jobs.ingest first")
    version = tables.version(spark, path) if version is None else version
    low, high = _rating_scale(opts, fmt, args)
    event_types = list(parse.DEFAULT_EVENT_TYPES)
    max_value, tolerance_s = parse.EventFormat.max_value, ingest.FUTURE_TOLERANCE_S
    if args is not None:
        if args.event_types:
            event_types = [t.strip() for t in args.event_types.split(",") if t.strip()]
        max_value = max_value if args.max_value is None else args.max_value
        tolerance_s = args.future_tolerance_hours * 3600
    return [Target(
        name="silver_interactions", source=path, version=version,
        frame=suites.silver_frame(tables.read(spark, path, version=version)),
        expectations=suites.silver_suite(rating_min=low, rating_max=high, latest_ts=_latest_ts(tolerance_s),
                                         event_types=event_types, max_value=max_value,
                                         columns=list(ingest.SILVER_COLUMNS)),
        profile=ProfileSpec(user_col=C.USER_ID, item_col=C.ITEM_ID, null_cols=(C.VALUE,), value_col=suites.RATING_VALUE),
    )]


def _training_targets(spark, lake: Lake, version: int | None, fmt: str | None, opts: GateOptions,
                      previous: dict | None, views: list[str], tag: str) -> list[Target]:
    gold = lake.table("gold", "training")
    _require_table(spark, gold, "run jobs.build_training first")
    version = tables.version(spark, gold) if version is None else version
    training = tables.read(spark, gold, version=version)
    value_col = C.RATING if C.RATING in training.columns and C.WEIGHT not in training.columns else C.WEIGHT
    low, high = _rating_scale(opts, fmt)
    targets, map_views = [], {}
    for name, id_col, idx_col in (("user_ids", C.USER_ID, C.USER_IDX), ("item_ids", C.ITEM_ID, C.ITEM_IDX)):
        path = lake.table("silver", name)
        _require_table(spark, path, "run jobs.build_training first")
        map_version = tables.version(spark, path)
        id_map = tables.read(spark, path, version=map_version)
        map_views[name] = _temp_view(id_map, f"gate_{tag}_{name}", views)
        before = ((previous or {}).get("targets") or {}).get(name, {}).get("version")
        previous_view = None
        if before is not None and before <= map_version and before >= _oldest_version(spark, path):
            previous_view = _temp_view(tables.read(spark, path, version=before), f"gate_{tag}_{name}_before", views)
        targets.append(Target(name=name, source=path, version=map_version, frame=id_map,
                              expectations=suites.id_map_suite(id_col=id_col, idx_col=idx_col,
                                                               previous_view=previous_view)))
    targets.insert(0, Target(
        name="gold_training", source=gold, version=version, frame=training,
        expectations=suites.training_suite(value_col=value_col, rating_min=low, rating_max=high,
                                           latest_ts=_latest_ts(), user_map_view=map_views["user_ids"],
                                           item_map_view=map_views["item_ids"]),
        profile=ProfileSpec(user_col=C.USER_ID, item_col=C.ITEM_ID, null_cols=(value_col,), value_col=value_col),
    ))
    return targets


def _recommendation_targets(spark, lake: Lake, model_version: str | None, n: int | None, views: list[str],
                            tag: str) -> tuple[list[Target], list[CheckResult], str]:
    model_version = model_version or latest_model_version(spark, lake)
    meta = model_run(spark, lake, model_version)
    where = version_predicate(model_version)
    recs_path, popular_path = lake.table("gold", "user_recommendations"), lake.table("gold", "popular_items")
    for path in (recs_path, popular_path):
        _require_table(spark, path, "run jobs.score first")
    recs = tables.read(spark, recs_path).where(where)
    popular = tables.read(spark, popular_path).where(where)
    if n is None:
        n = recs.agg(F.max(C.RANK)).first()[0] or 1  # an empty table fails "not empty", whatever n is
    seen = tables.read(spark, meta["training_table"], version=meta["training_version"]).select(C.USER_ID, C.ITEM_ID)
    seen_view = _temp_view(seen, f"gate_{tag}_seen", views)
    targets = [
        Target(name="user_recommendations", source=recs_path, version=tables.version(spark, recs_path), frame=recs,
               expectations=suites.recommendations_suite(n=int(n), seen_view=seen_view),
               profile=ProfileSpec(user_col=C.USER_ID, item_col=C.ITEM_ID, value_col=C.SCORE)),
        Target(name="popular_items", source=popular_path, version=tables.version(spark, popular_path),
               frame=popular, expectations=suites.popular_items_suite()),
    ]
    return targets, [], model_version


def _snapshot_targets(spark, lake: Lake, snapshot_root: str | None,
                      model_version: str | None) -> tuple[list[Target], list[CheckResult], str | None]:
    root = local_path(snapshot_root or lake.snapshots)
    try:
        version_dir = root / model_version if model_version else snapshot.latest_version_dir(root)
    except snapshot.SnapshotError as exc:
        raise GateSetupError(f"no snapshot to check: {exc}") from None
    check = CheckResult(target="snapshot", name="snapshot_manifest_verifies", kind=CUSTOM, success=True,
                        description="the manifest, file checksums, row counts and schemas verify "
                                    "(deploy.snapshot.verify_snapshot, as the lookup service does)")
    try:
        manifest = snapshot.verify_snapshot(version_dir)
    except snapshot.SnapshotError as exc:
        check.success, check.error = False, str(exc)
        return [], [check], version_dir.name
    check.observed = {"model_version": manifest.model_version, "n": manifest.n,
                      **{f"{name}_rows": entry["rows"] for name, entry in manifest.tables.items()}}
    named = CheckResult(target="snapshot", name="snapshot_names_its_folder", kind=CUSTOM,
                        success=manifest.model_version == version_dir.name,
                        description="the manifest's model_version is the snapshot folder's name",
                        observed=manifest.model_version, expected=version_dir.name)
    lists_dir, popular_dir = manifest.table_dir("user_recommendations"), manifest.table_dir("popular_items")
    targets = [
        Target(name="snapshot_user_recommendations", source=str(lists_dir),
               frame=suites.snapshot_lists_frame(spark.read.parquet(lists_dir.resolve().as_uri())),
               expectations=suites.snapshot_lists_suite(n=manifest.n,
                                                        rows=manifest.tables["user_recommendations"]["rows"])),
        Target(name="snapshot_popular_items", source=str(popular_dir),
               frame=spark.read.parquet(popular_dir.resolve().as_uri()),
               expectations=suites.popular_items_suite(rows=manifest.tables["popular_items"]["rows"])),
    ]
    return targets, [check, named], manifest.model_version


def _temp_view(df, name: str, views: list[str]) -> str:
    df.createOrReplaceTempView(name)
    views.append(name)
    return name


def _oldest_version(spark, path: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).history().agg(F.min("version")).first()[0])


# ---------------------------------------------------------------------------------------------- silver rollback


def _restore_silver(spark, lake: Lake, run: dict) -> str:
    """Take an ingest run's rows back out of silver (Delta RESTORE to the version before its commit), but only
    if that commit is still silver's latest: a later writer's rows are never thrown away."""
    from delta.tables import DeltaTable

    run_id, path = run[C.INGEST_RUN_ID], lake.table(*ingest.SILVER)
    version = (run["summary"].get("versions") or {}).get("silver")
    if version is None or not tables.exists(spark, path):
        return f"silver left as is: ingest run {run_id[:8]} committed nothing to it"
    table = DeltaTable.forPath(spark, path)
    latest = table.history(1).select("version", "userMetadata").first()
    if latest["userMetadata"] != f"ingest:{run_id}" or latest["version"] != version:
        return (f"silver left at v{latest['version']}: its latest commit is not ingest run {run_id[:8]}'s "
                f"(v{version}); take the run's rows out by hand if needed")
    if version == 0:
        return f"silver left as is: ingest run {run_id[:8]} created it (v0), there is no earlier version to restore"
    table.restoreToVersion(version - 1)
    return (f"silver restored to v{version - 1}, the version before ingest run {run_id[:8]}: its rows are out "
            "(bronze and quarantine keep them)")


# ---------------------------------------------------------------------------------------------- snapshot rollback


def _restore_latest(spark, lake: Lake, snapshot_root: str | None, failed_version: str | None) -> str:
    """Point LATEST back at the newest snapshot that passed its gate, if LATEST names the failed one."""
    root = local_path(snapshot_root or lake.snapshots)
    try:
        current = snapshot.latest_version_dir(root).name
    except snapshot.SnapshotError:
        return "LATEST left as is: there is none"
    if current != failed_version:
        return f"LATEST left at {current} (the failed snapshot {failed_version} is not the one served)"
    runs = tables.read_if_exists(spark, lake.table(*VALIDATION_RUNS))
    candidates = [] if runs is None else [
        r[C.MODEL_VERSION] for r in runs.where((F.col("stage") == "snapshot") & F.col("success")
                                               & (F.col(C.MODEL_VERSION) != failed_version))
        .orderBy(F.col("started_at").desc()).select(C.MODEL_VERSION).limit(20).collect()]
    for good in candidates:
        try:
            snapshot.verify_snapshot(root / good)
        except snapshot.SnapshotError:
            continue
        snapshot.set_latest(root, good)
        return f"LATEST pointed back from {failed_version} to {good}, the last snapshot that passed its gate"
    return f"LATEST still names {failed_version}: no earlier snapshot passed its gate and still verifies"


# ---------------------------------------------------------------------------------------------- run history


def previous_success(spark, lake: Lake, stage: str) -> dict | None:
    """The last successful run of ``stage`` in meta/validation_runs: {"run_id", "metrics", "targets", ...}."""
    return previous_successes(spark, lake, [stage]).get(stage)


def previous_successes(spark, lake: Lake, stages) -> dict[str, dict]:
    """previous_success for several stages in one query (each read of the table costs about a second)."""
    runs = tables.read_if_exists(spark, lake.table(*VALIDATION_RUNS))
    if runs is None:
        return {}
    latest = F.max_by(F.struct("run_id", C.MODEL_VERSION, "metrics", "targets"), "started_at").alias("last")
    rows = (runs.where(F.col("stage").isin(list(stages)) & F.col("success")).groupBy("stage").agg(latest)
            .collect())
    return {r["stage"]: {"run_id": r["last"]["run_id"], "model_version": r["last"][C.MODEL_VERSION],
                         "metrics": json.loads(r["last"]["metrics"]), "targets": json.loads(r["last"]["targets"])}
            for r in rows}


def record_run(spark, lake: Lake, result: GateResult) -> None:
    """Append one row per gate run to meta/validation_runs (profiles included: the next run's drift baseline)."""
    doc = result.to_json()
    row = (result.run_id, result.stage, result.started_at, float(result.seconds), result.success,
           result.model_version, len(result.checks), len(result.failures),
           json.dumps([{"target": c.target, "check": c.name, "description": c.description,
                        "observed": c.observed_text()} for c in result.failures]),
           json.dumps(doc["targets"]), json.dumps(doc["metrics"]), result.report_path, result.docs_path)
    tables.append(tables.one_row(spark, row, RUNS_SCHEMA), lake.table(*VALIDATION_RUNS))


def _reports_dir(lake: Lake, opts: GateOptions) -> Path | None:
    if opts.reports_dir:
        return local_path(opts.reports_dir)
    if "://" in lake.root and not lake.root.startswith("file:"):
        return None  # a remote lake: JSON and Data Docs need a local --reports-dir
    return local_path(lake.root) / "validation"


def _write_report(reports: Path, result: GateResult) -> Path:
    folder = reports / "results" / result.stage
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result.started_at:%Y%m%dT%H%M%SZ}-{result.run_id[:8]}.json"
    result.report_path = str(path)
    path.write_text(json.dumps(result.to_json(), indent=2))
    return path


if __name__ == "__main__":
    sys.exit(main())
