"""Delta table I/O: every write is one Delta commit, so a failed job leaves the last good table.

The only module that calls Delta's Python API (``delta.tables.DeltaTable``).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

log = logging.getLogger(__name__)


def one_row(spark: SparkSession, values: tuple, schema: str) -> DataFrame:
    """A one-row DataFrame of ``values`` typed by the DDL ``schema``, built from literals in the JVM.

    ``spark.createDataFrame([row])`` ships the row through a Python worker (about 1-2 s on a small machine, the
    bulk of appending one run record); literals need no worker.
    """
    fields = StructType.fromDDL(schema).fields
    if len(fields) != len(values):
        raise ValueError(f"{len(values)} values for the {len(fields)} columns of {schema!r}")
    return spark.range(1).select(*[_literal(v).cast(f.dataType).alias(f.name) for v, f in zip(values, fields)])


def _literal(value):
    """F.lit, plus dicts as map literals (F.lit refuses them)."""
    if isinstance(value, dict):
        return F.create_map(*[F.lit(part) for item in value.items() for part in item])
    return F.lit(value)


def exists(spark: SparkSession, path: str) -> bool:
    return DeltaTable.isDeltaTable(spark, path)


def read(spark: SparkSession, path: str, *, version: int | None = None) -> DataFrame:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(path)


def read_if_exists(spark: SparkSession, path: str) -> DataFrame | None:
    return read(spark, path) if exists(spark, path) else None


def version(spark: SparkSession, path: str) -> int:
    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def last_metrics(spark: SparkSession, path: str) -> dict[str, int]:
    """operationMetrics of the table's latest commit, as ints (numOutputRows, numTargetRowsInserted, ...)."""
    metrics = DeltaTable.forPath(spark, path).history(1).select("operationMetrics").first()[0] or {}
    return {k: int(v) for k, v in metrics.items() if str(v).lstrip("-").isdigit()}


def append(df: DataFrame, path: str, *, partition_by: list[str] | None = None) -> None:
    writer = df.write.format("delta").mode("append")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


