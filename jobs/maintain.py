"""Delta table maintenance: compact small files (OPTIMIZE, Z-ORDER where it helps), VACUUM old files, show history.

    python -m jobs.maintain --lake ./lake                                  # every table: optimize + vacuum 168 h
    python -m jobs.maintain --lake ./lake --tables silver/interactions --partition-filter "event_date >= '2024-03-01'"
    python -m jobs.maintain --lake ./lake --history-only                   # just show what happened to each table

For each table (default: every Delta table under the lake's bronze/silver/quarantine/gold/meta folders):

- OPTIMIZE bin-packs small files (delta-io/delta#815: appends and MERGEs leave many); tables in ZORDER_BY are
  Z-ordered on columns people filter by (silver.interactions by user_id, item_id), so Delta's per-file min/max
  statistics skip most files for a user's or an item's events. ``--partition-filter`` limits the work to recent
  partitions of partitioned tables (OSS Delta rewrites every file of a Z-ORDERed partition each time).
- VACUUM deletes files no version within ``--vacuum-hours`` still needs. Delta refuses less than 168 h (7 days)
  by default because a shorter window breaks time travel and can delete files a running reader or writer still
  uses (delta-io/delta#174); this job refuses too unless ``--allow-short-retention`` is given.
- The last ``--history`` commits are printed (version, time, operation, rows and files), with file counts before
  and after, and a row per table is appended to meta/maintenance_runs.

Time travel: any version still within the retention window can be read back,
``spark.read.format("delta").option("versionAsOf", 12).load("<lake>/silver/interactions")`` (or
``timestampAsOf``), and a table can be rolled back with ``DeltaTable.forPath(spark, path).restoreToVersion(12)``
or ``RESTORE TABLE delta.`<path>` TO VERSION AS OF 12`` (RESTORE is itself a new commit, so it can be undone).
"""
from __future__ import annotations

import datetime as dt
import json
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/maintain.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from delta.tables import DeltaTable
from pyspark.sql import functions as F

from jobs import tables
from jobs.cli import Lake, add_lake_arg, base_parser, spark_from_args
from jobs.ingest import session_conf

SAFE_RETENTION_HOURS = 168.0  # Delta's default delta.deletedFileRetentionDuration (7 days)
LAYERS = ("bronze", "silver", "quarantine", "gold", "meta")
# Z-ORDER columns per table: the columns queries filter on and that are not partition columns.
ZORDER_BY = {
    "silver/interactions": ("user_id", "item_id"),
    "gold/user_recommendations": ("user_id",),
}
MAINTENANCE_RUNS = ("meta", "maintenance_runs")
HISTORY_METRICS = ("numOutputRows", "numTargetRowsInserted", "numSourceRows", "numFiles", "numAddedFiles",
                   "numRemovedFiles", "numTargetFilesAdded", "numDeletedFiles")


class UnsafeRetentionError(ValueError):
    """--vacuum-hours is below Delta's safe 168 h and --allow-short-retention was not given."""


def build_parser():
    parser = base_parser(__doc__.split("\n\n")[0])
    add_lake_arg(parser)
    parser.add_argument("--tables", default=None,
                        help="comma-separated layer/name tables (default: every Delta table in the lake)")
    parser.add_argument("--vacuum-hours", type=float, default=SAFE_RETENTION_HOURS,
                        help="keep files any version of the last this-many hours needs")
    parser.add_argument("--allow-short-retention", action="store_true",
                        help="allow --vacuum-hours below 168 (breaks time travel further back; unsafe with "
                             "concurrent readers or writers)")
    parser.add_argument("--no-optimize", action="store_true", help="skip OPTIMIZE")
    parser.add_argument("--no-vacuum", action="store_true", help="skip VACUUM")
    parser.add_argument("--no-zorder", action="store_true", help="compaction only, no Z-ORDER")
    parser.add_argument("--partition-filter", default=None,
                        help="OPTIMIZE only partitions matching this predicate on partition columns (applied to "
                             "the tables whose partition columns it names), e.g. \"event_date >= '2024-03-01'\"")
    parser.add_argument("--history", type=int, default=5, help="commits of history shown per table")
    parser.add_argument("--history-only", action="store_true", help="only show history and file counts")
    return parser


def delta_tables(spark, lake: Lake) -> list[str]:
    """``layer/name`` of every Delta table under the lake's layer folders."""
    jvm = spark.sparkContext._jvm  # noqa: SLF001 - the Hadoop FileSystem API is only reachable through py4j
    pattern = jvm.org.apache.hadoop.fs.Path(f"{lake.root}/{{{','.join(LAYERS)}}}/*/_delta_log")
    fs = pattern.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # noqa: SLF001
    found = []
    for status in fs.globStatus(pattern) or []:
        table_dir = status.getPath().getParent()
        found.append(f"{table_dir.getParent().getName()}/{table_dir.getName()}")
    return sorted(found)


