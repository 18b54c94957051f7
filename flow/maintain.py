"""Delta table maintenance: compact small files (OPTIMIZE, Z-ORDER where it helps), VACUUM old files, show history.

    report = maintain(spark, Lake("./data-lake"), MaintainOptions(history_only=True))

For each table (default: every Delta table under the lake's bronze/silver/quarantine/gold/meta folders):

- OPTIMIZE bin-packs small files (delta-io/delta#815: appends and MERGEs leave many); tables in ZORDER_BY are
  Z-ordered on columns people filter by (silver.interactions by user_id, item_id), so Delta's per-file min/max
  statistics skip most files for a user's or an item's events. ``partition_filter`` limits the work to recent
  partitions of partitioned tables (OSS Delta rewrites every file of a Z-ORDERed partition each time).
- VACUUM deletes files no version within ``vacuum_hours`` still needs. Delta refuses less than 168 h (7 days)
  by default because a shorter window breaks time travel and can delete files a running reader or writer still
  uses (delta-io/delta#174); this job refuses too unless ``allow_short_retention`` is given.
- The last ``history`` commits are printed (version, time, operation, rows and files), with file counts before
  and after, and a row per table is appended to meta/maintenance_runs.
- The snapshot root (default <lake>/snapshots) loses its leftovers and superseded snapshots older than a day, as
  publish does after each run (flow/snapshot_retention.py states the rule; skipped with ``history_only``).

Time travel: any version still within the retention window can be read back,
``spark.read.format("delta").option("versionAsOf", 12).load("<lake>/silver/interactions")`` (or
``timestampAsOf``), and a table can be rolled back with ``DeltaTable.forPath(spark, path).restoreToVersion(12)``
or ``RESTORE TABLE delta.`<path>` TO VERSION AS OF 12`` (RESTORE is itself a new commit, so it can be undone).
"""
from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass

from flow.snapshot_retention import clean_snapshots
from flow import runs
from lake import fs, tables
from flow import snapshot_store
from lake.registry import LAYERS, Lake

SAFE_RETENTION_HOURS = 168.0  # Delta's default delta.deletedFileRetentionDuration (7 days)
# Z-ORDER columns per table: the columns queries filter on and that are not partition columns.
ZORDER_BY = {
    "silver/interactions": ("user_id", "item_id"),
    "gold/user_recommendations": ("user_id",),
}
HISTORY_METRICS = ("numOutputRows", "numTargetRowsInserted", "numSourceRows", "numFiles", "numAddedFiles",
                   "numRemovedFiles", "numTargetFilesAdded", "numDeletedFiles")


class UnsafeRetentionError(ValueError):
    """--vacuum-hours is below Delta's safe 168 h and --allow-short-retention was not given."""


@dataclass(frozen=True)
class MaintainOptions:
    """``tables``: ``layer/name`` entries (None: every Delta table in the lake)."""
    tables: tuple[str, ...] | None = None
    vacuum_hours: float = SAFE_RETENTION_HOURS
    allow_short_retention: bool = False
    optimize: bool = True
    vacuum: bool = True
    zorder: bool = True
    partition_filter: str | None = None
    history: int = 5
    history_only: bool = False
    clean_snapshots: bool = True  # apply flow.snapshot_retention to the snapshot root
    snapshot_root: str | None = None  # folder or s3a:// URI of snapshots (None: the lake's snapshots folder)


def check_retention(options: MaintainOptions) -> None:
    """UnsafeRetentionError when a VACUUM would run with less than SAFE_RETENTION_HOURS and that was not allowed."""
    if (options.vacuum_hours < SAFE_RETENTION_HOURS and not options.allow_short_retention and options.vacuum
            and not options.history_only):
        raise UnsafeRetentionError(
            f"--vacuum-hours {options.vacuum_hours:g} is below Delta's safe {SAFE_RETENTION_HOURS:g} h: versions "
            "older than that could no longer be read (time travel) and a concurrent reader or writer could lose "
            "files it still uses. Pass --allow-short-retention to do it anyway.")


def maintain(spark, lake: Lake, options: MaintainOptions = MaintainOptions()) -> dict:
    """Optimize and vacuum each table (or only read its state and history); returns the report, with one entry
    per table. Unless ``history_only``, the run is recorded in meta/maintenance_runs (flow.runs): ``started``
    before its first table, then a row per table it finished, ``succeeded``, or ``failed`` with the error."""
    check_retention(options)
    names = list(options.tables) if options.tables else delta_tables(spark, lake)
    report = {"run_id": uuid.uuid4().hex, "lake": lake.root, "vacuum_hours": options.vacuum_hours, "tables": {}}
    if options.history_only or not names:
        return _maintain_tables(spark, lake, names, options, report)
    record(spark, lake, report, runs.STARTED)
    with runs.finished(lambda state, error: record(spark, lake, report, state, error)):
        _maintain_tables(spark, lake, names, options, report)
    return report


def _maintain_tables(spark, lake: Lake, names: list[str], options: MaintainOptions, report: dict) -> dict:
    """maintain's work on each table of ``names``, into ``report["tables"]``; returns ``report``."""
    started = time.time()
    for name in names:
        layer, _, table = name.partition("/")
        path = lake.table(layer, table)
        if not tables.exists(spark, path):
            raise FileNotFoundError(f"no Delta table at {path} (from --tables {name})")
        report["tables"][name] = maintain_table(spark, path, name, options)
    if options.clean_snapshots and not options.history_only:
        report["snapshots"] = clean_snapshot_root(spark, lake, options)
    report["seconds"] = round(time.time() - started, 1)
    return report


