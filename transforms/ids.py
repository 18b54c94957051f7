"""Stable dense integer ids for ALS: existing ids never change, new ids are appended after the largest one."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

INT32_MAX = 2**31 - 1
_ROW_BITS = 33  # monotonically_increasing_id = (partition index << 33) + row number within the partition


class IdSpaceExhausted(ValueError):
    """More distinct ids than a Java int can index (ALS needs int32 ids)."""


def new_id_rows(existing_map: DataFrame | None, ids: DataFrame, *, id_col: str, idx_col: str) -> DataFrame:
    """Rows (id, idx) for ids not yet in ``existing_map``, numbered from max(existing idx) + 1 in id order.

    Deterministic for the same inputs. Raises IdSpaceExhausted if the new indices would pass INT32_MAX.

    Numbering stays in the JVM and is distributed: a global sort (range partitions, so partition k holds smaller
    ids than partition k + 1) is materialised once, each partition's row count is collected (one small row per
    partition), and a row's index is the count of all earlier partitions plus its row number within its own
    partition. A window without partitions would funnel every id through one task; zipWithIndex would ship every
    id through Python.
    """
    distinct = ids.select(id_col).where(F.col(id_col).isNotNull()).distinct()
    if existing_map is None:
        start = 0
        fresh = distinct
    else:
        top = existing_map.agg(F.max(idx_col)).first()[0]
        start = 0 if top is None else int(top) + 1
        fresh = distinct.join(existing_map.select(id_col), on=id_col, how="left_anti")
    numbered = fresh.orderBy(id_col).select(
        id_col, F.spark_partition_id().alias("_part"), F.monotonically_increasing_id().alias("_row_id")
    ).localCheckpoint(eager=True)
    sizes = sorted((r["_part"], r["n"]) for r in numbered.groupBy("_part").agg(F.count(F.lit(1)).alias("n")).collect())
    count = sum(n for _, n in sizes)
    if count and start + count - 1 > INT32_MAX:
        raise IdSpaceExhausted(
            f"{idx_col}: {count} new ids after index {start - 1} would pass the int32 limit {INT32_MAX}"
        )
    if not count:
        return fresh.withColumn(idx_col, F.lit(None).cast("int")).limit(0)
    first_index, offsets = start, []
    for part, n in sizes:
        offsets.append((part, first_index))
        first_index += n
    spark = ids.sparkSession
    offset_df = spark.createDataFrame(offsets, "_part int, _first long")
    row_in_part = F.col("_row_id").bitwiseAND(F.lit((1 << _ROW_BITS) - 1))
    return numbered.join(F.broadcast(offset_df), on="_part").select(
        id_col, (F.col("_first") + row_in_part).cast("int").alias(idx_col))


def attach_idx(df: DataFrame, id_map: DataFrame, *, id_col: str, idx_col: str) -> DataFrame:
    """Add ``idx_col`` to ``df`` by joining the id map; raises if any id is missing from the map."""
    joined = df.join(id_map.select(id_col, idx_col), on=id_col, how="left")
    missing = joined.where(F.col(idx_col).isNull()).select(id_col).limit(5).collect()
    if missing:
        raise KeyError(f"{id_col} values missing from the id map, e.g. {[r[0] for r in missing]}")
    return joined
