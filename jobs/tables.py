"""Delta table I/O shared by the jobs: every write is one Delta commit, so a failed job leaves the last good table."""
from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType


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
    (
        DeltaTable.forPath(spark, path).alias("t")
        .merge(df.alias("s"), condition)
        .whenNotMatchedInsertAll()
        .execute()
    )
    return last_metrics(spark, path).get("numTargetRowsInserted", 0)
