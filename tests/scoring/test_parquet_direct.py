"""models.parquet_direct: the driver reads a DataFrame from its Parquet files only when that gives Spark's rows, and
the scorer's inputs read that way give the same index, factors and top-N as through Spark."""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lake import jvm
from models import parquet_direct, topn
from transforms import columns as C


def rows(table: pa.Table) -> list[tuple]:
    return sorted(zip(*[table.column(i).to_pylist() for i in range(table.num_columns)]))


def assert_same_as_spark(df) -> parquet_direct.ParquetSource:
    source = parquet_direct.parquet_source(df)
    assert source is not None, jvm.executed_plan(df).toString()
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


def test_split_rows_cuts_the_files_into_even_runs_that_read_back_every_row_once(tmp_path):
    import pyarrow.parquet as pq

    values = np.arange(32, dtype=np.int64)
    sizes = {"a.parquet": (0, 23, 10), "b.parquet": (23, 23, 5), "c.parquet": (23, 32, 4)}  # rows, row-group size
    for name, (start, stop, group_rows) in sizes.items():
        pq.write_table(pa.table({"u": values[start:stop], "f": pa.array([[float(v)] * 2 for v in values[start:stop]],
                                                                         pa.list_(pa.float64()))}),
                       tmp_path / name, row_group_size=group_rows)
    assert [pq.read_metadata(tmp_path / n).num_row_groups for n in sizes] == [3, 1, 3]  # 10+10+3, one empty, 4+4+1
    schema = pa.schema([(C.USER_IDX, pa.int32()), (C.FEATURES, pa.list_(pa.float32()))])
    source = parquet_direct.ParquetSource(paths=tuple(str(tmp_path / n) for n in sizes),
                                          columns=((C.USER_IDX, "u"), (C.FEATURES, "f")), schema=schema)
    for parts in (1, 3, 5, 32, 50):
        runs = parquet_direct.split_rows(source, parts)
        assert len(runs) == min(parts, 32)
        lengths = [sum(s.stop - s.start for s in run) for run in runs]
        assert max(lengths) - min(lengths) <= 1, (parts, lengths)
        batches = [b for run in runs for b in parquet_direct.read_slices(source, run, batch_rows=3)]
        assert all(b.schema.equals(schema) and b.num_rows <= 3 for b in batches)
        got = pa.Table.from_batches(batches, schema)
        assert got.column(C.USER_IDX).to_pylist() == list(range(32)), parts  # every row once, in file order
        assert got.column(C.FEATURES).to_pylist() == [[float(v)] * 2 for v in range(32)]
    assert parquet_direct.split_rows(parquet_direct.ParquetSource((str(tmp_path / "b.parquet"),), source.columns,
                                                                  schema), 4) == []
    pq.write_table(pa.table({"u": values[:3]}), tmp_path / "older.parquet")  # written before "f" was added
    grown = parquet_direct.ParquetSource(source.paths + (str(tmp_path / "older.parquet"),), source.columns, schema)
    assert parquet_direct.split_rows(grown, 4) is None


def test_a_value_out_of_range_or_a_missing_file_fails_the_slice_read_naming_the_file(tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"u": pa.array([1, 2**40], pa.int64())}), tmp_path / "wide.parquet")
    source = parquet_direct.ParquetSource(paths=(str(tmp_path / "wide.parquet"),), columns=((C.USER_IDX, "u"),),
                                          schema=pa.schema([(C.USER_IDX, pa.int32())]))
    runs = parquet_direct.split_rows(source, 1)
    with pytest.raises(OSError, match="wide.parquet"):
        list(parquet_direct.read_slices(source, runs[0], batch_rows=10))
    gone = [parquet_direct.RowGroupSlice(str(tmp_path / "gone.parquet"), 0, 0, 5)]
    with pytest.raises(OSError, match="gone.parquet"):
        list(parquet_direct.read_slices(source, gone, batch_rows=10))


def test_the_scorer_reads_users_from_their_files_in_its_tasks_with_the_same_result(spark, tmp_path):
    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    users = rng.permutation(200)[:90].astype(np.int32)  # ids in no order, over several files and row groups
    user_vecs = rng.standard_normal((90, 6)).astype(np.float32)
    (tmp_path / "users").mkdir()
    for k, (start, stop) in enumerate(((0, 40), (40, 90))):
        pq.write_table(pa.table({"id": users[start:stop], C.FEATURES: pa.array(list(user_vecs[start:stop]),
                                                                             pa.list_(pa.float32()))}),
                       tmp_path / "users" / f"part-{k}.parquet", row_group_size=15)
    item_vecs = rng.standard_normal((70, 6)).astype(np.float32)
    spark.createDataFrame([(i, [float(x) for x in v]) for i, v in enumerate(item_vecs)],
                          f"{C.ITEM_IDX} int, {C.FEATURES} array<float>").write.parquet(str(tmp_path / "items"))
    pairs = sorted({(int(u), int(i)) for u, i in zip(rng.choice(users, 400), rng.integers(0, 70, 400))})
    spark.createDataFrame(pairs, f"{C.USER_IDX} int, {C.ITEM_IDX} int").write.parquet(str(tmp_path / "seen"))
    user_factors = spark.read.parquet(str(tmp_path / "users")).withColumnRenamed("id", C.USER_IDX)  # as ALSModel's
    items, seen = (spark.read.parquet(str(tmp_path / name)) for name in ("items", "seen"))

    direct = topn.recommend_top_n(user_factors, items, seen, n=8, partitions=4, direct_read=True)
    plan = jvm.executed_plan(direct).toString()
    assert "Range (0, 4" in plan and "FileScan" not in plan, plan  # four tasks, each reads its users itself
    assert direct.rdd.getNumPartitions() == 4
    through_spark = topn.recommend_top_n(user_factors, items, seen, n=8, direct_read=False)
    assert "FileScan" in jvm.executed_plan(through_spark).toString()
    got = sorted(tuple(r) for r in direct.collect())
    assert got == sorted(tuple(r) for r in through_spark.collect())
    assert sorted({r[0] for r in got}) == sorted(users.tolist())
    scores = user_vecs.astype(np.float64) @ item_vecs.astype(np.float64).T
    seen_set = set(pairs)
    for row, u in enumerate(users.tolist()):
        order = [i for i in np.lexsort((np.arange(70), -scores[row])) if (u, int(i)) not in seen_set][:8]
        assert [r[1] for r in sorted((r for r in got if r[0] == u), key=lambda r: r[3])] == [int(i) for i in order]
