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

from flow.ingest import (DEFAULT_BOT_MAX_EVENTS_PER_DAY, FUTURE_TOLERANCE_S, PARTITION_GRAINS, ConservationError,
                         IngestOptions, ingest, print_summary)
from jobs.cli import add_lake_arg, base_parser, comma_list, spark_from_args
from lake.registry import Lake
from transforms import parse


def build_parser():
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="a file, a folder (read recursively) or a glob of input files")
    parser.add_argument("--format", required=True, choices=sorted(parse.FORMATS),
                        help="; ".join(f"{f.name}: {f.description}" for f in parse.FORMATS.values()))
    add_lake_arg(parser)
    parser.add_argument("--run-id", default=None, help="ingest run id (default: a new UUID)")
    parser.add_argument("--incremental", action="store_true",
                        help="read only files not yet in meta/ingested_files (same path, size and modification time)")
    parser.add_argument("--partition-grain", choices=sorted(PARTITION_GRAINS), default=None,
                        help="silver partitions: date (event_date) or month (event_month); default: the existing "
                             "table's, else date for event logs and month for rating files")
    parser.add_argument("--rating-min", type=float, default=None, help="lowest valid rating (default: the format's)")
    parser.add_argument("--rating-max", type=float, default=None, help="highest valid rating (default: the format's)")
    events = parser.add_argument_group("event logs")
    events.add_argument("--event-types", default=None,
                        help=f"comma-separated known event types (default: {','.join(parse.DEFAULT_EVENT_TYPES)}); "
                             "others are quarantined as unknown_event_type")
    events.add_argument("--columns", default=None,
                        help=f"CSV field order (default: {','.join(parse.EVENT_FIELDS)}); other names are ignored")
    events.add_argument("--max-value", type=float, default=None,
                        help="largest value of a non-rating event (quantity, dwell s); default 1e6")
    parser.add_argument("--bot-max-events-per-day", type=int, default=None,
                        help="quarantine (bot_suspected) all events of a user-day with more good events than this "
                             f"in one run; 0 = off (default: {DEFAULT_BOT_MAX_EVENTS_PER_DAY:,} for event logs, off "
                             "for rating files)")
    parser.add_argument("--future-tolerance-hours", type=float, default=FUTURE_TOLERANCE_S / 3600,
                        help="events later than now plus this are quarantined as future_timestamp")
    parser.add_argument("--progress-every", type=float, default=30.0,
                        help="seconds between progress lines on long runs (0: off)")
    return parser


def options_from_args(args) -> IngestOptions:
    return IngestOptions(
        run_id=args.run_id, incremental=args.incremental, partition_grain=args.partition_grain,
        rating_min=args.rating_min, rating_max=args.rating_max, event_types=comma_list(args.event_types),
        columns=tuple(args.columns.split(",")) if args.columns else None, max_value=args.max_value,
        bot_max_events_per_day=args.bot_max_events_per_day, future_tolerance_hours=args.future_tolerance_hours,
        progress_every=args.progress_every)


def run(spark, args) -> dict:
    """Ingest as the flags say, print the summary (also when the accounting fails) and return it."""
    try:
        summary = ingest(spark, Lake(args.lake), args.input, args.format, options_from_args(args))
    except ConservationError as failed:
        print_summary(failed.summary)
        raise
    print_summary(summary)
    return summary


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    spark = spark_from_args("recsys-ingest", args)
    try:
        run(spark, args)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
