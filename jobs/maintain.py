"""Delta table maintenance: compact small files (OPTIMIZE, Z-ORDER where it helps), VACUUM old files, show history.

    python -m jobs.maintain --lake ./data-lake                             # every table: optimize + vacuum 168 h
    python -m jobs.maintain --lake ./data-lake --tables silver/interactions \\
        --partition-filter "event_date >= '2024-03-01'"
    python -m jobs.maintain --lake ./data-lake --history-only              # just show what happened to each table

What each step does and why: flow/maintain.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/maintain.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from flow.maintain import SAFE_RETENTION_HOURS, MaintainOptions, maintain, print_table
from jobs.cli import comma_list, lake_parser, print_json, run_job
from lake.registry import Lake


def build_parser():
    parser = lake_parser(__doc__)
    parser.add_argument("--history-only", action="store_true", help="only show history and file counts")
    parser.add_argument("--history", type=int, default=5, help="commits of history shown per table")
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
    parser.add_argument("--snapshot-root", default=None,
                        help="snapshot folder whose leftovers and superseded snapshots older than a day are "
                             "removed (default: <lake>/snapshots)")
    parser.add_argument("--no-snapshot-cleanup", dest="clean_snapshots", action="store_false",
                        help="leave the snapshot folder as it is")
    return parser


def run(spark, args) -> dict:
    options = MaintainOptions(
        tables=comma_list(args.tables), vacuum_hours=args.vacuum_hours,
        allow_short_retention=args.allow_short_retention, optimize=not args.no_optimize, vacuum=not args.no_vacuum,
        zorder=not args.no_zorder, partition_filter=args.partition_filter, history=args.history,
        history_only=args.history_only, clean_snapshots=args.clean_snapshots, snapshot_root=args.snapshot_root)
    report = maintain(spark, Lake(args.lake), options)
    for name, entry in report["tables"].items():
        print_table(name, entry)
    if report.get("snapshots", {}).get("removed"):
        print(f"snapshots: removed {', '.join(report['snapshots']['removed'])}")
    print(f"maintain: {len(report['tables'])} table(s) in {report['seconds']} s")
    return print_json(report)


def main(argv=None) -> int:
    return run_job("recsys-maintain", build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
