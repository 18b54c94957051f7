"""Publish a scored model version as a serving snapshot for the lookup service.

    python -m jobs.publish --lake ./lake [--model-version V] [--snapshot-root ./lake/snapshots]

Writes a new folder <snapshot-root>/<model_version>~<UTC stamp>-<hex>/ (parquet tables + manifest.json with row
counts and checksums, see serving/snapshot.py), verifies it as the service will, and only then replaces
<snapshot-root>/LATEST (atomically, last). A failure or a kill at any step leaves LATEST, and so what is served,
on a complete snapshot. Publishing a version that is already published and intact only re-points LATEST (use
--force to build a new folder). The optional similar_items table is included when gold/similar_items has rows
for the version (jobs.score --similar als|cooccurrence). Then leftovers and superseded snapshots older than a
day are removed (flow/snapshot_retention.py states the rule).

The snapshot root is a local folder (in a cluster, a volume shared with the lookup service).
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/publish.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from flow.publish import PublishOptions, publish
from jobs.cli import lake_parser, print_json, run_job
from lake.registry import Lake


def build_parser():
    parser = lake_parser(__doc__)
    parser.add_argument("--model-version", default=None, help="scored model version to publish (default: the latest trained)")
    parser.add_argument("--snapshot-root", default=None,
                        help="folder or s3a:// URI of the snapshots (default: <lake>/snapshots)")
    parser.add_argument("--force", action="store_true",
                        help="build a new snapshot folder even if this version has an intact one")
    return parser


def main(argv=None) -> int:
    return run_job("recsys-publish", build_parser, run, argv)


def options(args) -> PublishOptions:
    return PublishOptions(model_version=args.model_version, snapshot_root=args.snapshot_root, force=args.force)


def run(spark, args) -> dict:
    summary = publish(spark, Lake(args.lake), options(args))
    if summary["reused"]:
        print(f"publish {summary['model_version']}: already published and intact at {summary['path']}; "
              "LATEST points at it")
        return summary
    print(f"publish {summary['model_version']} -> {summary['path']}  ({summary['seconds']} s); LATEST points at it")
    for table, rows in summary["rows"].items():
        print(f"  {table:<22} {rows:>12,} rows")
    if summary["removed"]:
        print(f"  removed from the snapshot root: {', '.join(summary['removed'])}")
    return print_json(summary)


if __name__ == "__main__":
    sys.exit(main())
