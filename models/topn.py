"""Exact top-N per user with seen items excluded, scored in Spark around the kernel of models.select.

Not ``ALSModel.recommendForAllUsers``: it keeps a bounded priority queue per user in the JVM and cannot exclude
seen items, so one has to ask for N + max(seen) items and filter afterwards (apache/spark#17742). Here:

* Users stream through ``mapInArrow`` as flat Arrow buffers; their seen items come from one broadcast
  models.select.SeenIndex. When the user factors are a plain scan of local Parquet files, each task reads its
  share of their rows itself with pyarrow (models.parquet_direct.split_rows), which avoids a JVM decode and row
  conversion of the factors. A models.select.BlockScorer scores each batch (score descending, then item_idx).
* The driver collects the seen pairs in a thread beside the item factors, so the two set-up chains overlap.
* Item factors that fit ``item_budget_bytes`` are broadcast once; larger ones in chunks that fit, every user is
  scored against each chunk, and the partial lists are merged with a window ordered the same way.
"""
from __future__ import annotations

import functools
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyspark import inheritable_thread_target
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from lake import jvm
from models import parquet_direct, speed
from models.select import (MAX_BLOCK_USERS, BlockScorer, SeenIndex, factor_matrix, factors_from_arrow,
                           list_lengths_and_values)
from transforms import columns as C

log = logging.getLogger(__name__)

OUTPUT_SCHEMA = f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.SCORE} float, {C.RANK} int"
SEEN = "seen_item_idx"

DEFAULT_BLOCK_BYTES = 256 << 20  # bound on one block's score matrix (users x items x 4 bytes)
DEFAULT_ITEM_BUDGET_BYTES = 1 << 30  # item factors up to this size are broadcast whole, larger ones in chunks
DIRECT_COLLECT_MARGIN = 4  # item factors planned at most budget / 4 bytes are collected without counting them first
DEFAULT_SEEN_BROADCAST_PAIRS = 50_000_000  # seen pairs up to this many reach the scorers as one broadcast index
DIRECT_READ_BATCH_USERS = 10_000  # users per batch a task reads from the files (Spark's Arrow batch size)
OUTPUT_SLICE_USERS = 2048  # users per output batch: the scorer's temporaries stay a few MB, reused slice after slice


@dataclass(frozen=True)
class _Job:
    """What the driver set up: the items' rank and chunks, users per matrix product, the first item chunk's
    broadcast and the seen index's (None: the seen lists are joined to the users in Spark)."""

    rank: int
    chunks: int
    block_users: int
    first_items: object
    shared_seen: object