def storage_files(spark, path: str) -> int:
    """Data files on storage (every version's, not only the current one's): what VACUUM can shrink."""
    jvm = spark.sparkContext._jvm  # noqa: SLF001
    root = jvm.org.apache.hadoop.fs.Path(path)
    fs = root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # noqa: SLF001
    count = 0
    listing = fs.listFiles(root, True)
    while listing.hasNext():
        p = listing.next().getPath()
        if "_delta_log" not in p.toString() and p.getName().endswith(".parquet"):
            count += 1
    return count


def table_state(spark, path: str) -> dict:
    detail = DeltaTable.forPath(spark, path).detail().select("numFiles", "sizeInBytes", "partitionColumns").first()
    return {"version": tables.version(spark, path), "files": int(detail["numFiles"]),
            "bytes": int(detail["sizeInBytes"]), "storage_files": storage_files(spark, path),
            "partition_columns": list(detail["partitionColumns"])}


def history_lines(spark, path: str, n: int) -> list[str]:
    """The last ``n`` commits, one short line each."""
    rows = (DeltaTable.forPath(spark, path).history(n)
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


def optimize(spark, path: str, name: str, state: dict, args) -> dict:
    builder = DeltaTable.forPath(spark, path).optimize()
    if filter_applies(args.partition_filter, state["partition_columns"]):
        builder = builder.where(args.partition_filter)
    zorder = () if args.no_zorder else ZORDER_BY.get(name, ())
    result = builder.executeZOrderBy(*zorder) if zorder else builder.executeCompaction()
    metrics = result.select("metrics.numFilesAdded", "metrics.numFilesRemoved").first()
    return {"zorder_by": list(zorder), "files_added": int(metrics["numFilesAdded"]),
            "files_removed": int(metrics["numFilesRemoved"])}


def vacuum(spark, path: str, hours: float, allow_short: bool) -> None:
    settings = {"spark.databricks.delta.retentionDurationCheck.enabled": "false"} if allow_short else {}
    with session_conf(spark, settings):
        DeltaTable.forPath(spark, path).vacuum(hours)


def run(spark, args) -> dict:
    if args.vacuum_hours < SAFE_RETENTION_HOURS and not args.allow_short_retention and not args.no_vacuum \
            and not args.history_only:
        raise UnsafeRetentionError(
            f"--vacuum-hours {args.vacuum_hours:g} is below Delta's safe {SAFE_RETENTION_HOURS:g} h: versions older "
            "than that could no longer be read (time travel) and a concurrent reader or writer could lose files "
            "it still uses. Pass --allow-short-retention to do it anyway.")
    lake = Lake(args.lake)
    run_id = uuid.uuid4().hex
    started = time.time()
    names = [t.strip() for t in args.tables.split(",")] if args.tables else delta_tables(spark, lake)
    report = {"run_id": run_id, "lake": args.lake, "vacuum_hours": args.vacuum_hours, "tables": {}}
    for name in names:
        layer, _, table = name.partition("/")
        path = lake.table(layer, table)
        if not tables.exists(spark, path):
            raise FileNotFoundError(f"no Delta table at {path} (from --tables {name})")
        t0 = time.time()
        before = table_state(spark, path)
        entry = {"before": before}
        if not args.history_only:
            if not args.no_optimize:
                entry["optimize"] = optimize(spark, path, name, before, args)
            if not args.no_vacuum:
                vacuum(spark, path, args.vacuum_hours, args.allow_short_retention)
                entry["vacuumed"] = True
            entry["after"] = table_state(spark, path)
        entry["seconds"] = round(time.time() - t0, 1)
        entry["history"] = history_lines(spark, path, args.history)
        report["tables"][name] = entry
        print_table(name, entry)
    report["seconds"] = round(time.time() - started, 1)
    if not args.history_only and names:
        record(spark, lake, report)
    print(f"maintain: {len(names)} table(s) in {report['seconds']} s")
    print(json.dumps(report, default=str), file=sys.stderr)
    return report


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


def record(spark, lake: Lake, report: dict) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    rows = [(report["run_id"], now, name, e["before"]["version"], e["after"]["version"], e["before"]["files"],
             e["after"]["files"], e["before"]["storage_files"], e["after"]["storage_files"],
             ",".join((e.get("optimize") or {}).get("zorder_by", [])), bool(e.get("vacuumed")),
             float(report["vacuum_hours"]), float(e["seconds"]))
            for name, e in report["tables"].items()]
    df = spark.createDataFrame(rows, "run_id string, at timestamp, table string, version_before long, "
                                     "version_after long, files_before long, files_after long, "
                                     "storage_files_before long, storage_files_after long, zorder_by string, "
                                     "vacuumed boolean, vacuum_hours double, seconds double")
    tables.append(df.coalesce(1), lake.table(*MAINTENANCE_RUNS))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    spark = spark_from_args("recsys-maintain", args)
    try:
        run(spark, args)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
