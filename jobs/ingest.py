"""Ingest interaction logs into the lake: bronze (raw rows), silver (clean, deduplicated), quarantine (rejected).

    python -m jobs.ingest --input incoming/ --format events --lake ./data-lake --incremental
    python -m jobs.ingest --input ratings.csv --format movielens --lake ./data-lake

Formats: event logs (``events`` CSV lines, ``events-json`` JSON lines, ``events-parquet``), rating files
(``movielens``, ``movielens-100k``, ``movietweetings``) and pairs without times (``pairs`` CSV or TSV lines,
``pairs-parquet``); see ``--help``. What a run does: flow/ingest.py.

This job reads every matched file unless ``--incremental`` is given (jobs.nightly and the pipeline's ingest step
skip files already ingested by default). Run by hand, ingest is mostly a first load or a re-read after changing
flags (``--event-types``, ``--rating-max``, ``--columns``, ...); skipping files seen before would then silently
ignore the new flags for them. A full re-read is safe: silver gains nothing (MERGE on the event key), only bronze
and quarantine record the rows again under the new run id.

A run that rejects more than ``--max-rejected-share`` of its rows (default half) exits non-zero with the top
reasons, the first row of each and the columns the format expects, and leaves silver as it was.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/ingest.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from flow.ingest import ConservationError, ingest, print_summary
from jobs.cli import add_ingest_options_args, add_input_args, ingest_options_from_args, lake_parser, run_job
from lake.registry import Lake


def build_parser():
    parser = lake_parser(__doc__)
    add_input_args(parser, input_help="a file, a folder (read recursively) or a glob of input files")
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
