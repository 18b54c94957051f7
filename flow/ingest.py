"""Ingest interaction logs into the lake: bronze (raw rows), silver (clean, deduplicated), quarantine (rejected).

    python -m jobs.ingest --input incoming/ --format events --lake ./lake --incremental
    python -m jobs.ingest --input ratings.csv --format movielens --lake ./lake

Formats: event logs (``events`` CSV lines, ``events-json`` JSON lines, ``events-parquet``) and rating files
(``movielens``, ``movielens-100k``, ``movietweetings``); see ``--help`` and transforms/parse.py.

What a run does:

1. lists the input files (a file, a folder, searched recursively, or a glob); with ``--incremental`` it keeps only
   files not yet recorded in meta/ingested_files (same path, size and modification time);
2. counts the rows of every input split in a scan that does not parse (the count every later one is checked
   against, and each split's first row, which gives every row its line within the split);
3. parses every row once, on its way to bronze/interactions: raw text, source file, split offset, line, run id,
   and what the parser made of it (``parse_reason``, the typed fields, ``event_id``). Every later step reads the
   columns it needs from this run's bronze rows instead of parsing again; the outlier policy then quarantines
   the rows of bot-like user-days (``--bot-max-events-per-day``);
4. appends every rejected row to quarantine/interactions (raw text, source, reason);
5. keeps the first copy (in read order: file, offset, line) of each event key among the good rows, then MERGEs
   them into silver/interactions on ``event_id`` (insert only; the batch's partition values are literals in the
   merge condition so Delta prunes the target, delta-io/delta#668), partitioned by event date (event logs) or
   month (rating files, which span decades); late events land in the partition of their own date;
6. checks read = headers + loaded + duplicates + quarantined from the write metrics of the commits themselves
   (Delta operationMetrics) and fails with ConservationError if it does not hold;
7. records the files in meta/ingested_files and the run summary in meta/ingest_runs, and prints the summary.

Re-running the same input adds nothing to silver. With ``--incremental`` a re-run reads nothing and commits
nothing; without it every matched file is read again, silver gains nothing, and bronze and quarantine record the
re-read rows under the new run id. A run that fails before step 7 leaves its files unrecorded, so the next
incremental run retries them (safe: MERGE drops what already landed).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/ingest.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from delta.tables import DeltaTable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs import tables
from jobs.cli import Lake, add_lake_arg, base_parser, spark_from_args
from jobs.progress import Progress
from transforms import columns as C
from transforms import outliers, parse

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

BRONZE = ("bronze", "interactions")
SILVER = ("silver", "interactions")
QUARANTINE = ("quarantine", "interactions")
INGESTED_FILES = ("meta", "ingested_files")
INGEST_RUNS = ("meta", "ingest_runs")

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


class NoInputError(FileNotFoundError):
    """--input matches no file."""


class PartitionGrainError(ValueError):
    """--partition-grain disagrees with how the existing silver table is partitioned."""


def spark_file_uri(uri: str) -> str:
    """A file URI in the form Spark's _metadata.file_path uses (file:/x, not file:///x), so the two compare equal."""
    return "file:/" + uri[len("file:///"):] if uri.startswith("file:///") else uri


@dataclass(frozen=True)
class InputFile:
    path: str  # as Spark reports it in _metadata.file_path (a URI)
    read_path: str  # as a reader accepts it
    size: int
    modified_ms: int

    @property
    def key(self) -> tuple[str, int, int]:
        return self.path, self.size, self.modified_ms


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


# ---------------------------------------------------------------------------------------------- input


