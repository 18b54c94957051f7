"""Ingest a ratings file (or folder of files) into the lake: bronze (raw), silver (clean), quarantine (rejected).

    python -m jobs.ingest --input ratings.csv --format movielens --lake ./lake

Re-running the same input adds nothing to silver (MERGE on the event key). Every line is accounted for:
read = headers + loaded + duplicates + quarantined, checked at the end of each run.
"""
from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/ingest.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from pyspark import StorageLevel
from pyspark.sql import functions as F

from jobs import tables
from jobs.cli import Lake, add_lake_arg, base_parser, spark_from_args
from transforms import columns as C
from transforms import parse

FUTURE_TOLERANCE_S = 24 * 3600


class ConservationError(RuntimeError):
    """Rows were lost or invented between reading and writing."""


def build_parser():
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="a file, a folder or a glob of rating files")
    parser.add_argument("--format", required=True, choices=sorted(parse.RATING_FORMATS),
                        help="; ".join(f"{f.name}: {f.description}" for f in parse.RATING_FORMATS.values()))
    add_lake_arg(parser)
    parser.add_argument("--run-id", default=None, help="ingest run id (default: a new UUID)")
    parser.add_argument("--rating-min", type=float, default=None, help="lowest valid rating (default: the format's)")
    parser.add_argument("--rating-max", type=float, default=None, help="highest valid rating (default: the format's)")
    return parser


def run(spark, args) -> dict:
    lake = Lake(args.lake)
    run_id = args.run_id or uuid.uuid4().hex
    started = time.time()
    fmt = parse.get_format(args.format)
    lines = spark.read.text(args.input).select(
        F.col("value").alias(C.RAW), F.col("_metadata.file_path").alias(C.SOURCE_FILE)
    )
    parsed = parse.parse_rating_lines(
        lines, fmt, max_event_ts_seconds=int(started) + FUTURE_TOLERANCE_S,
        rating_min=args.rating_min, rating_max=args.rating_max,
    ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        stamp = [F.lit(run_id).alias(C.INGEST_RUN_ID), F.current_timestamp().alias(C.INGESTED_AT)]
        reason_counts = {r[C.REASON]: r["count"] for r in parsed.groupBy(C.REASON).count().collect()}
        tables.append(parsed.select(C.RAW, C.SOURCE_FILE, *stamp), lake.table("bronze", "interactions"))
        bronze_rows = tables.last_metrics(spark, lake.table("bronze", "interactions")).get("numOutputRows", 0)

        rejected = parse.rejected_rows(parsed)
        quarantined = 0
        if sum(v for k, v in reason_counts.items() if k not in (None, parse.HEADER)):
            tables.append(rejected.select("*", *stamp), lake.table("quarantine", "interactions"))
            quarantined = tables.last_metrics(spark, lake.table("quarantine", "interactions")).get("numOutputRows", 0)

        events = parse.valid_events(parsed).select("*", *stamp)
        loaded = tables.insert_new(spark, events, lake.table("silver", "interactions"), key=C.EVENT_ID,
                                   partition_col=C.EVENT_MONTH)
    finally:
        parsed.unpersist()

    good = reason_counts.get(None, 0)
    summary = {
        "run_id": run_id,
        "input": args.input,
        "format": args.format,
        "read": bronze_rows,
        "headers": reason_counts.get(parse.HEADER, 0),
        "loaded": loaded,
        "duplicates": good - loaded,
        "quarantined": quarantined,
        "quarantined_by_reason": {k: v for k, v in sorted(reason_counts.items(), key=lambda kv: str(kv[0]))
                                  if k not in (None, parse.HEADER)},
        "seconds": round(time.time() - started, 1),
    }
    accounted = summary["headers"] + good + quarantined
    if summary["read"] != accounted:
        raise ConservationError(
            f"read {summary['read']} lines but accounted for {accounted} "
            f"(headers {summary['headers']} + good {good} + quarantined {quarantined})"
        )
    print_summary(summary)
    return summary


def print_summary(summary: dict) -> None:
    print(f"ingest {summary['run_id'][:8]}  {summary['input']} ({summary['format']})  {summary['seconds']} s")
    for key in ("read", "headers", "loaded", "duplicates", "quarantined"):
        print(f"  {key:<12} {summary[key]:>12,}")
    for reason, count in summary["quarantined_by_reason"].items():
        print(f"    {reason:<22} {count:>10,}")
    print(json.dumps(summary), file=sys.stderr)


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