def clean_snapshot_root(spark, lake: Lake, options: MaintainOptions) -> dict:
    """flow.snapshot_retention.clean_snapshots on the snapshot root (a folder or an object-storage URI):
    {"root", "removed", "not_removed"}."""
    root = snapshot_store.snapshot_root(spark, lake, options.snapshot_root)
    cleanup = clean_snapshots(root)
    return {"root": str(root), "removed": cleanup.removed, "not_removed": cleanup.failed}


def maintain_table(spark, path: str, name: str, options: MaintainOptions) -> dict:
    started = time.time()
    before = table_state(spark, path)
    entry = {"before": before}
    if not options.history_only:
        if options.optimize:
            entry["optimize"] = optimize(spark, path, name, before, options)
        if options.vacuum:
            tables.vacuum(spark, path, options.vacuum_hours, allow_short_retention=options.allow_short_retention)
            entry["vacuumed"] = True
        entry["after"] = table_state(spark, path)
    entry["seconds"] = round(time.time() - started, 1)
    entry["history"] = history_lines(spark, path, options.history)
    return entry


def delta_tables(spark, lake: Lake) -> list[str]:
    """``layer/name`` of every Delta table under the lake's layer folders."""
    found = fs.glob_parents(spark, f"{lake.root}/{{{','.join(LAYERS)}}}/*/_delta_log")
    return sorted(f"{layer}/{table}" for layer, table in found)


def table_state(spark, path: str) -> dict:
    """Version, files and bytes of the current version, data files on storage (every version's: what VACUUM can
    shrink) and partition columns."""
    return {"version": tables.version(spark, path), **tables.detail(spark, path),
            "storage_files": fs.count_files(spark, path, suffix=".parquet", skip="_delta_log")}


def history_lines(spark, path: str, n: int) -> list[str]:
    """The last ``n`` commits, one short line each."""
    rows = (tables.history(spark, path, n)
            .select("version", "timestamp", "operation", "operationMetrics", "userMetadata").collect())
    lines = []
    for r in rows:
        metrics = r["operationMetrics"] or {}
        shown = " ".join(f"{k}={metrics[k]}" for k in HISTORY_METRICS if k in metrics)
        who = f"  [{r['userMetadata']}]" if r["userMetadata"] else ""
        lines.append(f"    v{r['version']:<5} {r['timestamp']:%Y-%m-%d %H:%M:%S}  {r['operation']:<18} {shown}{who}")
    return lines


def filter_applies(partition_filter: str | None, partition_columns: list[str]) -> bool:
    return bool(partition_filter) and any(c in partition_filter for c in partition_columns)


def optimize(spark, path: str, name: str, state: dict, options: MaintainOptions) -> dict:
    where = options.partition_filter if filter_applies(options.partition_filter, state["partition_columns"]) else None
    zorder = ZORDER_BY.get(name, ()) if options.zorder else ()
    return {"zorder_by": list(zorder), **tables.optimize(spark, path, where=where, zorder_by=zorder)}


def print_table(name: str, entry: dict) -> None:
    before, after = entry["before"], entry.get("after")
    line = f"{name}  v{before['version']}  files {before['files']:,} (on storage {before['storage_files']:,})"
    if after:
        line += f" -> {after['files']:,} (on storage {after['storage_files']:,})  v{after['version']}"
    opt = entry.get("optimize")
    if opt:
        z = f", z-order by {', '.join(opt['zorder_by'])}" if opt["zorder_by"] else ""
        line += f"  optimize: -{opt['files_removed']} +{opt['files_added']} files{z}"
    print(f"{line}  {entry['seconds']} s")
    for history_line in entry["history"]:
        print(history_line)


MAINTENANCE_RUNS_SCHEMA = (
    "run_id string, at timestamp, table string, version_before long, version_after long, files_before long, "
    "files_after long, storage_files_before long, storage_files_after long, zorder_by string, vacuumed boolean, "
    "vacuum_hours double, seconds double")


def record(spark, lake: Lake, report: dict, state: str, error: str | None = None) -> None:
    """Append the run's rows to meta/maintenance_runs in ``state`` (flow.runs.record, with ``error``): a row per
    table it finished, or one row naming no table when it finished none (the ``started`` row among them)."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    rows = [(report["run_id"], now, name, e["before"]["version"], e["after"]["version"], e["before"]["files"],
             e["after"]["files"], e["before"]["storage_files"], e["after"]["storage_files"],
             ",".join((e.get("optimize") or {}).get("zorder_by", [])), bool(e.get("vacuumed")),
             float(report["vacuum_hours"]), float(e["seconds"]))
            for name, e in report["tables"].items() if "after" in e]
    if not rows:
        rows = [(report["run_id"], now, *[None] * 9, float(report["vacuum_hours"]), None)]
    runs.record(spark, lake.maintenance_runs, spark.createDataFrame(rows, MAINTENANCE_RUNS_SCHEMA), state=state,
                error=error, tag=runs.tag("maintain", report["run_id"]))