def list_input_files(spark, pattern: str) -> list[InputFile]:
    """Files under ``pattern`` (file, folder searched recursively, or glob) via the Hadoop FileSystem API.

    Names starting with '_' or '.' (_SUCCESS, .crc, _temporary/) are skipped, as Spark's readers do.
    """
    jvm = spark.sparkContext._jvm  # noqa: SLF001 - the Hadoop FileSystem API is only reachable through py4j
    conf = spark.sparkContext._jsc.hadoopConfiguration()  # noqa: SLF001
    glob = jvm.org.apache.hadoop.fs.Path(pattern)
    fs = glob.getFileSystem(conf)
    statuses = fs.globStatus(glob)
    if not statuses:
        raise NoInputError(f"--input {pattern!r} matches no file")

    def hidden(path, root_depth: int) -> bool:
        names = []
        while path is not None and path.depth() > root_depth:
            names.append(path.getName())
            path = path.getParent()
        return any(n.startswith(("_", ".")) for n in names)

    files = {}
    for status in statuses:
        root = fs.makeQualified(status.getPath())
        if status.isDirectory():
            found = fs.listFiles(root, True)
            while found.hasNext():
                f = found.next()
                if not hidden(f.getPath(), root.depth()):
                    files[spark_file_uri(str(f.getPath().toUri().toString()))] = f
        elif not hidden(root, root.depth() - 1):
            files[spark_file_uri(str(root.toUri().toString()))] = status
    if not files:
        raise NoInputError(f"--input {pattern!r} holds no data file (only hidden or empty folders)")
    return [InputFile(uri, str(fs.makeQualified(f.getPath()).toString()), int(f.getLen()), int(f.getModificationTime()))
            for uri, f in sorted(files.items())]


