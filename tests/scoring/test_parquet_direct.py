"""models.parquet_direct: the driver reads a DataFrame from its Parquet files only when that gives Spark's rows, and
the scorer's inputs read that way give the same index, factors and top-N as through Spark."""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from models import parquet_direct, topn
from transforms import columns as C


def rows(table: pa.Table) -> list[tuple]:
    return sorted(zip(*[table.column(i).to_pylist() for i in range(table.num_columns)]))


def assert_same_as_spark(df) -> parquet_direct.ParquetSource:
    source = parquet_direct.parquet_source(df)
    assert source is not None, df._jdf.queryExecution().executedPlan().toString()
    direct = source.read()
    through_spark = df.toArrow()
    assert direct.schema.equals(through_spark.schema), (direct.schema, through_spark.schema)
    assert rows(direct) == rows(through_spark)
    assert source.num_rows() == through_spark.num_rows
    return source


@pytest.fixture(scope="module")
def pairs(spark):
    return spark.range(300).select((F.col("id") % 17).cast("int").alias(C.USER_IDX),
                                   (F.col("id") * 7 % 101).cast("int").alias(C.ITEM_IDX),
                                   (F.col("id") % 3).cast("int").alias("part"),
                                   (F.col("id") / 10).alias("weight"),
                                   (F.col("id") % 5 / 2).cast("decimal(4,1)").alias("price"))


@pytest.fixture(scope="module")
def parquet_path(pairs, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("direct") / "pairs with space")
    pairs.repartition(3).write.parquet(path)
    return path


def test_a_parquet_scan_reads_the_same_rows_as_spark(spark, parquet_path):
    source = assert_same_as_spark(spark.read.parquet(parquet_path).select(C.USER_IDX, C.ITEM_IDX))
    assert len(source.paths) == 3 and all(" " in p for p in source.paths)  # URIs decoded to local paths
    assert source.columns == ((C.USER_IDX, C.USER_IDX), (C.ITEM_IDX, C.ITEM_IDX))


def test_renamed_and_reordered_columns_map_to_their_file_columns(spark, parquet_path):
    df = (spark.read.parquet(parquet_path).withColumnRenamed(C.ITEM_IDX, "item")
          .select(F.col("item").alias("a"), F.col(C.USER_IDX).alias(C.ITEM_IDX), F.col("item").alias("b")))
    source = assert_same_as_spark(df)
    assert source.columns == (("a", C.ITEM_IDX), (C.ITEM_IDX, C.USER_IDX), ("b", C.ITEM_IDX))


def test_delta_tables_at_a_version_and_partitioned_ones_are_read_directly(spark, pairs, tmp_path):
    plain = str(tmp_path / "plain")
    pairs.write.format("delta").save(plain)
    pairs.where("weight > 5").write.format("delta").mode("overwrite").save(plain)
    at_zero = spark.read.format("delta").option("versionAsOf", 0).load(plain).select(C.USER_IDX, C.ITEM_IDX)
    assert assert_same_as_spark(at_zero).num_rows() == 300
    latest = spark.read.format("delta").load(plain).select(C.USER_IDX, C.ITEM_IDX)
    assert assert_same_as_spark(latest).num_rows() == pairs.where("weight > 5").count()
    parted = str(tmp_path / "parted")
    pairs.write.format("delta").partitionBy("part").save(parted)
    assert_same_as_spark(spark.read.format("delta").load(parted).select(C.USER_IDX, C.ITEM_IDX, "weight"))