def overwrite(df: DataFrame, path: str, *, partition_by: list[str] | None = None, replace_where: str | None = None) -> None:
    """Atomic replacement (readers see the old or the new rows), of the whole table or of ``replace_where``."""
    writer = df.write.format("delta").mode("overwrite")
    if replace_where:
        writer = writer.option("replaceWhere", replace_where)
    else:
        writer = writer.option("overwriteSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


def insert_new(spark: SparkSession, df: DataFrame, path: str, *, key: str, partition_col: str | None = None) -> int:
    """Insert rows whose ``key`` is not in the table yet (MERGE ... WHEN NOT MATCHED INSERT). Returns rows inserted.

    The partition column, when given, is part of the match condition so Delta can prune partitions.
    """
    if not exists(spark, path):
        append(df, path, partition_by=[partition_col] if partition_col else None)
        return last_metrics(spark, path).get("numOutputRows", 0)
    condition = f"t.`{key}` = s.`{key}`"
    if partition_col:
        condition = f"t.`{partition_col}` = s.`{partition_col}` AND " + condition
    merge_insert_new(spark, df, path, condition)
    return last_metrics(spark, path).get("numTargetRowsInserted", 0)


def delete(spark: SparkSession, path: str, predicate: str) -> None:
    """Delete the rows of the Delta table at ``path`` that match the SQL ``predicate``, in one commit. A table that
    does not exist has nothing to delete."""
    if exists(spark, path):
        DeltaTable.forPath(spark, path).delete(predicate)


def partition_columns(spark: SparkSession, path: str) -> list[str]:
    """The partition columns of the Delta table at ``path``."""
    return list(DeltaTable.forPath(spark, path).detail().select("partitionColumns").first()[0])


def history(spark: SparkSession, path: str, n: int) -> DataFrame:
    """The table's last ``n`` commits (Delta's DESCRIBE HISTORY), newest first."""
    return DeltaTable.forPath(spark, path).history(n)


@contextlib.contextmanager
def session_conf(spark: SparkSession, settings: dict[str, str]):
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


def commit_metrics(spark: SparkSession, path: str, tag: str, *,
                   after_version: int = -1) -> tuple[int, dict[str, int]] | None:
    """(version, operationMetrics) of the newest commit of ``path`` tagged ``tag`` (userMetadata) after
    ``after_version``, or None if there is none (an insert-only MERGE that inserts nothing commits nothing).

    Matching on our own tag, not on "the latest commit", keeps the numbers right if another writer commits too.
    """
    rows = (history(spark, path, 50)
            .where((F.col("userMetadata") == tag) & (F.col("version") > after_version))
            .orderBy(F.col("version").desc()).select("version", "operationMetrics").limit(1).collect())
    if not rows:
        return None
    metrics = rows[0]["operationMetrics"] or {}
    return int(rows[0]["version"]), {k: int(v) for k, v in metrics.items() if str(v).lstrip("-").isdigit()}


def tagged_commits(spark: SparkSession, path: str, *,
                   depth: int = 1000) -> list[tuple[str, int, dt.datetime, dict[str, int]]]:
    """(tag, version, time, operationMetrics as ints) of every commit of ``path`` among its last ``depth`` that
    carries a tag (userMetadata), oldest first."""
    rows = (history(spark, path, depth).where(F.col("userMetadata").isNotNull())
            .select("userMetadata", "version", "timestamp", "operationMetrics").orderBy("version").collect())
    return [(r["userMetadata"], int(r["version"]), r["timestamp"],
             {k: int(v) for k, v in (r["operationMetrics"] or {}).items() if str(v).lstrip("-").isdigit()})
            for r in rows]


def new_table_properties_conf(properties: dict[str, str]) -> dict[str, str]:
    """The session settings that give a Delta table created while they are set these ``delta.*`` properties."""
    return {f"spark.databricks.delta.properties.defaults.{k.removeprefix('delta.')}": v for k, v in properties.items()}


class MissingCommitError(RuntimeError):
    """A write returned but its tagged commit is not in the table's recent history."""


def append_tagged(spark: SparkSession, df: DataFrame, path: str, *, tag: str, partition_by: list[str] | None = None,
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
        if exists(spark, path):
            ensure_properties(spark, path, properties)
        else:
            creating = new_table_properties_conf(properties)
    with session_conf(spark, creating):
        writer.save(path)
    committed = commit_metrics(spark, path, tag)
    if committed is None:
        raise MissingCommitError(f"the append to {path} left no commit tagged {tag!r} in its last 50 versions")
    version, metrics = committed
    return version, metrics.get("numOutputRows", 0)


def ensure_properties(spark: SparkSession, path: str, properties: dict[str, str]) -> None:
    """Give the existing Delta table at ``path`` the table ``properties`` it lacks (no commit if it has them)."""
    current = DeltaTable.forPath(spark, path).detail().select("properties").first()[0] or {}
    missing = {k: v for k, v in properties.items() if current.get(k) != v}
    if missing:
        settings = ", ".join(f"'{k}' = '{v}'" for k, v in missing.items())
        spark.sql(f"ALTER TABLE delta.`{path.replace('`', '``')}` SET TBLPROPERTIES ({settings})")
        log.info("%s: table properties set: %s", path, settings)


def merge_insert_new(spark: SparkSession, source: DataFrame, path: str, condition: str | Column) -> None:
    """MERGE ``source`` (alias ``s``) into the table at ``path`` (alias ``t``): insert the rows no target row
    matches on ``condition`` (SQL text naming only columns, or a Column whose values are literals); new columns
    are added (schema evolution)."""
    (DeltaTable.forPath(spark, path).alias("t").merge(source.alias("s"), condition)
     .withSchemaEvolution().whenNotMatchedInsertAll().execute())


def detail(spark: SparkSession, path: str) -> dict:
    """The table's file count, size in bytes and partition columns (Delta's DESCRIBE DETAIL)."""
    row = DeltaTable.forPath(spark, path).detail().select("numFiles", "sizeInBytes", "partitionColumns").first()
    return {"files": int(row["numFiles"]), "bytes": int(row["sizeInBytes"]),
            "partition_columns": list(row["partitionColumns"])}


def optimize(spark: SparkSession, path: str, *, where: str | None = None, zorder_by: tuple[str, ...] = ()) -> dict:
    """OPTIMIZE the table (Z-ORDER BY ``zorder_by`` when given, else bin-packing), limited to the partitions
    matching ``where``; returns files added and removed."""
    builder = DeltaTable.forPath(spark, path).optimize()
    if where:
        builder = builder.where(where)
    result = builder.executeZOrderBy(*zorder_by) if zorder_by else builder.executeCompaction()
    metrics = result.select("metrics.numFilesAdded", "metrics.numFilesRemoved").first()
    return {"files_added": int(metrics["numFilesAdded"]), "files_removed": int(metrics["numFilesRemoved"])}


def vacuum(spark: SparkSession, path: str, hours: float, *, allow_short_retention: bool = False) -> None:
    """VACUUM files no version of the last ``hours`` needs (Delta refuses under 168 h unless allowed)."""
    settings = {"spark.databricks.delta.retentionDurationCheck.enabled": "false"} if allow_short_retention else {}
    with session_conf(spark, settings):
        DeltaTable.forPath(spark, path).vacuum(hours)


def oldest_version(spark: SparkSession, path: str) -> int:
    """The oldest version of the table still in its history (older ones cannot be read back)."""
    return int(DeltaTable.forPath(spark, path).history().agg(F.min("version")).first()[0])


def restore(spark: SparkSession, path: str, version: int) -> None:
    """RESTORE the table to ``version`` (a new commit whose contents are that version's)."""
    DeltaTable.forPath(spark, path).restoreToVersion(version)