def recommend_top_n(user_factors: DataFrame, item_factors: DataFrame, seen: DataFrame, *, n: int,
                    block_bytes: int = DEFAULT_BLOCK_BYTES, item_budget_bytes: int = DEFAULT_ITEM_BUDGET_BYTES,
                    partitions: int | None = None, seen_broadcast_pairs: int = DEFAULT_SEEN_BROADCAST_PAIRS,
                    direct_read: bool | None = None) -> DataFrame:
    """(user_idx, item_idx, score, rank) for every user in ``user_factors``: n items each, seen ones excluded.

    ``user_factors`` (user_idx, features) and ``item_factors`` (item_idx, features) are ALS factor tables;
    ``seen`` holds (user_idx, item_idx) pairs to exclude. A user with fewer than n unseen items gets them all.
    ``block_bytes`` bounds one block's score matrix (users x items x 4 bytes). Item factors larger than
    ``item_budget_bytes`` are scored in chunks that fit it and the partial lists merged (same result); planned by
    Spark at most a quarter of it (lake.jvm.planned_size_bytes), they are collected without counting them first.
    ``partitions``: user partitions scored in parallel; by default the users keep their own partitioning when it
    has a partition per core, and are spread over 2 x the cores otherwise. Up to ``seen_broadcast_pairs`` seen
    pairs reach every scorer as one broadcast index (8 bytes a pair), so nothing is shuffled or joined; more, and
    the seen lists are grouped per user and joined to the users in Spark.
    ``direct_read``: the seen pairs, the item factors and the users are read from their Parquet files with pyarrow
    when they are plain scans of local files (models.parquet_direct); False reads them through Spark; None (the
    default) reads directly unless the reference path is asked for (models.speed).
    ValueError for n < 1, a non-positive byte bound or factor vectors of unequal lengths.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if block_bytes < 1 or item_budget_bytes < 1:
        raise ValueError(f"block_bytes and item_budget_bytes must be positive, got {block_bytes}, {item_budget_bytes}")
    direct_read = speed.tricks_enabled() if direct_read is None else direct_read
    job = _set_up(item_factors, seen, block_bytes, item_budget_bytes, seen_broadcast_pairs, direct_read)
    if job is None:
        return user_factors.sparkSession.createDataFrame([], OUTPUT_SCHEMA)
    users, user_source, user_reads = _scored_users(user_factors, seen, job.shared_seen, partitions, direct_read)
    parts = []
    for chunk in range(job.chunks):
        shared = _broadcast_items(item_factors, job.chunks, chunk, job.rank, direct_read) if chunk else job.first_items
        scorer = _partition_scorer(shared, n, job.rank, job.block_users, job.shared_seen, user_source, user_reads)
        parts.append(users.mapInArrow(scorer, OUTPUT_SCHEMA))
    return _merge_chunks(parts, n)


def _set_up(item_factors: DataFrame, seen: DataFrame, block_bytes: int, item_budget_bytes: int,
            seen_broadcast_pairs: int, direct_read: bool) -> _Job | None:
    """The broadcasts and the shape of recommend_top_n's job (its arguments of the same names); None without items.

    The seen pairs are collected in a driver thread beside the item factors: independent Spark jobs, whose driver
    parts (Arrow to numpy, grouping, pickling) overlap. Item factors planned well inside the budget are collected
    at once and their shape read from them; others (or no estimate) are counted first to plan the chunks."""
    spark = item_factors.sparkSession
    started = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recsys-seen-index")
    try:
        pending_seen = pool.submit(inheritable_thread_target(spark)(_broadcast_seen), seen, seen_broadcast_pairs,
                                   direct_read)
        estimate = jvm.planned_size_bytes(item_factors.select(C.ITEM_IDX, C.FEATURES))
        direct = None
        if estimate is not None and estimate * DIRECT_COLLECT_MARGIN <= item_budget_bytes:
            direct = collect_factors(item_factors, C.ITEM_IDX, direct_read=direct_read)
            items_count, rank = direct[1].shape
        else:
            items_count, rank = factor_shape(item_factors, C.ITEM_IDX)
        if items_count == 0:
            return None
        chunks = max(1, math.ceil(items_count * rank * 4 / item_budget_bytes))
        chunk_items = math.ceil(items_count / chunks)
        block_users = max(1, min(MAX_BLOCK_USERS, block_bytes // (4 * chunk_items)))
        if direct is not None and chunks == 1:  # the broadcast holds them: the driver keeps no copy
            first_items = spark.sparkContext.broadcast(direct)
        else:  # over the budget after all (the estimate was low): collected again chunk by chunk
            first_items = _broadcast_items(item_factors, chunks, 0, rank, direct_read)
        del direct
        items_s = time.perf_counter() - started
        shared_seen, seen_pairs = pending_seen.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # after an error: the seen job's result is not needed
    log.info("scoring set up in %.1f s: %d item factors of rank %d in %.1f s, seen items %s", time.perf_counter()
             - started, items_count, rank, items_s, "joined per user in Spark" if shared_seen is None else
             f"collected beside them ({seen_pairs:,} pairs)")
    return _Job(rank, chunks, block_users, first_items, shared_seen)


def _scored_users(user_factors: DataFrame, seen: DataFrame, shared_seen, partitions: int | None, direct_read: bool):
    """(what mapInArrow runs over, the users' ParquetSource or None, the row-group slices each task reads or None).

    With a broadcast seen index: task numbers when the tasks read the users from their files, else the users
    (repartitioned when asked or when they have fewer partitions than cores). Without: the users joined to their
    seen lists (column SEEN), both partitioned by user_idx."""
    spark = user_factors.sparkSession
    cores = spark.sparkContext.defaultParallelism
    users = user_factors.select(C.USER_IDX, C.FEATURES)
    if shared_seen is None:
        partitions = partitions or 2 * cores
        seen_lists = (seen.select(C.USER_IDX, C.ITEM_IDX).repartition(partitions, C.USER_IDX)
                      .groupBy(C.USER_IDX).agg(F.collect_list(C.ITEM_IDX).alias(SEEN)))
        joined = users.repartition(partitions, C.USER_IDX).join(seen_lists.hint("shuffle_hash"), on=C.USER_IDX,
                                                                 how="left")
        return joined, None, None
    user_source = parquet_direct.parquet_source(users) if direct_read else None
    user_reads = parquet_direct.split_rows(user_source, partitions or 2 * cores) if user_source is not None else None
    if user_reads is not None:  # each task reads its share of the files' rows itself: no JVM work per user
        users = spark.range(0, len(user_reads), 1, max(1, len(user_reads)))  # row t: read user_reads[t]
    elif partitions is not None or users.rdd.getNumPartitions() < cores:
        users = users.repartition(partitions or 2 * cores)
    return users, user_source, user_reads


def _merge_chunks(parts: list[DataFrame], n: int) -> DataFrame:
    """The n best of each user over the partial top-N lists of every item chunk, ordered as the kernel orders."""
    if len(parts) == 1:
        return parts[0]
    partial = functools.reduce(DataFrame.unionAll, parts)
    order = Window.partitionBy(C.USER_IDX).orderBy(F.col(C.SCORE).desc(), F.col(C.ITEM_IDX).asc())
    return (partial.withColumn(C.RANK, F.row_number().over(order)).where(F.col(C.RANK) <= n)
            .select(C.USER_IDX, C.ITEM_IDX, C.SCORE, F.col(C.RANK).cast("int").alias(C.RANK)))


def _broadcast_seen(seen: DataFrame, max_pairs: int, direct_read: bool):
    """(broadcast SeenIndex, its pairs) of the seen pairs, or (None, None) when collect_seen_index declines them."""
    index = collect_seen_index(seen, max_pairs=max_pairs, direct_read=direct_read)
    if index is None:
        return None, None
    return seen.sparkSession.sparkContext.broadcast(index), len(index.items)


def _broadcast_items(item_factors: DataFrame, chunks: int, chunk: int, rank: int, direct_read: bool):
    """Collect one chunk of the item factors (item_idx mod chunks == chunk; all of them when chunks is 1) and
    broadcast it as (item_idx ascending, vectors)."""
    chunk_factors = item_factors if chunks == 1 else item_factors.where(F.pmod(C.ITEM_IDX, F.lit(chunks)) == chunk)
    item_idx, item_vecs = collect_factors(chunk_factors, C.ITEM_IDX, rank, direct_read=direct_read)
    # the broadcast holds them (pickled to disk): the driver keeps no copy once this returns
    return item_factors.sparkSession.sparkContext.broadcast((item_idx, item_vecs))


def _partition_scorer(shared, n: int, rank: int, block_users: int, shared_seen,
                      user_source: parquet_direct.ParquetSource | None = None, user_reads=None):
    """The mapInArrow function: score each Arrow batch of (user_idx, features[, SEEN list]) against the broadcast
    items ``shared``; the seen items come from the list column, or from the broadcast SeenIndex ``shared_seen``.
    With ``user_reads``, its input is task numbers instead, and task t reads the users of ``user_reads[t]``
    (row-group slices of ``user_source``'s files). Output: OUTPUT_SCHEMA batches of OUTPUT_SLICE_USERS users, so
    that one slice's temporaries are small blocks the worker's allocator hands out again for the next."""

    def score_partition(batches):
        item_idx, item_vecs = shared.value
        seen_index = shared_seen.value if shared_seen is not None else None
        scorer = BlockScorer(item_idx, item_vecs, n=n, max_block_users=block_users)
        if user_reads is not None:
            batches = _read_users(batches, user_source, user_reads)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            user_idx = batch.column(C.USER_IDX).to_numpy(zero_copy_only=False).astype(np.int32)
            user_vecs = factor_matrix(batch.column(C.FEATURES), rank)
            if seen_index is None:
                seen_lengths, seen_items = list_lengths_and_values(batch.column(SEEN))
                seen_ends = np.cumsum(seen_lengths)
            for start in range(0, len(user_idx), OUTPUT_SLICE_USERS):
                stop = min(start + OUTPUT_SLICE_USERS, len(user_idx))
                if seen_index is not None:
                    lengths, items = seen_index.lookup(user_idx[start:stop])
                else:
                    lengths = seen_lengths[start:stop]
                    items = seen_items[seen_ends[start] - lengths[0]:seen_ends[stop - 1]]
                yield scorer.score_batch(user_idx[start:stop], user_vecs[start:stop], lengths, items)

    return score_partition


def _read_users(tasks, source: parquet_direct.ParquetSource, reads):
    """Arrow batches of (user_idx, features) for the task numbers in the batches ``tasks``: read from the files."""
    for task_batch in tasks:
        for task in task_batch.column(0).to_pylist():
            try:
                yield from parquet_direct.read_slices(source, reads[task], DIRECT_READ_BATCH_USERS)
            except OSError as error:
                raise RuntimeError(f"the scorer could not read the user factors from their Parquet files ({error}); "
                                   "score on the reference path (jobs.score --reference-path) to read them "
                                   "through Spark") from error


def collect_seen_index(seen: DataFrame, *, max_pairs: int, direct_read: bool = True) -> SeenIndex | None:
    """The seen (user_idx, item_idx) pairs as a SeenIndex, or None when there are more than ``max_pairs`` of them
    or a user_idx is negative. With ``direct_read`` and a plain scan of local Parquet files (models.parquet_direct),
    they are counted from the files' footers and read by pyarrow; otherwise Spark counts and collects them."""
    pairs = seen.select(C.USER_IDX, C.ITEM_IDX)
    if max_pairs < 1:
        return None
    source = parquet_direct.parquet_source(pairs) if direct_read else None
    count = None
    if source is not None:
        try:
            count = source.num_rows()
        except (OSError, pa.ArrowException) as error:
            log.warning("cannot count the seen pairs from their Parquet footers (%s); counting them in Spark", error)
            source = None
    if (pairs.count() if count is None else count) > max_pairs:
        return None
    return SeenIndex.from_arrow(parquet_direct.to_arrow(pairs, direct=source is not None, source=source))


def factor_shape(factors: DataFrame, id_col: str) -> tuple[int, int]:
    """(rows, rank) of a factor table; raises ValueError if its vectors differ in length."""
    row = factors.agg(F.count(F.lit(1)).alias("rows"), F.min(F.size(C.FEATURES)).alias("lo"),
                      F.max(F.size(C.FEATURES)).alias("hi")).first()
    if row["rows"] and row["lo"] != row["hi"]:
        raise ValueError(f"{id_col} factor vectors differ in length ({row['lo']}..{row['hi']})")
    return int(row["rows"]), int(row["hi"] or 0)


def collect_factors(factors: DataFrame, id_col: str, rank: int | None = None, *,
                    direct_read: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(ids ascending as int32, vectors as a float32 matrix) of a factor table (``id_col``, features), through Arrow:
    models.select.factors_from_arrow, whose ValueErrors it raises. ``direct_read``: read them with pyarrow when they
    are a plain scan of local Parquet files (models.parquet_direct)."""
    table = parquet_direct.to_arrow(factors.select(id_col, C.FEATURES), direct=direct_read)
    return factors_from_arrow(table, id_col, rank)