def test_plans_that_are_not_the_files_rows_are_refused(spark, pairs, parquet_path, tmp_path):
    scan = spark.read.parquet(parquet_path)
    refused = {
        "filter": scan.where("weight > 1").select(C.USER_IDX),
        "filter kept out of the scan": scan.where(F.rand(1) < 0.5).select(C.USER_IDX),
        "computed column": scan.select((F.col(C.USER_IDX) + 1).alias(C.USER_IDX)),
        "cast": scan.select(F.col(C.USER_IDX).cast("long")),
        "distinct": scan.select(C.USER_IDX).distinct(),
        "limit": scan.limit(5),
        "python rows": spark.createDataFrame([(1, 2)], f"{C.USER_IDX} int, {C.ITEM_IDX} int"),
        "union": scan.select(C.USER_IDX).union(scan.select(C.ITEM_IDX)),
        "metadata column": scan.select(C.USER_IDX, "_metadata.file_path"),
        "decimal column": scan.select(C.USER_IDX, "price"),
    }
    parted = str(tmp_path / "parted")
    pairs.write.partitionBy("part").parquet(parted)
    refused["partition column"] = spark.read.parquet(parted).select(C.USER_IDX, "part")
    refused["pruned partitions"] = spark.read.parquet(parted).where("part = 1").select(C.USER_IDX)
    deleted = str(tmp_path / "deletion_vectors")
    pairs.write.format("delta").option("delta.enableDeletionVectors", "true").save(deleted)
    spark.sql(f"DELETE FROM delta.`{deleted}` WHERE {C.ITEM_IDX} < 50")
    refused["deletion vectors"] = spark.read.format("delta").load(deleted).select(C.USER_IDX, C.ITEM_IDX)
    mapped = str(tmp_path / "column_mapping")
    (pairs.write.format("delta").option("delta.columnMapping.mode", "name")
     .option("delta.minReaderVersion", "2").option("delta.minWriterVersion", "5").save(mapped))
    refused["column mapping"] = spark.read.format("delta").load(mapped).select(C.USER_IDX, C.ITEM_IDX)
    accepted = [name for name, df in refused.items() if parquet_direct.parquet_source(df) is not None]
    assert accepted == []
    with_field_ids = spark.read.schema(T.StructType([
        T.StructField(C.USER_IDX, T.IntegerType(), metadata={parquet_direct.FIELD_ID_KEY: 1})])).parquet(parquet_path)
    assert parquet_direct.parquet_source(with_field_ids) is None  # Spark may match this column by id, not name
    # to_arrow still gives Spark's rows for them: the rows a DELETE removed stay removed
    table = parquet_direct.to_arrow(refused["deletion vectors"])
    assert table.num_rows == pairs.where(f"{C.ITEM_IDX} >= 50").count()
    assert min(table.column(C.ITEM_IDX).to_pylist()) >= 50
    # a cached DataFrame is read from Spark's cache (every later query of these files too, until unpersisted)
    cached = spark.read.parquet(parted).select(C.USER_IDX).cache()
    try:
        assert parquet_direct.parquet_source(cached) is None
        assert parquet_direct.parquet_source(spark.read.parquet(parted).select(C.USER_IDX)) is None
    finally:
        cached.unpersist()
    assert parquet_direct.parquet_source(spark.read.parquet(parted).select(C.USER_IDX)) is not None


def test_a_failed_direct_read_falls_back_to_spark(spark, parquet_path, tmp_path, caplog):
    df = spark.read.parquet(parquet_path).select(C.USER_IDX, C.ITEM_IDX)
    gone = parquet_direct.ParquetSource(paths=(str(tmp_path / "missing.parquet"),),
                                        columns=((C.USER_IDX, C.USER_IDX), (C.ITEM_IDX, C.ITEM_IDX)),
                                        schema=df.toArrow().schema)
    with caplog.at_level(logging.WARNING, logger="models.parquet_direct"):
        table = parquet_direct.to_arrow(df, source=gone)
    assert rows(table) == rows(df.toArrow())
    assert "collecting through Spark instead" in caplog.text


def test_values_out_of_the_schemas_range_fail_the_direct_read(spark, tmp_path):
    """A file whose values do not fit the DataFrame's type is not read silently wrapped: the cast raises."""
    import pyarrow.parquet as pq

    path = tmp_path / "wide.parquet"
    pq.write_table(pa.table({"v": pa.array([1, 2**40], pa.int64())}), path)
    source = parquet_direct.ParquetSource(paths=(str(path),), columns=(("v", "v"),),
                                          schema=pa.schema([("v", pa.int32())]))
    with pytest.raises(pa.ArrowInvalid):
        source.read()