def read_rows(spark, files: list[InputFile], fmt) -> DataFrame:
    """(raw, source_file, source_offset, _row_id) for every row of ``files``.

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
    return df.select(
        raw.alias(C.RAW),
        F.col("_metadata.file_path").alias(C.SOURCE_FILE),
        F.col("_metadata.file_block_start").alias(C.SOURCE_OFFSET),
        F.monotonically_increasing_id().alias(ROW_ID),
    )


def input_format(args):
    fmt = parse.get_format(args.format)
    if parse.is_event_format(fmt):
        if args.columns:
            fmt = parse.with_columns(fmt, args.columns.split(","))
    elif args.columns or args.event_types or args.max_value is not None:
        raise SystemExit(f"--columns, --event-types and --max-value apply to event logs, not to {args.format}")
    return fmt


# ---------------------------------------------------------------------------------------------- Delta writes


@contextlib.contextmanager
def session_conf(spark, settings: dict[str, str]):
    """Set Spark SQL settings for the duration of the block, then restore what was there."""
    before = {k: spark.conf.get(k, None) for k in settings}
    for k, v in settings.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)


def commit_metrics(spark, path: str, tag: str, *, after_version: int = -1) -> tuple[int, dict[str, int]] | None:
    """(version, operationMetrics) of the newest commit of ``path`` tagged ``tag`` (userMetadata) after
    ``after_version``, or None if there is none (an insert-only MERGE that inserts nothing commits nothing).

    Matching on our own tag, not on "the latest commit", keeps the numbers right if another writer commits too.
    """
    rows = (DeltaTable.forPath(spark, path).history(50)
            .where((F.col("userMetadata") == tag) & (F.col("version") > after_version))
            .orderBy(F.col("version").desc()).select("version", "operationMetrics").limit(1).collect())
    if not rows:
        return None
    metrics = rows[0]["operationMetrics"] or {}
    return int(rows[0]["version"]), {k: int(v) for k, v in metrics.items() if str(v).lstrip("-").isdigit()}


def new_table_properties_conf(properties: dict[str, str]) -> dict[str, str]:
    """The session settings that give a Delta table created while they are set these ``delta.*`` properties."""
    return {f"spark.databricks.delta.properties.defaults.{k.removeprefix('delta.')}": v for k, v in properties.items()}


def append_rows(spark, df: DataFrame, path: str, *, tag: str, partition_by: list[str] | None = None,
                optimize_write: bool = True, properties: dict[str, str] | None = None) -> tuple[int, int]:
    """Append ``df`` as one commit tagged ``tag`` (new columns are added); returns (version, rows written).

    ``properties``: Delta table properties the table should have (set when the append creates it; an existing
    table that lacks them gets them first, in a commit of their own).
    """
    writer = (df.write.format("delta").mode("append").option("mergeSchema", "true").option("userMetadata", tag)
              .option("optimizeWrite", str(optimize_write).lower()))
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    creating = {}
    if properties:
        if tables.exists(spark, path):
            ensure_properties(spark, path, properties)
        else:
            creating = new_table_properties_conf(properties)
    with session_conf(spark, creating):
        writer.save(path)
    committed = commit_metrics(spark, path, tag)
    if committed is None:
        raise ConservationError(f"the append to {path} left no commit tagged {tag!r} in its last 50 versions")
    version, metrics = committed
    return version, metrics.get("numOutputRows", 0)


def ensure_properties(spark, path: str, properties: dict[str, str]) -> None:
    """Give the existing Delta table at ``path`` the table ``properties`` it lacks (no commit if it has them)."""
    current = DeltaTable.forPath(spark, path).detail().select("properties").first()[0] or {}
    missing = {k: v for k, v in properties.items() if current.get(k) != v}
    if missing:
        settings = ", ".join(f"'{k}' = '{v}'" for k, v in missing.items())
        spark.sql(f"ALTER TABLE delta.`{path.replace('`', '``')}` SET TBLPROPERTIES ({settings})")
        log.info("%s: table properties set: %s", path, settings)


def partition_literal(column: str, value) -> str:
    if column == C.EVENT_DATE:
        return f"DATE'{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


def merge_new_events(spark, events: DataFrame, path: str, *, partition_col: str, partition_values: list,
                     tag: str, distinct_events: int) -> dict[str, int]:
    """Insert the events whose event_id is not in silver yet; returns version, source_rows and inserted.

    ``source_rows`` comes from the commit's own metrics (numSourceRows); when the MERGE inserts nothing Delta
    commits nothing, and ``distinct_events`` (counted before) stands in.

    The merge condition names the batch's partition values as literals (``t.p IN (...)``) so Delta reads only
    those partitions of the target (delta-io/delta#668); every partition value of the batch must be in that list,
    or rows of a missing partition would be inserted again.
    """
    if not partition_values:
        return {"version": tables.version(spark, path) if tables.exists(spark, path) else None,
                "source_rows": 0, "inserted": 0}
    if not tables.exists(spark, path):
        with session_conf(spark, SILVER_WRITE_CONF):
            version, written = append_rows(spark, events, path, tag=tag, partition_by=[partition_col],
                                           optimize_write=False, properties=SILVER_PROPERTIES)
        return {"version": version, "source_rows": written, "inserted": written}
    values = ", ".join(partition_literal(partition_col, v) for v in sorted(partition_values))
    condition = (f"t.`{partition_col}` IN ({values}) AND t.`{partition_col}` = s.`{partition_col}` "
                 f"AND t.`{C.EVENT_ID}` = s.`{C.EVENT_ID}`")
    ensure_properties(spark, path, SILVER_PROPERTIES)
    before = tables.version(spark, path)
    with session_conf(spark, {**SILVER_WRITE_CONF, "spark.databricks.delta.commitInfo.userMetadata": tag}):
        (DeltaTable.forPath(spark, path).alias("t").merge(events.alias("s"), condition)
         .withSchemaEvolution().whenNotMatchedInsertAll().execute())
    committed = commit_metrics(spark, path, tag, after_version=before)
    if committed is None:  # every event was already there: Delta commits nothing; count the batch's events once
        return {"version": before, "source_rows": distinct_events, "inserted": 0}
    version, metrics = committed
    return {"version": version, "source_rows": metrics.get("numSourceRows", 0),
            "inserted": metrics.get("numTargetRowsInserted", 0)}


def resolve_partition_column(spark, silver_path: str, grain: str | None, fmt) -> str:
    """The partition column of silver: the existing table's, else the requested grain's, else the format's default."""
    if tables.exists(spark, silver_path):
        existing = list(DeltaTable.forPath(spark, silver_path).detail().select("partitionColumns").first()[0])
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


def check_conservation(n: dict) -> None:
    problems = conservation_problems(n)
    if problems:
        raise ConservationError("rows not accounted for: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------- the run


def run(spark, args) -> dict:
    lake = Lake(args.lake)
    run_id = args.run_id or uuid.uuid4().hex
    started = time.time()
    started_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    fmt = input_format(args)
    event_types = [t.strip() for t in args.event_types.split(",") if t.strip()] if args.event_types else None
    bot_limit = args.bot_max_events_per_day
    if bot_limit is None:
        bot_limit = DEFAULT_BOT_MAX_EVENTS_PER_DAY if parse.is_event_format(fmt) else 0
    paths = {name: lake.table(*where) for name, where in
             (("bronze", BRONZE), ("silver", SILVER), ("quarantine", QUARANTINE),
              ("files", INGESTED_FILES), ("runs", INGEST_RUNS))}
    summary = {"run_id": run_id, "input": args.input, "format": args.format, "status": "ok",
               "incremental": bool(args.incremental)}

    with Progress(spark, f"ingest {run_id[:8]}", every_s=args.progress_every) as progress:
        progress.step("list input")
        files = list_input_files(spark, args.input)
        seen = already_ingested(spark, paths["files"]) if args.incremental else set()
        new = [f for f in files if f.key not in seen]
        summary.update(files_new=len(new), files_skipped=len(files) - len(new),
                       bytes_new=sum(f.size for f in new))
        if not new:
            summary.update(read=0, headers=0, loaded=0, duplicates=0, duplicates_in_batch=0, duplicates_in_silver=0,
                           quarantined=0, quarantined_by_reason={}, partitions=0,
                           seconds=round(time.time() - started, 1), status="nothing new")
            print_summary(summary)
            return summary
        partition_col = resolve_partition_column(spark, paths["silver"], args.partition_grain, fmt)
        summary["partition_column"] = partition_col
        log.info("ingest %s: %d new file(s), %.1f MB, format %s, silver partitioned by %s", run_id[:8], len(new),
                 summary["bytes_new"] / 1e6, fmt.name, partition_col)

        progress.step("split offsets")
        # A scan without parsing: each input split's first row id (for source_line) and its row count, the
        # number every later count is checked against.
        splits = split_rows(read_rows(spark, new, fmt))
        counted_total = sum(s.rows for s in splits)
        rows_by_file: dict[str, int] = {}
        for s in splits:
            rows_by_file[s.file] = rows_by_file.get(s.file, 0) + s.rows
        split_df = spark.createDataFrame([(s.file, s.offset, s.first_row, s.order) for s in splits],
                                         f"{C.SOURCE_FILE} string, {C.SOURCE_OFFSET} long, _first_row long, "
                                         "_split_order long")
        stamp = [F.lit(run_id).alias(C.INGEST_RUN_ID), F.lit(started_at).cast("timestamp").alias(C.INGESTED_AT)]

        progress.step("parse into bronze")
        # Every row is parsed once, on its way to bronze: bronze keeps the raw text and what the parser made of it,
        # and every step below reads only the columns it needs from this run's bronze rows (Parquet is columnar),
        # instead of a persisted copy of the whole parse.
        parsed = parse.parse_lines(
            read_rows(spark, new, fmt), fmt,
            max_event_ts_seconds=int(started + args.future_tolerance_hours * 3600),
            rating_min=args.rating_min, rating_max=args.rating_max,
            **({"event_types": event_types, "max_value": args.max_value} if parse.is_event_format(fmt) else {}),
        ).transform(parse.with_good_event_id)
        # a left join: a split the first scan did not see (a file that grew) keeps its rows, and the per-file
        # counts below then fail the run instead of losing them
        located = parsed.join(F.broadcast(split_df.drop("_split_order")), on=[C.SOURCE_FILE, C.SOURCE_OFFSET],
                              how="left")
        bronze_version, bronze_rows = append_rows(
            spark, located.select(C.RAW, C.SOURCE_FILE, C.SOURCE_OFFSET,
                                  (F.col(ROW_ID) - F.col("_first_row") + 1).alias(C.SOURCE_LINE), *stamp,
                                  F.col(C.REASON).alias(C.PARSE_REASON), *BRONZE_PARSED_COLUMNS),
            paths["bronze"], tag=f"ingest:{run_id}", optimize_write=False, properties=BRONZE_PROPERTIES)
        batch = (tables.read(spark, paths["bronze"], version=bronze_version)
                 .where((F.col(C.INGEST_RUN_ID) == run_id) & (F.col(C.INGESTED_AT) == F.lit(started_at)))
                 .withColumnRenamed(C.PARSE_REASON, C.REASON))

        progress.step("count")
        stats = batch_stats(batch, partition_col)
        counted = stats["by_reason"]
        changed = [f"{f}: {rows_by_file.get(f, 0):,} rows when first read, {stats['rows_by_file'].get(f, 0):,} "
                   "in bronze" for f in sorted(set(rows_by_file) | set(stats["rows_by_file"]))
                   if rows_by_file.get(f, 0) != stats["rows_by_file"].get(f, 0)]
        flagged, flagged_rows = [], 0
        final = batch
        if bot_limit and counted.get(None, 0):
            progress.step("outlier policy")
            flagged = (outliers.bot_user_days(batch, max_events_per_day=bot_limit)
                       .limit(MAX_FLAGGED_USER_DAYS + 1).collect())
            if len(flagged) > MAX_FLAGGED_USER_DAYS:
                raise ValueError(f"--bot-max-events-per-day {bot_limit} flags more than {MAX_FLAGGED_USER_DAYS:,} "
                                 "user-days as bots; the threshold is too low for this input")
            if flagged:
                flagged_rows = sum(r[outliers.N_EVENTS_DAY] for r in flagged)
                flagged_df = spark.createDataFrame(flagged, f"{C.USER_ID} string, {C.EVENT_DATE} date, "
                                                            f"{outliers.N_EVENTS_DAY} long")
                final = outliers.quarantine_bot_rows(batch, flagged_df)
                log.info("outlier policy: %d user-day(s) over %d events, %d rows to quarantine",
                         len(flagged), bot_limit, flagged_rows)
        if flagged_rows:
            counted = dict(counted)
            counted[None] -= flagged_rows
            counted[parse.BOT_SUSPECTED] = counted.get(parse.BOT_SUSPECTED, 0) + flagged_rows

        progress.step("quarantine")
        counted_rejected = sum(v for k, v in counted.items() if k not in (None, parse.HEADER))
        quarantine_version, quarantine_rows = None, 0
        if counted_rejected:
            rejected = parse.rejected_rows(final.where(F.col(C.REASON).isNotNull()))
            quarantine_version, quarantine_rows = append_rows(
                spark, rejected.select("*", *stamp), paths["quarantine"], tag=f"ingest:{run_id}")

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

            progress.step("silver merge")
            events = good.transform(parse.with_event_date).select(*SILVER_COLUMNS, C.INGEST_RUN_ID, C.INGESTED_AT)
            partition_values = stats["partitions"] if counted.get(None, 0) else []
            merged = merge_new_events(spark, events, paths["silver"], partition_col=partition_col,
                                      partition_values=partition_values, tag=f"ingest:{run_id}",
                                      distinct_events=distinct_events)
        finally:
            dups.unpersist()

        numbers = {"counted_total": counted_total, "counted_good": counted.get(None, 0),
                   "counted_rejected": counted_rejected, "headers": counted.get(parse.HEADER, 0),
                   "bronze_rows": bronze_rows, "quarantine_rows": quarantine_rows,
                   "source_rows": merged["source_rows"], "inserted": merged["inserted"],
                   "counted_distinct": distinct_events}
        summary.update(
            read=bronze_rows, headers=numbers["headers"], loaded=merged["inserted"],
            duplicates=numbers["counted_good"] - merged["inserted"],
            duplicates_in_batch=numbers["counted_good"] - merged["source_rows"],
            duplicates_in_silver=merged["source_rows"] - merged["inserted"],
            quarantined=quarantine_rows,
            quarantined_by_reason={k: v for k, v in sorted(counted.items(), key=lambda kv: str(kv[0]))
                                   if k not in (None, parse.HEADER) and v},
            partitions=len(partition_values),
            partition_range=[str(min(partition_values)), str(max(partition_values))] if partition_values else None,
            bot_user_days=len(flagged),
            versions={"bronze": bronze_version, "quarantine": quarantine_version, "silver": merged["version"]},
        )
        problems = conservation_problems(numbers) + [f"input changed while it was read: {c}" for c in changed]
        summary["seconds"] = round(time.time() - started, 1)
        progress.step("record run")
        if problems:
            summary["status"] = "failed: rows not accounted for"
            summary["problems"] = problems
            record_run(spark, paths["runs"], summary, started_at)
            print_summary(summary)
            raise ConservationError("rows not accounted for: " + "; ".join(problems))
        record_files(spark, paths["files"], new, rows_by_file, run_id, started_at, args.format)
        summary["steps"] = dict(progress.timings)
        summary["seconds"] = round(time.time() - started, 1)
        record_run(spark, paths["runs"], summary, started_at)
    print_summary(summary)
    return summary


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
    """Rows by reason, rows by file and the partition values of the good rows: one aggregation over this run's
    bronze rows (``reason`` being the parser's), reading three columns."""
    part = F.when(F.col(C.REASON).isNull(), F.to_date(C.EVENT_TS) if partition_col == C.EVENT_DATE
                  else F.date_format(C.EVENT_TS, "yyyy-MM"))
    rows = batch.groupBy(C.SOURCE_FILE, C.REASON, part.alias("_part")).agg(F.count(F.lit(1)).alias("n")).collect()
    by_reason: dict = {}
    by_file: dict = {}
    partitions = set()
    for r in rows:
        by_reason[r[C.REASON]] = by_reason.get(r[C.REASON], 0) + r["n"]
        by_file[r[C.SOURCE_FILE]] = by_file.get(r[C.SOURCE_FILE], 0) + r["n"]
        if r["_part"] is not None:
            partitions.add(r["_part"])
    return {"by_reason": by_reason, "rows_by_file": by_file, "partitions": sorted(partitions)}


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
    append_rows(spark, df.coalesce(1), path, tag=f"ingest:{run_id}")


def record_run(spark, path: str, summary: dict, started_at: dt.datetime) -> None:
    row = (summary["run_id"], started_at, float(summary["seconds"]), summary["input"], summary["format"],
           summary["status"], int(summary["files_new"]), int(summary["read"]), int(summary["headers"]),
           int(summary["loaded"]), int(summary["duplicates"]), int(summary["quarantined"]),
           {k: int(v) for k, v in summary["quarantined_by_reason"].items()}, json.dumps(summary, default=str))
    df = tables.one_row(spark, row, f"{C.INGEST_RUN_ID} string, started_at timestamp, seconds double, input string, "
                                    "format string, status string, files long, read long, headers long, loaded long, "
                                    "duplicates long, quarantined long, quarantined_by_reason map<string,long>, "
                                    "summary string")
    append_rows(spark, df, path, tag=f"ingest:{summary['run_id']}")


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
    print(json.dumps(summary, default=str), file=sys.stderr)


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
