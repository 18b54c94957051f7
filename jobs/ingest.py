"""Ingest interaction logs into the lake: bronze (raw rows), silver (clean, deduplicated), quarantine (rejected).

    python -m jobs.ingest --input incoming/ --format events --lake ./data-lake --incremental
    python -m jobs.ingest --input ratings.csv --format movielens --lake ./data-lake

Formats: event logs (``events`` CSV lines, ``events-json`` JSON lines, ``events-parquet``) and rating files
(``movielens``, ``movielens-100k``, ``movietweetings``); see ``--help``. What a run does: flow/ingest.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/ingest.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from flow.ingest import ConservationError, ingest, print_summary
from jobs.cli import add_ingest_options_args, add_lake_arg, base_parser, ingest_options_from_args, run_job
from lake.registry import Lake
from transforms import parse


def build_parser():
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="a file, a folder (read recursively) or a glob of input files")
    parser.add_argument("--format", required=True, choices=sorted(parse.FORMATS),
                        help="; ".join(f"{f.name}: {f.description}" for f in parse.FORMATS.values()))
    add_lake_arg(parser)
    add_ingest_options_args(parser)
    return parser


def run(spark, args) -> dict:
    """Ingest as the flags say, print the summary (also when the accounting fails) and return it."""
    try:
        summary = ingest(spark, Lake(args.lake), args.input, args.format, ingest_options_from_args(args))
    except ConservationError as failed:
        print_summary(failed.summary)
        raise
    print_summary(summary)
    return summary


def main(argv=None) -> int:
    return run_job("recsys-ingest", build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
