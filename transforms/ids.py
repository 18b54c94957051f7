"""Stable dense integer ids for ALS: existing ids never change, new ids are appended after the largest one."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

INT32_MAX = 2**31 - 1


class IdSpaceExhausted(ValueError):
    """More distinct ids than a Java int can index (ALS needs int32 ids)."""


def new_id_rows(existing_map: DataFrame | None, ids: DataFrame, *, id_col: str, idx_col: str) -> DataFrame:
    """Rows (id, idx) for ids not yet in ``existing_map``, numbered from max(existing idx) + 1 in id order.

    Deterministic for the same inputs. Raises IdSpaceExhausted if the new indices would pass INT32_MAX.
    """
    distinct = ids.select(id_col).where(F.col(id_col).isNotNull()).distinct()
    if existing_map is None:
        start = 0
        fresh = distinct
    else:
        top = existing_map.agg(F.max(idx_col)).first()[0]
        start = 0 if top is None else int(top) + 1
        fresh = distinct.join(existing_map.select(id_col), on=id_col, how="left_anti")
    count = fresh.count()
    if count and start + count - 1 > INT32_MAX:
        raise IdSpaceExhausted(
            f"{idx_col}: {count} new ids after index {start - 1} would pass the int32 limit {INT32_MAX}"
        )
    if not count:
        return fresh.withColumn(idx_col, F.lit(None).cast("int")).limit(0)
    # zipWithIndex numbers a distributed sort (a window without partitions would funnel every id through one task)
    spark = ids.sparkSession
    numbered = fresh.orderBy(id_col).rdd.zipWithIndex().map(lambda pair: (pair[0][0], pair[1] + start))
    return spark.createDataFrame(numbered, f"{id_col} string, {idx_col} long").select(
        id_col, F.col(idx_col).cast("int").alias(idx_col))


def attach_idx(df: DataFrame, id_map: DataFrame, *, id_col: str, idx_col: str) -> DataFrame:
    """Add ``idx_col`` to ``df`` by joining the id map; raises if any id is missing from the map."""
    joined = df.join(id_map.select(id_col, idx_col), on=id_col, how="left")
    missing = joined.where(F.col(idx_col).isNull()).select(id_col).limit(5).collect()
    if missing:
        raise KeyError(f"{id_col} values missing from the id map, e.g. {[r[0] for r in missing]}")
    return joined