def test_seen_index_and_item_factors_read_directly_equal_spark_collection(spark, tmp_path):
    rng = np.random.default_rng(3)
    seen_pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, 50, 400), rng.integers(0, 80, 400))}
    spark.createDataFrame(sorted(seen_pairs), f"{C.USER_IDX} int, {C.ITEM_IDX} int").repartition(2) \
        .write.parquet(str(tmp_path / "seen"))
    seen = spark.read.parquet(str(tmp_path / "seen"))
    assert parquet_direct.parquet_source(seen.select(C.USER_IDX, C.ITEM_IDX)) is not None
    direct = topn.collect_seen_index(seen, max_pairs=len(seen_pairs), direct_read=True)
    through_spark = topn.collect_seen_index(seen, max_pairs=len(seen_pairs), direct_read=False)
    assert np.array_equal(direct.offsets, through_spark.offsets)
    for u in range(len(direct.offsets) - 1):
        a, b = direct.offsets[u], direct.offsets[u + 1]
        assert sorted(direct.items[a:b]) == sorted(through_spark.items[a:b])
    assert topn.collect_seen_index(seen, max_pairs=len(seen_pairs) - 1, direct_read=True) is None

    vecs = rng.standard_normal((30, 4)).astype(np.float32)
    ids = rng.permutation(100)[:30]
    spark.createDataFrame([(int(i), [float(x) for x in v]) for i, v in zip(ids, vecs)],
                          f"id int, {C.FEATURES} array<float>").write.parquet(str(tmp_path / "items"))
    items = spark.read.parquet(str(tmp_path / "items")).withColumnRenamed("id", C.ITEM_IDX)  # as ALSModel's
    got_ids, got_vecs = topn.collect_factors(items, C.ITEM_IDX, direct_read=True)
    want_ids, want_vecs = topn.collect_factors(items, C.ITEM_IDX, direct_read=False)
    assert np.array_equal(got_ids, want_ids) and np.array_equal(got_vecs, want_vecs)
    assert np.array_equal(got_ids, np.sort(ids))


@pytest.mark.parametrize("direct_read", [True, False])
def test_seen_pairs_with_a_null_id_exclude_nothing(spark, tmp_path, direct_read):
    pairs = [(1, 5), (None, 6), (2, None), (2, 7), (1, 8)]
    spark.createDataFrame(pairs, f"{C.USER_IDX} int, {C.ITEM_IDX} int").write.parquet(str(tmp_path / "seen"))
    index = topn.collect_seen_index(spark.read.parquet(str(tmp_path / "seen")), max_pairs=10, direct_read=direct_read)
    lengths, items = index.lookup(np.array([1, 2, 0]))
    assert lengths.tolist() == [2, 1, 0] and sorted(items[:2].tolist()) == [5, 8] and items[2] == 7


def test_recommendations_from_files_are_the_same_read_either_way(spark, tmp_path):
    rng = np.random.default_rng(11)
    for name, count in (("users", 60), ("items", 45)):
        vecs = rng.integers(-3, 4, size=(count, 5)).astype(float)
        spark.createDataFrame([(i, [float(x) for x in v]) for i, v in enumerate(vecs)],
                              f"{name[:-1]}_idx int, {C.FEATURES} array<float>").write.parquet(str(tmp_path / name))
    pairs = sorted({(int(u), int(i)) for u, i in zip(rng.integers(0, 60, 500), rng.integers(0, 45, 500))})
    spark.createDataFrame(pairs, f"{C.USER_IDX} int, {C.ITEM_IDX} int").write.parquet(str(tmp_path / "seen"))
    users, items, seen = (spark.read.parquet(str(tmp_path / name)) for name in ("users", "items", "seen"))
    results = []
    for direct_read in (True, False):
        top = topn.recommend_top_n(users, items, seen, n=10, direct_read=direct_read)
        results.append(sorted(tuple(r) for r in top.collect()))
    assert results[0] == results[1]
    assert len(results[0]) == sum(min(10, 45 - sum(1 for p in pairs if p[0] == u)) for u in range(60))
    assert not {(r[0], r[1]) for r in results[0]} & set(pairs)
