"""Collect a DataFrame to the driver straight from its Parquet files, when Spark's plan proves that gives its rows.

The scorer's set-up brings two inputs to the driver: the seen (user, item) pairs and the item factors. Through
Spark each is a job: the JVM reads the Parquet files, turns the columns into rows and the rows into Arrow batches,
and hands those to Python over a socket. When the DataFrame is nothing but a choice (and renaming) of columns of
Parquet files on a local or mounted filesystem, pyarrow reads the same rows itself: no JVM job, no row conversion.

``parquet_source`` finds such a DataFrame from its physical plan, and refuses (returns None) unless every row of
the files is a row of the DataFrame and every column is a file column:

* the plan is a file scan of Parquet (plain, or a Delta table's files) with at most column projections, renames
  and Spark's row conversion above it: no filter, join, aggregate, computed column, cache or RDD;
* the scan prunes nothing (no partition or data filters) and reads no partition column (their values live in the
  folder names, not in the files) and no metadata column;
* a Delta table has no column mapping (the files' column names would differ). Deletion vectors need no check of
  their own: Spark reads them with a row filter in the plan, which is refused;
* the columns are numbers, booleans or strings, or arrays of them: types that Parquet and Spark store alike (no
  timestamps, decimals or structs, whose reading Spark adjusts), and the scan's schema carries no Parquet field
  ids (Spark would match the files' columns by id, pyarrow matches them by name);
* every file is a ``file:`` URI. Object stores (s3a, abfss, gs) are read through Spark: the driver may not hold
  the executors' credentials or Hadoop's settings for them.

The same test lets the scorer's tasks read the user factors themselves: ``split_rows`` cuts the files' rows into
even runs of row-group slices (footers only, on the driver) and ``read_slices`` reads one run in Arrow batches, so
the JVM does not decode the factors and convert them to Arrow. The executors must see the same paths, as Spark's
own reading of those ``file:`` URIs needs.

Anything else, or Spark Connect (no plan to ask), and the caller collects through Spark. The rows come in no
particular order (as through Spark), cast to the Arrow types Spark's own collection gives for the DataFrame's
schema; a file that cannot be read or cast makes ``to_arrow`` fall back to Spark, never to fewer rows.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from lake import jvm

log = logging.getLogger(__name__)

PARQUET_FORMATS = ("ParquetFileFormat", "DeltaParquetFileFormat")
# physical operators that pass the scan's rows through unchanged (whole-stage code generation, row conversion)
PASS_THROUGH_NODES = ("WholeStageCodegenExec", "InputAdapter", "ColumnarToRowExec")
METADATA_PREFIXES = ("_metadata", "__delta_internal", "_tmp_metadata")
PLAIN_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.BooleanType,
               T.StringType)
FIELD_ID_KEY = "parquet.field.id"  # a schema field with this metadata is matched to the file's column by id


@dataclass(frozen=True)
class ParquetSource:
    """The Parquet files behind a DataFrame and which file column gives each of its columns."""

    paths: tuple[str, ...]  # local paths of the files
    columns: tuple[tuple[str, str], ...]  # (DataFrame column, file column), in the DataFrame's order
    schema: pa.Schema  # the Arrow schema Spark's collection gives for the DataFrame

    def num_rows(self) -> int:
        """Rows in the files, from their footers (nothing else is read)."""
        return sum(pq.read_metadata(path).num_rows for path in self.paths)

    def file_columns(self) -> list[str]:
        """The file columns to read, each once."""
        return list(dict.fromkeys(source for _, source in self.columns))

    def as_dataframe(self, data: pa.Table | pa.RecordBatch) -> pa.Table | pa.RecordBatch:
        """``data`` read from the files (file_columns) as the DataFrame's columns: names, order and Arrow types."""
        shaped = data.select([source for _, source in self.columns]).rename_columns([name for name, _ in self.columns])
        return shaped.cast(self.schema)  # safe: an out-of-range value raises instead of wrapping

    def read(self) -> pa.Table:
        """Every row of the files, with the DataFrame's column names and Arrow types."""
        if not self.paths:
            return self.schema.empty_table()
        return self.as_dataframe(pq.read_table(list(self.paths), columns=self.file_columns(), partitioning=None))


@dataclass(frozen=True)
class RowGroupSlice:
    """Rows ``start`` to ``stop`` (exclusive) of one row group of one Parquet file."""

    path: str
    row_group: int
    start: int
    stop: int


def split_rows(source: ParquetSource, parts: int) -> list[tuple[RowGroupSlice, ...]] | None:
    """The files' rows cut into at most ``parts`` runs of consecutive rows (file by file, row group by row group) of
    nearly equal length, each given as the row-group slices it covers. Only the footers are read. No rows: [].
    None when a file lacks one of the columns (a table whose schema grew: Spark reads the missing column as null)."""
    needed = set(source.file_columns())
    groups = []  # (path, row group, rows)
    for path in source.paths:
        meta = pq.read_metadata(path)
        if not needed <= set(meta.schema.to_arrow_schema().names):
            return None
        groups.extend((path, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups))
    total = sum(rows for _, _, rows in groups)
    if total == 0:
        return []
    parts = max(1, min(parts, total))
    runs: list[list[RowGroupSlice]] = [[] for _ in range(parts)]
    first_row = 0  # of the current row group, counted over all the files
    for path, group, rows in groups:
        # the runs that this group's rows [first_row, first_row + rows) meet; run p holds [total*p//parts, ...)
        part = first_row * parts // total
        while part < parts:
            run_start, run_stop = total * part // parts, total * (part + 1) // parts
            start, stop = max(run_start, first_row), min(run_stop, first_row + rows)
            if start >= first_row + rows:
                break
            if start < stop:
                runs[part].append(RowGroupSlice(path, group, start - first_row, stop - first_row))
            part += 1
        first_row += rows
    return [tuple(run) for run in runs]


