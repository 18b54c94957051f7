"""List the lake's runs and their state: succeeded, failed (with the error) or started with no finish.

    python -m jobs.runs --lake ./data-lake                  # the newest runs of every kind
    python -m jobs.runs --lake ./data-lake --kind ingest --limit 50

A run with no finish died (kill -9, a lost machine) or is still running; it is shown with the rows its commits
wrote to each table, found in Delta's history by the run's tag. So is a run whose tag is on commits but that has
no record at all (from before run records: it died or failed). What the records are: flow/runs.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/runs.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from flow.runs import RUN_TABLES, STARTED, UNRECORDED, run_listing
from jobs.cli import lake_parser, print_json, run_job
from lake.registry import Lake


def build_parser():
    parser = lake_parser(__doc__)
    parser.add_argument("--kind", choices=sorted(RUN_TABLES), default=None, help="one kind of run (default: all)")
    parser.add_argument("--limit", type=int, default=20, help="newest runs shown per kind")
    return parser


def run_line(run: dict) -> str:
    """One run as a line; a run with no finish gets the rows it committed per table after it."""
    at = f"{run['at']:%Y-%m-%d %H:%M:%S}" if run["at"] else "-"
    line = f"{run['kind']:<9} {run['run_id']}  {at}  {run['state']}"
    if run["state"] in (STARTED, UNRECORDED):
        wrote = ", ".join(f"{table} {c['rows']:,} rows (v{', v'.join(map(str, c['versions']))})"
                          for table, c in sorted(run["committed"].items()))
        why = "no finish (died, or still running)" if run["state"] == STARTED else "no record (died or failed)"
        line += f" with {why}: {wrote or 'committed nothing'}"
    elif run["error"]:
        line += f": {run['error'].splitlines()[0]}"  # the type and first line; the JSON line has all of it
    return line


def run(spark, args) -> list[dict]:
    listed = run_listing(spark, Lake(args.lake), kinds=(args.kind,) if args.kind else None, limit=args.limit)
    for entry in listed:
        print(run_line(entry))
    unfinished = sum(r["state"] in (STARTED, UNRECORDED) for r in listed)
    print(f"runs: {len(listed)} listed, {unfinished} with no finish")
    print_json({"runs": listed})
    return listed


def main(argv=None) -> int:
    return run_job("recsys-runs", build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
