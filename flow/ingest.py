"""Ingest interaction logs into the lake: bronze (raw rows), silver (clean, deduplicated), quarantine (rejected).

    summary = ingest(spark, Lake("./data-lake"), "incoming/", "events", IngestOptions(incremental=True))

Formats: event logs (``events`` CSV lines, ``events-json`` JSON lines, ``events-parquet``), rating files
(``movielens``, ``movielens-100k``, ``movietweetings``) and pairs without times (``pairs`` CSV or TSV lines,
``pairs-parquet``: user, item, optional weight; event time the file's modification time); see transforms/parse.py.

What a run does:

1. lists the input files (a file, a folder, searched recursively, or a glob); with ``--incremental`` it keeps only
   files not yet recorded in meta/ingested_files (same path, size and modification time);
2. counts the rows of every input split in a scan that does not parse (the count every later one is checked
   against, and each split's first row, which gives every row its line within the split);
3. parses every row once, on its way to bronze/interactions: raw text, source file, split offset, line, run id,
   and what the parser made of it (``parse_reason``, the typed fields, ``event_id``). Every later step reads the
   columns it needs from this run's bronze rows instead of parsing again; the outlier policy then quarantines
   the rows of bot-like user-days (``--bot-max-events-per-day``);
4. appends every rejected row to quarantine/interactions (raw text, source, reason); when more than
   ``max_rejected_share`` of the rows (headers aside) were rejected, the run stops here with MostlyRejectedError
   (flow.input_checks: the top reasons, the first row of each, what the format expects): silver stays as it was,
   bronze and quarantine keep the rows, the files stay unrecorded and the run's record says failed;
5. keeps the first copy (in read order: file, offset, line) of each event key among the good rows, then MERGEs
   them into silver/interactions on ``event_id`` alone (insert only), partitioned by event date (event logs) or
   month (rating files, which span decades); late events land in the partition of their own date. An event is
   its key whatever its time: one re-sent with the same user and source event id (or, without an id, the same
   content) is a duplicate even when its time moved to another day or month. The MERGE reads only the batch's
   partitions and those where the key -> date index silver/event_keys (flow.event_keys) says the batch's
   id-keyed events already are (literals in the merge condition, so Delta prunes the target, delta-io/delta#668);
6. checks read = headers + loaded + duplicates + quarantined from the write metrics of the commits themselves
   (Delta operationMetrics) and fails with ConservationError if it does not hold;
7. records the files in meta/ingested_files and the run summary in meta/ingest_runs, and prints the summary.
   Good events of a type whose implicit weight is fixed (``event_weights``, transforms.training) but that carry a
   value are counted by type (``value_ignored``) and named in a warning and the summary's ``value_note``: implicit
   training does not use those values.

Every run that reads something leaves a record (flow.runs): before its first commit it appends its row ``started``
to meta/ingest_runs, and at its end a row ``succeeded`` or ``failed`` (the error in ``run_error``); a run's state
is its latest row. A run whose process dies keeps only ``started``; ``jobs.runs`` lists it with the rows its
commits (tagged ``ingest:<run id>``) wrote to each table.

Re-running the same input adds nothing to silver. With ``incremental`` (the nightly's default; IngestOptions'
default is off, see jobs.ingest for why) a re-run reads nothing and commits nothing; without it every matched
file is read again, silver gains nothing, and bronze and quarantine record the re-read rows under the new run id.
A run that fails before step 7 leaves its files unrecorded, so the next incremental run retries them (safe: MERGE
drops what already landed).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
import uuid
from dataclasses import dataclass, field

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from collections.abc import Mapping

from flow import runs
from flow.event_keys import dates_of_known_keys
from flow.input_checks import (DEFAULT_MAX_REJECTED_SHARE, MostlyRejectedError, first_rejected_rows, mostly_rejected,
                               rejection_message, top_reasons)
from flow.progress import Progress
from lake import tables
from lake.fs import InputFile, list_input_files
from lake.registry import Lake
from transforms import columns as C
from transforms import outliers, parse, training

log = logging.getLogger("recsys.ingest")

FUTURE_TOLERANCE_S = 24 * 3600
DEFAULT_BOT_MAX_EVENTS_PER_DAY = 10_000  # event logs; rating dumps (bulk rating sessions) default to off
MAX_FLAGGED_USER_DAYS = 100_000  # more than this means the bot threshold is wrong, not that there are bots
MAX_BROADCAST_DUPLICATE_KEYS = 1_000_000  # beyond this the duplicate keys are joined with a shuffle
# silver is written from this run's bronze rows without optimizeWrite's shuffle (OPTIMIZE compacts later); each task
# sorts its rows by partition value and writes one file at a time. One open file per date instead (concurrent
# writers) was slower: a 3M-event log spans 14 days plus late ones, and ingest took 37.4-40.1 s sorted against
# 39.3-57.0 s with up to 64 open files per task (silver step 13.4-13.8 s against 15.3-17.6 s)
SILVER_WRITE_CONF = {"spark.databricks.delta.optimizeWrite.enabled": "false",
                     "spark.sql.maxConcurrentOutputFileWriters": "0"}
PARTITION_GRAINS = {"date": C.EVENT_DATE, "month": C.EVENT_MONTH}
ROW_ID = "_row_id"  # monotonically_increasing_id: (Spark partition << 33) + row number within the partition
READ_ORDER = "_read_order"  # (split's rank in (file, offset) order << 32) + line: which copy of a duplicate is first

# bronze: the raw row, where it came from, the run, and what the parser made of it (parse_reason null: a good row;
# the outlier policy runs later, so its bot_suspected rows show in quarantine, not here)
BRONZE_PARSED_COLUMNS = [C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.VALUE, C.EVENT_TS, C.SOURCE_EVENT_ID, C.EVENT_ID]
# Delta collects min/max statistics on the first 32 columns of every file it writes by default: on bronze's raw
# text and silver's event keys that cost ~75% of the Parquet write and skips nothing. Statistics only where
# queries filter: the run (every later step of a run reads its own rows), the file, the time.
BRONZE_PROPERTIES = {"delta.dataSkippingStatsColumns": f"{C.INGEST_RUN_ID},{C.INGESTED_AT},{C.SOURCE_FILE}"}
SILVER_PROPERTIES = {"delta.dataSkippingStatsColumns": f"{C.EVENT_TS},{C.INGEST_RUN_ID},{C.INGESTED_AT}"}

SILVER_COLUMNS = [C.EVENT_ID, C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.VALUE, C.EVENT_TS, C.SOURCE_EVENT_ID,
                  C.EVENT_DATE, C.EVENT_MONTH, C.SOURCE_FILE]


class ConservationError(RuntimeError):
    """Rows were lost or invented between reading and writing; the message lists the identities that failed."""

    def __init__(self, problems: list[str]):
        super().__init__("rows not accounted for: " + "; ".join(problems))
        self.problems = problems
        self.summary: dict | None = None  # the failed run's summary, when a run raised it


class PartitionGrainError(ValueError):
    """--partition-grain disagrees with how the existing silver table is partitioned."""


# ---------------------------------------------------------------------------------------------- input


def read_rows(spark, files: list[InputFile], fmt) -> DataFrame:
    """(raw, source_file, source_offset, _row_id) for every row of ``files``, plus ``source_modified_at`` (the
    file's modification time, their event time) for the pairs formats.

    Text formats keep each line as it is; Parquet rows become JSON text (``to_json``), so quarantine shows them
    readably and the event parser handles one shape. ``_row_id`` numbers rows within each Spark partition;
    rows of one split are consecutive, so with the split's smallest ``_row_id`` it gives the line within the split.
    """
    paths = [f.read_path for f in files]
    if fmt.file_type == "parquet":
        df = spark.read.option("mergeSchema", "true").parquet(*paths)
        raw = F.to_json(F.struct(*[F.col(f"`{c}`") for c in df.columns]))
    else:
        df = spark.read.text(paths)
        raw = F.col("value")
    modified = [F.col("_metadata.file_modification_time").alias(C.SOURCE_MODIFIED)] if parse.is_pair_format(fmt) else []
    return df.select(
        raw.alias(C.RAW),
        F.col("_metadata.file_path").alias(C.SOURCE_FILE),
        F.col("_metadata.file_block_start").alias(C.SOURCE_OFFSET),
        F.monotonically_increasing_id().alias(ROW_ID),
        *modified,
    )


def input_format(fmt_name: str, options: "IngestOptions"):
    """The parser format ``fmt_name`` with the options' CSV field order; ValueError for event-log options given
    with another format (--max-value also applies to the pairs formats' weight)."""
    fmt = parse.get_format(fmt_name)
    if parse.is_event_format(fmt):
        if options.columns:
            fmt = parse.with_columns(fmt, list(options.columns))
    elif options.columns or options.event_types:
        raise ValueError(f"--columns and --event-types apply to event logs, not to {fmt_name}")
    elif options.max_value is not None and not parse.is_pair_format(fmt):
        raise ValueError(f"--max-value applies to event logs and pairs, not to {fmt_name}")
    parse.timestamp_floor_seconds(fmt, options.min_event_date)  # a malformed date fails before anything is read
    return fmt


# ---------------------------------------------------------------------------------------------- Delta writes


def partitions_to_read(partition_col: str, partition_values: list, known_dates: list[dt.date]) -> list:
    """Silver's partitions a batch's MERGE must read, sorted: the batch's own ``partition_values`` (where an event
    keyed by its content, time included, can already be) and the partitions of ``known_dates`` (where the batch's
    id-keyed events may already be, flow.event_keys), as values of ``partition_col``."""
    known = known_dates if partition_col == C.EVENT_DATE else [d.strftime("%Y-%m") for d in known_dates]
    return sorted(set(partition_values) | set(known))


def merge_new_events(spark, events: DataFrame, path: str, *, partition_col: str, partition_values: list,
                     tag: str, distinct_events: int, known_dates: list[dt.date] = ()) -> dict[str, int]:
    """Insert the events whose event_id is not in silver yet; returns version, source_rows, inserted and
    partitions_read.

    ``source_rows`` comes from the commit's own metrics (numSourceRows); when the MERGE inserts nothing Delta
    commits nothing, and ``distinct_events`` (counted before) stands in.

    The merge condition matches on ``event_id`` alone and names the partitions to read as literals
    (``t.p IN (...)``, partitions_to_read) so Delta reads only those partitions of the target
    (delta-io/delta#668); a key already in a partition left out of that list would be inserted again.
    """
    if not partition_values:
        return {"version": tables.version(spark, path) if tables.exists(spark, path) else None,
                "source_rows": 0, "inserted": 0, "partitions_read": 0}
    if not tables.exists(spark, path):
        with tables.session_conf(spark, SILVER_WRITE_CONF):
            version, written = tables.append_tagged(spark, events, path, tag=tag, partition_by=[partition_col],
                                           optimize_write=False, properties=SILVER_PROPERTIES)
        return {"version": version, "source_rows": written, "inserted": written, "partitions_read": 0}
    read = partitions_to_read(partition_col, partition_values, list(known_dates))
    condition = F.col(f"t.{partition_col}").isin(read) & (F.col(f"t.{C.EVENT_ID}") == F.col(f"s.{C.EVENT_ID}"))
    tables.ensure_properties(spark, path, SILVER_PROPERTIES)
    before = tables.version(spark, path)
    with tables.session_conf(spark, {**SILVER_WRITE_CONF, "spark.databricks.delta.commitInfo.userMetadata": tag}):
        tables.merge_insert_new(spark, events, path, condition)
    committed = tables.commit_metrics(spark, path, tag, after_version=before)
    if committed is None:  # every event was already there: Delta commits nothing; count the batch's events once
        return {"version": before, "source_rows": distinct_events, "inserted": 0, "partitions_read": len(read)}
    version, metrics = committed
    return {"version": version, "source_rows": metrics.get("numSourceRows", 0),
            "inserted": metrics.get("numTargetRowsInserted", 0), "partitions_read": len(read)}


def resolve_partition_column(spark, silver_path: str, grain: str | None, fmt) -> str:
    """The partition column of silver: the existing table's, else the requested grain's, else the format's default."""
    if tables.exists(spark, silver_path):
        existing = tables.partition_columns(spark, silver_path)
        if len(existing) != 1 or existing[0] not in PARTITION_GRAINS.values():
            raise PartitionGrainError(f"{silver_path} is partitioned by {existing}; expected one of "
                                      f"{sorted(PARTITION_GRAINS.values())}")
        if grain is not None and PARTITION_GRAINS[grain] != existing[0]:
            raise PartitionGrainError(
                f"--partition-grain {grain} asks for {PARTITION_GRAINS[grain]} but {silver_path} is partitioned by "
                f"{existing[0]}; drop the flag, or rewrite silver into a new lake with the grain you want")
        return existing[0]
    if grain is not None:
        return PARTITION_GRAINS[grain]
    return C.EVENT_DATE if parse.is_event_format(fmt) else C.EVENT_MONTH


# ---------------------------------------------------------------------------------------------- accounting


def conservation_problems(n: dict) -> list[str]:
    """Identities every run must satisfy; returns the ones that fail (empty list: all rows accounted for).

    ``n`` holds counts from the parse (``counted_total``, ``counted_good``, ``counted_rejected``, ``headers``)
    and from the commits' own metrics (``bronze_rows``, ``quarantine_rows``, ``source_rows``, ``inserted``).
    """
    problems = []
    if n["bronze_rows"] != n["counted_total"]:
        problems.append(f"bronze got {n['bronze_rows']:,} rows but {n['counted_total']:,} were read")
    if n["quarantine_rows"] != n["counted_rejected"]:
        problems.append(f"quarantine got {n['quarantine_rows']:,} rows but {n['counted_rejected']:,} were rejected")
    if not 0 <= n["source_rows"] <= n["counted_good"]:
        problems.append(f"silver's merge saw {n['source_rows']:,} distinct events from {n['counted_good']:,} good rows")
    if "counted_distinct" in n and n["source_rows"] != n["counted_distinct"]:
        problems.append(f"silver's merge saw {n['source_rows']:,} events but {n['counted_distinct']:,} distinct "
                        "events were counted")
    if not 0 <= n["inserted"] <= n["source_rows"]:
        problems.append(f"silver inserted {n['inserted']:,} rows from {n['source_rows']:,} distinct events")
    duplicates = n["counted_good"] - n["inserted"]
    if n["bronze_rows"] != n["headers"] + n["inserted"] + duplicates + n["quarantine_rows"]:
        problems.append(f"read {n['bronze_rows']:,} != headers {n['headers']:,} + loaded {n['inserted']:,} + "
                        f"duplicates {duplicates:,} + quarantined {n['quarantine_rows']:,}")
    return problems


def check_conservation(n: dict, extra_problems: list[str] = ()) -> None:
    """Raise ConservationError (its ``problems`` listing each failure) unless every identity holds and there are
    no ``extra_problems``."""
    problems = conservation_problems(n) + list(extra_problems)
    if problems:
        raise ConservationError(problems)


# ---------------------------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class IngestOptions:
    """How one ingest run reads, checks and writes. Defaults in one place; the job's flags map to these fields.

    ``bot_max_events_per_day`` None means the format's default (DEFAULT_BOT_MAX_EVENTS_PER_DAY for event logs,
    off for rating files); 0 turns the outlier policy off. ``event_types``, ``columns`` and ``max_value`` apply to
    event logs only (ValueError for rating files). ``min_event_date`` (YYYY-MM-DD) None means the format's floor
    (parse.DEFAULT_MIN_EVENT_DATE for event logs, none for rating files); earlier events are quarantined.
    ``max_rejected_share`` (0..1): a run rejecting more of its rows fails before silver (MostlyRejectedError);
    1 never fails. ``event_weights`` (None: transforms.training's defaults) only decide which events' values the
    run reports as ignored by implicit training (``value_ignored``); ingest stores every value as read.
    """
    run_id: str | None = None
    incremental: bool = False
    partition_grain: str | None = None
    rating_min: float | None = None
    rating_max: float | None = None
    event_types: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None
    max_value: float | None = None
    bot_max_events_per_day: int | None = None
    future_tolerance_hours: float = FUTURE_TOLERANCE_S / 3600
    min_event_date: str | None = None
    progress_every: float = 30.0
    max_rejected_share: float = DEFAULT_MAX_REJECTED_SHARE
    event_weights: Mapping[str, float | None] | None = None


@dataclass
class _Run:
    """One run's identity, inputs and what its steps found so far."""
    spark: object
    lake: Lake
    fmt: object
    options: IngestOptions
    run_id: str
    started: float
    started_at: dt.datetime
    summary: dict
    files: list = field(default_factory=list)

    @property
    def tag(self) -> str:
        return f"ingest:{self.run_id}"

    def stamp(self) -> list:
        return [F.lit(self.run_id).alias(C.INGEST_RUN_ID),
                F.lit(self.started_at).cast("timestamp").alias(C.INGESTED_AT)]


def ingest(spark, lake: Lake, pattern: str, fmt_name: str, options: IngestOptions = IngestOptions()) -> dict:
    """Ingest the files matching ``pattern`` (format ``fmt_name``) into ``lake``; returns the run's summary.

    Raises lake.fs.NoInputError when nothing matches, ConservationError when rows are not accounted for and
    MostlyRejectedError when more than ``options.max_rejected_share`` of the rows were rejected (either run is
    recorded as failed first), PartitionGrainError and ValueError for options that do not fit.
    """
    run_id = options.run_id or uuid.uuid4().hex
    started = time.time()
    run = _Run(spark, lake, input_format(fmt_name, options), options, run_id, started,
               dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
               {"run_id": run_id, "input": pattern, "format": fmt_name, "status": "ok",
                "incremental": bool(options.incremental)})
    with Progress(spark, f"ingest {run_id[:8]}", every_s=options.progress_every) as progress:
        progress.step("list input")
        files = list_input_files(spark, pattern)
        seen = already_ingested(spark, lake.ingested_files) if options.incremental else set()
        run.files = [f for f in files if f.key not in seen]
        run.summary.update(files_new=len(run.files), files_skipped=len(files) - len(run.files),
                           bytes_new=sum(f.size for f in run.files))
        if not run.files:
            run.summary.update(NOTHING_NEW, seconds=round(time.time() - started, 1))
            return run.summary
        record_run(spark, lake.ingest_runs, run.summary, run.started_at, state=runs.STARTED)
        with runs.finished(lambda state, error: _record_finish(run, state, error)):
            _ingest_files(run, progress)
    return run.summary


NOTHING_NEW = dict(read=0, headers=0, loaded=0, duplicates=0, duplicates_in_batch=0, duplicates_in_silver=0,
                   quarantined=0, quarantined_by_reason={}, partitions=0, status="nothing new")


def _ingest_files(run: _Run, progress: Progress) -> None:
    spark, lake = run.spark, run.lake
    partition_col = resolve_partition_column(spark, lake.silver, run.options.partition_grain, run.fmt)
    run.summary["partition_column"] = partition_col
    log.info("ingest %s: %d new file(s), %.1f MB, format %s, silver partitioned by %s", run.run_id[:8],
             len(run.files), run.summary["bytes_new"] / 1e6, run.fmt.name, partition_col)
    progress.step("split offsets")
    # A scan without parsing: each input split's first row id (for source_line) and its row count, the
    # number every later count is checked against.
    splits = split_rows(read_rows(spark, run.files, run.fmt))
    split_df = spark.createDataFrame([(s.file, s.offset, s.first_row, s.order) for s in splits],
                                     f"{C.SOURCE_FILE} string, {C.SOURCE_OFFSET} long, _first_row long, "
                                     "_split_order long")
    progress.step("parse into bronze")
    bronze_version, bronze_rows, batch = _parse_into_bronze(run, split_df)
    progress.step("count")
    stats = batch_stats(batch, partition_col)
    rows_by_file = _rows_by_file(splits)
    changed = [f"input changed while it was read: {f}: {rows_by_file.get(f, 0):,} rows when first read, "
               f"{stats['rows_by_file'].get(f, 0):,} in bronze"
               for f in sorted(set(rows_by_file) | set(stats["rows_by_file"]))
               if rows_by_file.get(f, 0) != stats["rows_by_file"].get(f, 0)]
    final, counted, flagged = _outlier_policy(run, batch, stats["by_reason"], progress)
    progress.step("quarantine")
    counted_rejected = sum(v for k, v in counted.items() if k not in (None, parse.HEADER))
    quarantine_version, quarantine_rows = None, 0
    if counted_rejected:
        rejected = parse.rejected_rows(final.where(F.col(C.REASON).isNotNull()))
        quarantine_version, quarantine_rows = tables.append_tagged(
            spark, rejected.select("*", *run.stamp()), lake.quarantine, tag=run.tag)
    _stop_if_mostly_rejected(run, final, counted, {"bronze": bronze_version, "quarantine": quarantine_version})
    _note_ignored_values(run, stats["values_by_type"])
    partition_values = stats["partitions"] if counted.get(None, 0) else []
    merged = _dedupe_and_merge(run, final, split_df, counted, partition_col, partition_values, progress)
    numbers = {"counted_total": sum(s.rows for s in splits), "counted_good": counted.get(None, 0),
               "counted_rejected": counted_rejected, "headers": counted.get(parse.HEADER, 0),
               "bronze_rows": bronze_rows, "quarantine_rows": quarantine_rows,
               "source_rows": merged["source_rows"], "inserted": merged["inserted"],
               "counted_distinct": merged["distinct_events"]}
    _summarise(run.summary, numbers, counted, partition_values, flagged,
               {"bronze": bronze_version, "quarantine": quarantine_version, "silver": merged["version"]})
    progress.step("record run")
    _account_and_record(run, numbers, changed, rows_by_file, progress)


def _stop_if_mostly_rejected(run: _Run, final: DataFrame, counted: dict, versions: dict) -> None:
    """Raise MostlyRejectedError (its summary the run's, status failed) when more than the options' share of the
    rows was rejected; the message shows the first row of each top reason, in read order."""
    limit = run.options.max_rejected_share
    if not mostly_rejected(counted, max_share=limit):
        return
    examples = first_rejected_rows(final, top_reasons(counted), order=[C.SOURCE_FILE, C.SOURCE_OFFSET, C.SOURCE_LINE])
    error = MostlyRejectedError(f"ingest {run.summary['input']} ({run.fmt.name}) stopped before silver: "
                                + rejection_message(run.fmt, counted, examples, max_share=limit))
    by_reason = {str(k): v for k, v in counted.items() if k not in (None, parse.HEADER) and v}
    run.summary.update(status="failed: input mostly rejected", versions=versions, read=sum(counted.values()),
                       headers=counted.get(parse.HEADER, 0), loaded=0, quarantined=sum(by_reason.values()),
                       quarantined_by_reason=by_reason, seconds=round(time.time() - run.started, 1))
    error.summary = run.summary
    raise error


def _note_ignored_values(run: _Run, values_by_type: dict) -> None:
    """Count, and warn about, good events whose value implicit training ignores (fixed weight for their type)."""
    ignored = training.value_ignored_by_type(values_by_type, run.options.event_weights)
    run.summary["value_ignored"] = ignored
    note = training.value_ignored_note(ignored)
    if note:
        run.summary["value_note"] = note
        log.warning("ingest %s: %s", run.run_id[:8], note)


def _rows_by_file(splits: list["Split"]) -> dict[str, int]:
    rows: dict[str, int] = {}
    for s in splits:
        rows[s.file] = rows.get(s.file, 0) + s.rows
    return rows


def _parse_into_bronze(run: _Run, split_df: DataFrame) -> tuple[int, int, DataFrame]:
    """Parse every row once, on its way to bronze; returns (bronze version, rows written, this run's bronze rows
    with the parser's reason as ``reason``). Every later step reads only the columns it needs from them."""
    spark, opts = run.spark, run.options
    parsed = parse.parse_lines(
        read_rows(spark, run.files, run.fmt), run.fmt,
        max_event_ts_seconds=int(run.started + opts.future_tolerance_hours * 3600),
        rating_min=opts.rating_min, rating_max=opts.rating_max, min_event_date=opts.min_event_date,
        event_types=list(opts.event_types) if opts.event_types else None, max_value=opts.max_value,
    ).transform(parse.with_good_event_id)
    # a left join: a split the first scan did not see (a file that grew) keeps its rows, and the per-file
    # counts then fail the run instead of losing them
    located = parsed.join(F.broadcast(split_df.drop("_split_order")), on=[C.SOURCE_FILE, C.SOURCE_OFFSET],
                          how="left")
    version, rows = tables.append_tagged(
        spark, located.select(C.RAW, C.SOURCE_FILE, C.SOURCE_OFFSET,
                              (F.col(ROW_ID) - F.col("_first_row") + 1).alias(C.SOURCE_LINE), *run.stamp(),
                              F.col(C.REASON).alias(C.PARSE_REASON), *BRONZE_PARSED_COLUMNS),
        run.lake.bronze, tag=run.tag, optimize_write=False, properties=BRONZE_PROPERTIES)
    batch = (tables.read(spark, run.lake.bronze, version=version)
             .where((F.col(C.INGEST_RUN_ID) == run.run_id) & (F.col(C.INGESTED_AT) == F.lit(run.started_at)))
             .withColumnRenamed(C.PARSE_REASON, C.REASON))
    return version, rows, batch


def _bot_limit(run: _Run) -> int:
    limit = run.options.bot_max_events_per_day
    if limit is None:
        return DEFAULT_BOT_MAX_EVENTS_PER_DAY if parse.is_event_format(run.fmt) else 0
    return limit


def _outlier_policy(run: _Run, batch: DataFrame, counted: dict,
                    progress: Progress) -> tuple[DataFrame, dict, list]:
    """(rows with bot-like user-days marked bot_suspected, counts by reason after that, flagged user-days)."""
    bot_limit = _bot_limit(run)
    if not bot_limit or not counted.get(None, 0):
        return batch, counted, []
    progress.step("outlier policy")
    flagged = (outliers.bot_user_days(batch, max_events_per_day=bot_limit)
               .limit(MAX_FLAGGED_USER_DAYS + 1).collect())
    if len(flagged) > MAX_FLAGGED_USER_DAYS:
        raise ValueError(f"--bot-max-events-per-day {bot_limit} flags more than {MAX_FLAGGED_USER_DAYS:,} "
                         "user-days as bots; the threshold is too low for this input")
    if not flagged:
        return batch, counted, []
    flagged_rows = sum(r[outliers.N_EVENTS_DAY] for r in flagged)
    flagged_df = run.spark.createDataFrame(flagged, f"{C.USER_ID} string, {C.EVENT_DATE} date, "
                                                    f"{outliers.N_EVENTS_DAY} long")
    log.info("outlier policy: %d user-day(s) over %d events, %d rows to quarantine",
             len(flagged), bot_limit, flagged_rows)
    counted = dict(counted)
    counted[None] -= flagged_rows
    counted[parse.BOT_SUSPECTED] = counted.get(parse.BOT_SUSPECTED, 0) + flagged_rows
    return outliers.quarantine_bot_rows(batch, flagged_df), counted, flagged


def _dedupe_and_merge(run: _Run, final: DataFrame, split_df: DataFrame, counted: dict, partition_col: str,
                      partition_values: list, progress: Progress) -> dict:
    """Keep the first copy (read order) of each event key among the good rows and MERGE them into silver, reading
    the partitions where the key -> date index finds the batch's id-keyed events too (event logs; rating files'
    keys hold their time); returns merge_new_events' numbers plus ``distinct_events``."""
    progress.step("duplicates within the input")
    # read order: input splits in (file, offset) order, then line; unique per row of the run
    good = (final.where(F.col(C.REASON).isNull())
            .join(F.broadcast(split_df.select(C.SOURCE_FILE, C.SOURCE_OFFSET, "_split_order")),
                  on=[C.SOURCE_FILE, C.SOURCE_OFFSET], how="left")
            .withColumn(READ_ORDER, F.shiftleft(F.col("_split_order"), 32) + F.col(C.SOURCE_LINE)))
    dups = parse.duplicate_keys(good, order_col=READ_ORDER).cache()
    try:
        dup_stats = dups.agg(F.count(F.lit(1)).alias("keys"), F.sum(parse.COPIES).alias("copies")).first()
        dup_keys, in_batch = dup_stats["keys"], (dup_stats["copies"] or 0) - dup_stats["keys"]
        distinct_events = counted.get(None, 0) - in_batch
        if dup_keys:
            good = parse.drop_later_copies(good, dups, order_col=READ_ORDER,
                                           broadcast=dup_keys <= MAX_BROADCAST_DUPLICATE_KEYS)
        events = good.transform(parse.with_event_date).select(*SILVER_COLUMNS, C.INGEST_RUN_ID, C.INGESTED_AT)
        known_dates = []
        if parse.is_event_format(run.fmt) and partition_values:
            progress.step("event key index")
            known_dates = dates_of_known_keys(run.spark, run.lake, events, tag=run.tag)
        progress.step("silver merge")
        merged = merge_new_events(run.spark, events, run.lake.silver, partition_col=partition_col,
                                  partition_values=partition_values, tag=run.tag, distinct_events=distinct_events,
                                  known_dates=known_dates)
    finally:
        dups.unpersist()
    run.summary["silver_partitions_read"] = merged["partitions_read"]
    return {**merged, "distinct_events": distinct_events}


def _summarise(summary: dict, numbers: dict, counted: dict, partition_values: list, flagged: list,
               versions: dict) -> None:
    summary.update(
        read=numbers["bronze_rows"], headers=numbers["headers"], loaded=numbers["inserted"],
        duplicates=numbers["counted_good"] - numbers["inserted"],
        duplicates_in_batch=numbers["counted_good"] - numbers["source_rows"],
        duplicates_in_silver=numbers["source_rows"] - numbers["inserted"],
        quarantined=numbers["quarantine_rows"],
        quarantined_by_reason={k: v for k, v in sorted(counted.items(), key=lambda kv: str(kv[0]))
                               if k not in (None, parse.HEADER) and v},
        partitions=len(partition_values),
        partition_range=[str(min(partition_values)), str(max(partition_values))] if partition_values else None,
        bot_user_days=len(flagged), versions=versions,
    )


def _account_and_record(run: _Run, numbers: dict, changed: list[str], rows_by_file: dict,
                        progress: Progress) -> None:
    """Check the accounting; when it holds, record the files read (the run's finish is recorded by ingest)."""
    summary = run.summary
    try:
        check_conservation(numbers, changed)
    except ConservationError as error:
        summary.update(status="failed: rows not accounted for", problems=error.problems,
                       seconds=round(time.time() - run.started, 1))
        error.summary = summary
        raise
    record_files(run.spark, run.lake.ingested_files, run.files, rows_by_file, run.run_id, run.started_at,
                 summary["format"])
    summary["steps"] = dict(progress.timings)
    summary["seconds"] = round(time.time() - run.started, 1)


def _record_finish(run: _Run, state: str, error: str | None) -> None:
    """Append the run's final row (``state`` succeeded or failed, with ``error``) to meta/ingest_runs."""
    if state == runs.FAILED and not run.summary["status"].startswith("failed"):
        run.summary["status"] = "failed"
    if error is not None:
        run.summary["error"] = error
    run.summary.setdefault("seconds", round(time.time() - run.started, 1))
    record_run(run.spark, run.lake.ingest_runs, run.summary, run.started_at, state=state, error=error)


@dataclass(frozen=True)
class Split:
    """One input split as Spark read it: its file, byte offset, first row id, row count and rank in (file, offset)."""
    file: str
    offset: int
    first_row: int
    rows: int
    order: int


def split_rows(rows: DataFrame) -> list[Split]:
    """Every split of ``rows`` (from read_rows) with its first ``_row_id`` and row count: a scan without parsing.

    The parse reads the same files with the same plan, so a row's line within its split is ``_row_id`` minus the
    split's first row id, plus one (``_row_id`` numbers the rows of each Spark partition, which holds whole splits).
    """
    found = (rows.groupBy(C.SOURCE_FILE, C.SOURCE_OFFSET)
             .agg(F.min(ROW_ID).alias("first_row"), F.count(F.lit(1)).alias("rows")).collect())
    found = sorted(found, key=lambda r: (r[C.SOURCE_FILE], r[C.SOURCE_OFFSET]))
    for r in found:
        if r["rows"] >= 1 << 32:
            raise ValueError(f"{r[C.SOURCE_FILE]} offset {r[C.SOURCE_OFFSET]}: {r['rows']:,} rows in one split; "
                             "split the file (at most 2^32 rows per split)")
    return [Split(r[C.SOURCE_FILE], r[C.SOURCE_OFFSET], r["first_row"], r["rows"], i) for i, r in enumerate(found)]


def batch_stats(batch: DataFrame, partition_col: str) -> dict:
    """Rows by reason, rows by file, the partition values of the good rows and the good rows carrying a value by
    event type (``values_by_type``): one aggregation over this run's bronze rows (``reason`` being the parser's),
    reading five columns."""
    good = F.col(C.REASON).isNull()
    part = F.when(good, F.to_date(C.EVENT_TS) if partition_col == C.EVENT_DATE
                  else F.date_format(C.EVENT_TS, "yyyy-MM"))
    valued = F.when(good & F.col(C.VALUE).isNotNull(), F.col(C.EVENT_TYPE))
    rows = (batch.groupBy(C.SOURCE_FILE, C.REASON, part.alias("_part"), valued.alias("_valued"))
            .agg(F.count(F.lit(1)).alias("n")).collect())
    by_reason: dict = {}
    by_file: dict = {}
    values_by_type: dict = {}
    partitions = set()
    for r in rows:
        by_reason[r[C.REASON]] = by_reason.get(r[C.REASON], 0) + r["n"]
        by_file[r[C.SOURCE_FILE]] = by_file.get(r[C.SOURCE_FILE], 0) + r["n"]
        if r["_part"] is not None:
            partitions.add(r["_part"])
        if r["_valued"] is not None:
            values_by_type[r["_valued"]] = values_by_type.get(r["_valued"], 0) + r["n"]
    return {"by_reason": by_reason, "rows_by_file": by_file, "partitions": sorted(partitions),
            "values_by_type": values_by_type}


def already_ingested(spark, path: str) -> set[tuple[str, int, int]]:
    if not tables.exists(spark, path):
        return set()
    rows = tables.read(spark, path).select("path", "size_bytes", "modified_ms").collect()
    return {(r["path"], r["size_bytes"], r["modified_ms"]) for r in rows}


def record_files(spark, path: str, files: list[InputFile], rows_by_file: dict, run_id: str,
                 started_at: dt.datetime, fmt: str) -> None:
    rows = [(f.path, f.size, f.modified_ms, int(rows_by_file.get(f.path, 0)), fmt, run_id, started_at) for f in files]
    df = spark.createDataFrame(rows, "path string, size_bytes long, modified_ms long, rows long, format string, "
                                     f"{C.INGEST_RUN_ID} string, {C.INGESTED_AT} timestamp")
    tables.append_tagged(spark, df.coalesce(1), path, tag=f"ingest:{run_id}")


INGEST_RUNS_SCHEMA = (f"{C.INGEST_RUN_ID} string, started_at timestamp, seconds double, input string, format string, "
                      "status string, files long, read long, headers long, loaded long, duplicates long, "
                      "quarantined long, quarantined_by_reason map<string,long>, summary string")
RUN_COUNTS = ("files_new", "read", "headers", "loaded", "duplicates", "quarantined")


def record_run(spark, path: str, summary: dict, started_at: dt.datetime, *, state: str,
               error: str | None = None) -> None:
    """Append the run's row to meta/ingest_runs as flow.runs.record does (``state`` started, succeeded or failed);
    a started row has status ``started``, and counts the run has not reached are null."""
    counts = [summary.get(k) for k in RUN_COUNTS]
    by_reason = summary.get("quarantined_by_reason")
    status = runs.STARTED if state == runs.STARTED else summary["status"]
    row = (summary["run_id"], started_at, summary.get("seconds"), summary["input"], summary["format"], status,
           *[None if v is None else int(v) for v in counts],
           None if by_reason is None else {k: int(v) for k, v in by_reason.items()}, json.dumps(summary, default=str))
    runs.record(spark, path, tables.one_row(spark, row, INGEST_RUNS_SCHEMA), state=state, error=error,
                tag=runs.tag("ingest", summary["run_id"]))


def print_summary(summary: dict) -> None:
    """The few lines a person reads after a run, then one JSON line on stderr for machines."""
    files = f"{summary['files_new']} new file(s)"
    if summary.get("files_skipped"):
        files += f", {summary['files_skipped']} already ingested"
    print(f"ingest {summary['run_id'][:8]}  {summary['input']} ({summary['format']}): {files}  "
          f"{summary['seconds']} s  [{summary['status']}]")
    if summary["read"] or summary["status"] != "nothing new":
        versions = summary.get("versions") or {}
        where = ""
        if summary.get("partitions"):
            lo, hi = summary["partition_range"]
            where = (f"  -> silver v{versions.get('silver')}, {summary['partitions']} {summary['partition_column']} "
                     f"partition(s) {lo} .. {hi}")
        print(f"  {'read':<12} {summary['read']:>12,}")
        print(f"  {'loaded':<12} {summary['loaded']:>12,}{where}")
        print(f"  {'duplicates':<12} {summary['duplicates']:>12,}  ({summary['duplicates_in_batch']:,} within this "
              f"input, {summary['duplicates_in_silver']:,} already in silver)")
        q_where = f"  -> quarantine v{versions['quarantine']}" if versions.get("quarantine") is not None else ""
        print(f"  {'quarantined':<12} {summary['quarantined']:>12,}{q_where}")
        for reason, count in summary["quarantined_by_reason"].items():
            print(f"    {reason:<22} {count:>10,}")
        print(f"  {'headers':<12} {summary['headers']:>12,}")
        ok = "OK" if not summary.get("problems") else "FAILED: " + "; ".join(summary["problems"])
        print(f"  check: read = headers + loaded + duplicates + quarantined  {ok}")
        if summary.get("value_note"):
            print(f"  note: {summary['value_note']}")
    print(json.dumps(summary, default=str), file=sys.stderr)