def read_slices(source: ParquetSource, slices: tuple[RowGroupSlice, ...], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The rows of ``slices`` in record batches of at most ``batch_rows`` rows, with the DataFrame's column names
    and Arrow types (as ParquetSource.read gives them). A file that cannot be read raises OSError naming it."""
    columns = source.file_columns()
    parquet = parquet_path = None
    for piece in slices:
        try:
            if parquet_path != piece.path:  # a run's slices mostly share a file: one footer read
                parquet, parquet_path = pq.ParquetFile(piece.path), piece.path
            position = 0  # of the next batch within the row group
            for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=[piece.row_group], columns=columns,
                                              use_threads=False):
                lo, hi = max(piece.start - position, 0), min(piece.stop - position, batch.num_rows)
                position += batch.num_rows
                if lo < hi:
                    yield source.as_dataframe(batch.slice(lo, hi - lo))
                if position >= piece.stop:
                    break
        except (OSError, pa.ArrowException) as error:
            raise OSError(f"reading rows {piece.start}-{piece.stop} of row group {piece.row_group} of "
                          f"{piece.path} directly failed: {error}") from error


def parquet_source(df: DataFrame) -> ParquetSource | None:
    """The Parquet files that hold exactly ``df``'s rows and columns, or None (see the module's docstring)."""
    if not all(_plain_type(field.dataType) for field in df.schema.fields):
        return None
    plan = jvm.executed_plan(df)
    if plan is None:  # Spark Connect or no JVM plan: the caller goes through Spark
        return None
    try:
        columns = _file_columns(plan)
        if columns is None:
            return None
        paths = []
        for uri in df.inputFiles():
            parsed = urlparse(uri)
            if parsed.scheme != "file":
                return None
            paths.append(unquote(parsed.path))
        schema = to_arrow_schema(df.schema)
    except Exception:  # noqa: BLE001 - a plan shape this code does not know: read through Spark
        log.debug("no direct Parquet read for this plan", exc_info=True)
        return None
    return ParquetSource(paths=tuple(paths), columns=tuple(columns), schema=schema)


def to_arrow(df: DataFrame, *, direct: bool = True, source: ParquetSource | None = None) -> pa.Table:
    """``df`` collected as an Arrow table: from its Parquet files when ``direct`` and parquet_source allows it
    (``source``, when the caller already has it), through Spark's ``toArrow`` otherwise or if that read fails."""
    if direct:
        source = source or parquet_source(df)
        if source is not None:
            try:
                table = source.read()
                log.info("read %s rows of %s from %d Parquet files directly", f"{table.num_rows:,}",
                         ", ".join(table.column_names), len(source.paths))
                return table
            except (OSError, KeyError, pa.ArrowException) as error:
                log.warning("reading %d Parquet files directly failed (%s); collecting through Spark instead",
                            len(source.paths), error)
    return df.toArrow()


def _file_columns(plan) -> list[tuple[str, str]] | None:
    """[(output column, file column)] when ``plan`` (a JVM SparkPlan) is a plain Parquet scan under projections."""
    wanted = _attributes(plan.output())  # each output column: the expression id it comes from
    node = plan
    while True:
        kind = node.getClass().getSimpleName()
        if kind == "FileSourceScanExec":
            return _scan_columns(node, wanted)
        if kind == "ProjectExec":
            sources = {}
            entries = node.projectList()
            for i in range(entries.size()):
                entry = entries.apply(i)
                entry_kind = entry.getClass().getSimpleName()
                if entry_kind == "Alias":
                    child = entry.child()
                    if child.getClass().getSimpleName() != "AttributeReference":
                        return None  # a computed column
                    sources[entry.exprId().id()] = child.exprId().id()
                elif entry_kind == "AttributeReference":
                    sources[entry.exprId().id()] = entry.exprId().id()
                else:
                    return None
            if any(expr_id not in sources for _, expr_id in wanted):
                return None
            wanted = [(name, sources[expr_id]) for name, expr_id in wanted]
        elif kind not in PASS_THROUGH_NODES:
            return None
        children = node.children()
        if children.size() != 1:
            return None
        node = children.apply(0)


def _scan_columns(scan, wanted: list[tuple[str, int]]) -> list[tuple[str, str]] | None:
    relation = scan.relation()
    file_format = relation.fileFormat()
    format_name = file_format.getClass().getSimpleName()
    if format_name not in PARQUET_FORMATS:
        return None
    if not scan.partitionFilters().isEmpty() or not scan.dataFilters().isEmpty():
        return None
    if format_name == "DeltaParquetFileFormat" and file_format.columnMappingMode().name() != "none":
        return None
    if FIELD_ID_KEY in relation.dataSchema().json():
        return None
    partition_columns = {name.lower() for name in relation.partitionSchema().fieldNames()}
    by_id = {expr_id: name for name, expr_id in _attributes(scan.output())}
    columns = []
    for name, expr_id in wanted:
        source = by_id.get(expr_id)
        if source is None or source.lower() in partition_columns or source.startswith(METADATA_PREFIXES):
            return None
        columns.append((name, source))
    return columns


def _plain_type(data_type) -> bool:
    if isinstance(data_type, T.ArrayType):
        data_type = data_type.elementType
    return isinstance(data_type, PLAIN_TYPES)


def _attributes(seq) -> list[tuple[str, int]]:
    """(name, expression id) of a Scala Seq of attributes."""
    attributes = [seq.apply(i) for i in range(seq.size())]
    return [(attribute.name(), attribute.exprId().id()) for attribute in attributes]
