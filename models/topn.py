"""Exact top-N per user with seen items excluded: a numpy selection kernel, and Spark batch scoring built on it.

Why not ``ALSModel.recommendForAllUsers``: it cross-joins blocks of factors, keeps a bounded priority queue per
user in the JVM (slow), and cannot exclude seen items, so one has to ask for N + max(seen) items and filter
afterwards (apache/spark#17742). Here:

* Users (with their seen items as one list each) stream through ``mapInArrow`` as flat Arrow buffers (no pandas
  object columns); each block of users is scored against the item factors with one float32 BLAS product
  (``user_vecs @ item_vecs.T``), seen items are set to -inf, and ``select_top_n`` picks the top N.
* ``select_top_n`` is exact and much cheaper than ``np.argpartition`` (which costs several times the product):
  a per-row threshold is read from a strided sample of the columns (the k-th largest sampled score, with k chosen
  so that about ``OVERSAMPLE * n`` scores of the row pass it), the entries at or above it are found with one
  vectorised compare, and only those candidates are sorted. A row where fewer than n scores pass gets its exact
  n-th largest score as threshold instead, so no row can miss an item: the top N always lie above the threshold.
* Order: score descending, ties broken by item_idx ascending, so the output equals a brute-force full sort.
* Item factors that fit ``item_budget_bytes`` are broadcast once. Larger ones are split into chunks that do fit:
  every user is scored against each chunk (partial top N per chunk, one broadcast at a time), and the partial
  lists are merged with a window ordered the same way. The result is the same, the memory is bounded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from transforms import columns as C

OUTPUT_SCHEMA = f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.SCORE} float, {C.RANK} int"
SEEN = "seen_item_idx"
OUTPUT_ARROW_SCHEMA = pa.schema([(C.USER_IDX, pa.int32()), (C.ITEM_IDX, pa.int32()), (C.SCORE, pa.float32()),
                                 (C.RANK, pa.int32())])

DEFAULT_BLOCK_BYTES = 256 << 20  # bound on one block's score matrix (users x items x 4 bytes)
DEFAULT_ITEM_BUDGET_BYTES = 1 << 30  # item factors up to this size are broadcast whole, larger ones in chunks
DEFAULT_SEEN_BROADCAST_PAIRS = 50_000_000  # seen pairs up to this many reach the scorers as one broadcast index
MAX_BLOCK_USERS = 512  # larger blocks do not make the BLAS product faster, and smaller ones stay in cache
SAMPLE_COLUMNS = 1024  # columns sampled per row to estimate the candidate threshold
OVERSAMPLE = 2.5  # aim for about this many times n candidates per row


# --------------------------------------------------------------------------------------------------------------
# numpy kernel
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TopN:
    """The selected entries of a score block, flat, in (row, rank) order. ``ranks`` start at 1."""

    rows: np.ndarray  # int64
    cols: np.ndarray  # int64
    scores: np.ndarray  # float32
    ranks: np.ndarray  # int32

    @staticmethod
    def empty() -> "TopN":
        return TopN(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.int32))


def select_top_n(scores: np.ndarray, n: int, *, mask_out: np.ndarray | None = None) -> TopN:
    """The n best entries of every row of ``scores``: score descending, then column ascending. Exact.

    Entries equal to -inf are excluded (that is how seen items are removed), so a row with fewer than n finite
    scores returns only those. NaN scores never compare as candidates and are dropped too. ``mask_out`` is an
    optional reusable bool buffer of at least ``scores.shape``, to avoid allocating a fresh one per block.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    rows_count, cols_count = scores.shape
    if rows_count == 0 or cols_count == 0:
        return TopN.empty()

    thresholds = _estimated_thresholds(scores, n)
    flat = _flat_candidates(scores, thresholds, mask_out)
    flat = flat[scores.reshape(-1)[flat] > -np.inf]  # a -inf threshold lets excluded entries through
    counts = np.bincount(flat // cols_count, minlength=rows_count)
    # A row with fewer than n candidates but more finite scores than that had a threshold that was too high:
    # redo it with its exact n-th largest score, which lets at least n entries through.
    short = np.flatnonzero((counts < n) & (thresholds > -np.inf))
    if len(short):
        exact = _exact_thresholds(scores[short], n)
        flat = np.concatenate([flat[~np.isin(flat // cols_count, short)], _rows_candidates(scores, short, exact)])
        counts = np.bincount(flat // cols_count, minlength=rows_count)
    return _sorted_top(scores, flat, counts, n)


def _estimated_thresholds(scores: np.ndarray, n: int) -> np.ndarray:
    """Per row, a score that about OVERSAMPLE * n entries reach: the k-th largest of a strided column sample."""
    rows_count, cols_count = scores.shape
    if cols_count <= max(SAMPLE_COLUMNS, 4 * n):  # small rows: every entry is a candidate
        return np.full(rows_count, -np.inf, dtype=np.float32)
    stride = -(-cols_count // SAMPLE_COLUMNS)  # ceil: at most SAMPLE_COLUMNS sampled
    sample = scores[:, ::stride]
    width = sample.shape[1]
    k = min(width, max(1, math.ceil(OVERSAMPLE * n * width / cols_count)))
    return np.partition(sample, width - k, axis=1)[:, width - k]


def _exact_thresholds(scores: np.ndarray, n: int) -> np.ndarray:
    """The n-th largest score of each row (-inf when the row has fewer than n entries)."""
    cols_count = scores.shape[1]
    if n > cols_count:
        return np.full(len(scores), -np.inf, dtype=np.float32)
    return np.partition(scores, cols_count - n, axis=1)[:, cols_count - n]


def _flat_candidates(scores: np.ndarray, thresholds: np.ndarray, mask_out: np.ndarray | None) -> np.ndarray:
    """Flat (row-major) positions of the entries >= their row's threshold, ascending."""
    rows_count, cols_count = scores.shape
    out = None
    if mask_out is not None and mask_out.shape[0] >= rows_count and mask_out.shape[1] == cols_count:
        out = mask_out[:rows_count]
    mask = np.greater_equal(scores, thresholds[:, None], out=out).reshape(-1)
    if mask.size % 8:
        return np.flatnonzero(mask)
    # Scan 8 bools at a time as one uint64 word (most words are zero), then decode only the non-zero words.
    words = mask.view(np.uint64)
    hit = np.flatnonzero(words)
    word, byte = np.nonzero(words[hit].view(np.uint8).reshape(-1, 8))
    return hit[word] * 8 + byte


def _rows_candidates(scores: np.ndarray, rows: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Flat positions (in the whole block) of the finite entries >= threshold in the given rows."""
    cols_count = scores.shape[1]
    sub = scores[rows]
    r, c = np.nonzero((sub >= thresholds[:, None]) & (sub > -np.inf))
    return rows[r].astype(np.int64) * cols_count + c


def _sorted_top(scores: np.ndarray, flat: np.ndarray, counts: np.ndarray, n: int) -> TopN:
    """Sort the candidates by (row, score descending, column) and keep the first n of each row."""
    cols_count = scores.shape[1]
    rows = flat // cols_count
    cols = flat - rows * cols_count
    vals = scores.reshape(-1)[flat] + np.float32(0.0)  # -0.0 becomes 0.0: they compare equal, so must sort equal
    key = (rows.astype(np.uint64) << np.uint64(32)) | _descending_bits(vals).astype(np.uint64)
    order = np.argsort(key)  # fast but not stable: equal keys (same row, same score) are re-ordered below
    if len(order) > 1:
        ordered = key[order]
        tied = np.flatnonzero(ordered[1:] == ordered[:-1])
        if len(tied):
            # Within a row, flat position order is column order: sort each run of equal keys by it.
            at = np.union1d(tied, tied + 1)
            members = order[at]
            order[at] = members[np.lexsort((members, key[members]))]
    starts = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    position = np.arange(len(order), dtype=np.int64) - starts[rows[order]]
    keep = position < n
    chosen = order[keep]
    return TopN(rows[chosen], cols[chosen], vals[chosen], (position[keep] + 1).astype(np.int32))


def _descending_bits(vals: np.ndarray) -> np.ndarray:
    """uint32 keys whose ascending order is the float32 values' descending order (IEEE bit trick)."""
    bits = vals.view(np.uint32)
    ascending = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))
    return ~ascending


def top_n_indices(scores: np.ndarray, n: int) -> np.ndarray:
    """Column indices of the n largest scores per row, by score descending then column ascending.

    ``scores`` rows may contain -inf for excluded columns; those come last (column ascending) and must be
    dropped by the caller. Returns a (rows, min(n, cols)) array.
    """
    rows_count, cols_count = scores.shape
    width = min(n, cols_count)
    result = np.empty((rows_count, width), dtype=np.int64)
    if width == 0:
        return result
    top = select_top_n(scores, width)
    counts = np.bincount(top.rows, minlength=rows_count)
    for r in range(rows_count):
        chosen = top.cols[top.rows == r] if counts[r] else np.empty(0, np.int64)
        if counts[r] < width:  # pad with the excluded columns, ascending
            rest = np.flatnonzero(~(scores[r] > -np.inf))
            chosen = np.concatenate([chosen, rest[: width - counts[r]]])
        result[r] = chosen
    return result


def score_block(user_vecs: np.ndarray, item_vecs: np.ndarray, seen_rows: np.ndarray, seen_cols: np.ndarray,
                n: int) -> tuple[np.ndarray, np.ndarray]:
    """(top column indices, their scores) for a block of users, padded like ``top_n_indices``; seen pairs excluded."""
    scores = np.asarray(user_vecs, np.float32) @ np.asarray(item_vecs, np.float32).T
    scores[seen_rows, seen_cols] = -np.inf
    top = top_n_indices(scores, n)
    return top, np.take_along_axis(scores, top, axis=1)


class BlockScorer:
    """Scores blocks of users against one fixed set of items; holds the items and reusable buffers.

    ``item_idx`` must be sorted ascending (ties in score are then broken by item_idx through the column order).
    """

    def __init__(self, item_idx: np.ndarray, item_vecs: np.ndarray, *, n: int, max_block_users: int):
        if len(item_idx) and np.any(np.diff(item_idx) <= 0):
            raise ValueError("item_idx must be strictly ascending")
        self.item_idx = np.asarray(item_idx, dtype=np.int32)
        self.item_vecs = np.ascontiguousarray(item_vecs, dtype=np.float32)
        self.n = n
        self.max_block_users = max(1, max_block_users)
        size = int(self.item_idx.max()) + 1 if len(self.item_idx) else 0
        self.column_of = np.full(size, -1, dtype=np.int64)  # item_idx -> column, -1 when the item has no factors
        self.column_of[self.item_idx] = np.arange(len(self.item_idx))
        self._scores = None
        self._mask = None

    def _buffers(self, rows: int):
        if self._scores is None or self._scores.shape[0] < rows:
            self._scores = np.empty((rows, len(self.item_idx)), dtype=np.float32)
            self._mask = np.empty((rows, len(self.item_idx)), dtype=bool)
        return self._scores[:rows], self._mask

    def seen_columns(self, seen_lengths: np.ndarray, seen_items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of every seen item that has factors; unknown item ids are ignored."""
        rows = np.repeat(np.arange(len(seen_lengths), dtype=np.int64), seen_lengths)
        items = np.asarray(seen_items, dtype=np.int64)
        known = (items >= 0) & (items < len(self.column_of))
        cols = np.full(len(items), -1, dtype=np.int64)
        cols[known] = self.column_of[items[known]]
        keep = cols >= 0
        return rows[keep], cols[keep]

    def score(self, user_vecs: np.ndarray, seen_lengths: np.ndarray, seen_items: np.ndarray) -> TopN:
        """Top n unseen items of each user in the block (user_vecs: users x rank)."""
        if len(self.item_idx) == 0 or len(user_vecs) == 0:
            return TopN.empty()
        scores, mask = self._buffers(len(user_vecs))
        np.matmul(user_vecs, self.item_vecs.T, out=scores)
        rows, cols = self.seen_columns(seen_lengths, seen_items)
        scores[rows, cols] = -np.inf
        return select_top_n(scores, self.n, mask_out=mask)

    def score_batch(self, user_idx: np.ndarray, user_vecs: np.ndarray, seen_lengths: np.ndarray,
                    seen_items: np.ndarray):
        """Yield Arrow record batches (user_idx, item_idx, score, rank), one per block of users."""
        seen_starts = np.zeros(len(seen_lengths) + 1, dtype=np.int64)
        np.cumsum(seen_lengths, out=seen_starts[1:])
        for start in range(0, len(user_idx), self.max_block_users):
            stop = min(start + self.max_block_users, len(user_idx))
            top = self.score(user_vecs[start:stop], seen_lengths[start:stop],
                             seen_items[seen_starts[start]:seen_starts[stop]])
            yield pa.RecordBatch.from_arrays([
                pa.array(user_idx[start:stop][top.rows], pa.int32()),
                pa.array(self.item_idx[top.cols], pa.int32()),
                pa.array(top.scores, pa.float32()),
                pa.array(top.ranks, pa.int32()),
            ], schema=OUTPUT_ARROW_SCHEMA)


# --------------------------------------------------------------------------------------------------------------
# Arrow helpers (inside mapInArrow: no pandas object columns, lists are read as flat buffers)
# --------------------------------------------------------------------------------------------------------------

def factor_matrix(features: pa.Array, rank: int) -> np.ndarray:
    """A (rows, rank) float32 matrix from an Arrow list<float> column whose lists all have ``rank`` values."""
    lengths = pc.list_value_length(features).to_numpy(zero_copy_only=False)
    if len(lengths) and (features.null_count or lengths.min() != rank or lengths.max() != rank):
        raise ValueError(f"factor vectors must all have {rank} values; got lengths {lengths.min()}..{lengths.max()} "
                         f"and {features.null_count} nulls")
    values = pc.list_flatten(features).to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values, dtype=np.float32).reshape(len(features), rank)


def list_lengths_and_values(lists: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(length of each list, null = 0; all values concatenated) of an Arrow list<int> column."""
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(lists).to_numpy(zero_copy_only=False)
    return lengths, values


# --------------------------------------------------------------------------------------------------------------
# Spark
# --------------------------------------------------------------------------------------------------------------

def recommend_top_n(user_factors: DataFrame, item_factors: DataFrame, seen: DataFrame, *, n: int,
                    block_bytes: int = DEFAULT_BLOCK_BYTES, item_budget_bytes: int = DEFAULT_ITEM_BUDGET_BYTES,
                    partitions: int | None = None,
                    seen_broadcast_pairs: int = DEFAULT_SEEN_BROADCAST_PAIRS) -> DataFrame:
    """(user_idx, item_idx, score, rank) for every user in ``user_factors``: n items each, seen ones excluded.

    ``user_factors`` (user_idx, features) and ``item_factors`` (item_idx, features) are ALS factor tables;
    ``seen`` holds (user_idx, item_idx) pairs to exclude. A user with fewer than n unseen items gets them all.
    ``block_bytes`` bounds one block's score matrix (users x items x 4 bytes). Item factors larger than
    ``item_budget_bytes`` are scored in chunks that fit it, and the partial lists merged (same result).
    ``partitions`` is the number of user partitions scored in parallel (default: 2 x the default parallelism).
    Up to ``seen_broadcast_pairs`` seen pairs are collected once into a per-user index (8 bytes a pair) that every
    scorer receives as a broadcast, so neither the seen pairs nor the users are shuffled or joined; more than that
    and the seen lists are grouped per user and joined to the users in Spark.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if block_bytes < 1 or item_budget_bytes < 1:
        raise ValueError(f"block_bytes and item_budget_bytes must be positive, got {block_bytes}, {item_budget_bytes}")
    spark = user_factors.sparkSession
    items_count, rank = factor_shape(item_factors, C.ITEM_IDX)
    partitions = partitions or 2 * spark.sparkContext.defaultParallelism

    if items_count == 0:
        return spark.createDataFrame([], OUTPUT_SCHEMA)

    seen_index = collect_seen_index(seen, max_pairs=seen_broadcast_pairs)
    if seen_index is not None:
        shared_seen = spark.sparkContext.broadcast(seen_index)
        users = user_factors.select(C.USER_IDX, C.FEATURES).repartition(partitions)
    else:
        shared_seen = None
        seen_lists = (seen.select(C.USER_IDX, C.ITEM_IDX).repartition(partitions, C.USER_IDX)
                      .groupBy(C.USER_IDX).agg(F.collect_list(C.ITEM_IDX).alias(SEEN)))
        users = (user_factors.select(C.USER_IDX, C.FEATURES).repartition(partitions, C.USER_IDX)
                 .join(seen_lists.hint("shuffle_hash"), on=C.USER_IDX, how="left"))

    chunks = max(1, math.ceil(items_count * rank * 4 / item_budget_bytes))
    chunk_items = math.ceil(items_count / chunks)
    block_users = max(1, min(MAX_BLOCK_USERS, block_bytes // (4 * chunk_items)))
    parts = []
    for chunk in range(chunks):
        chunk_factors = item_factors if chunks == 1 else item_factors.where(F.pmod(C.ITEM_IDX, F.lit(chunks)) == chunk)
        item_idx, item_vecs = collect_factors(chunk_factors, C.ITEM_IDX, rank)
        shared = spark.sparkContext.broadcast((item_idx, item_vecs))
        del item_idx, item_vecs  # the broadcast holds them (pickled to disk), the driver need not
        parts.append(users.mapInArrow(_partition_scorer(shared, n, rank, block_users, shared_seen), OUTPUT_SCHEMA))
    if chunks == 1:
        return parts[0]
    partial = parts[0]
    for part in parts[1:]:
        partial = partial.unionAll(part)
    order = Window.partitionBy(C.USER_IDX).orderBy(F.col(C.SCORE).desc(), F.col(C.ITEM_IDX).asc())
    return (partial.withColumn(C.RANK, F.row_number().over(order)).where(F.col(C.RANK) <= n)
            .select(C.USER_IDX, C.ITEM_IDX, C.SCORE, F.col(C.RANK).cast("int").alias(C.RANK)))


def _partition_scorer(shared, n: int, rank: int, block_users: int, shared_seen=None):
    """The mapInArrow function: score each Arrow batch of (user_idx, features[, seen list]) in blocks; the seen
    items come from the batch's list column, or from the broadcast ``SeenIndex`` when one is given."""

    def score_partition(batches):
        item_idx, item_vecs = shared.value
        seen_index = shared_seen.value if shared_seen is not None else None
        scorer = BlockScorer(item_idx, item_vecs, n=n, max_block_users=block_users)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            user_idx = batch.column(C.USER_IDX).to_numpy(zero_copy_only=False).astype(np.int32)
            user_vecs = factor_matrix(batch.column(C.FEATURES), rank)
            if seen_index is not None:
                seen_lengths, seen_items = seen_index.lookup(user_idx)
            else:
                seen_lengths, seen_items = list_lengths_and_values(batch.column(SEEN))
            yield from scorer.score_batch(user_idx, user_vecs, seen_lengths, seen_items)

    return score_partition


@dataclass(frozen=True)
class SeenIndex:
    """Every user's seen items, grouped by user_idx (CSR): the items of user u are items[offsets[u]:offsets[u + 1]]."""

    offsets: np.ndarray  # int64, max user_idx + 2 entries
    items: np.ndarray  # int32

    @staticmethod
    def from_pairs(users: np.ndarray, items: np.ndarray) -> "SeenIndex":
        users = np.asarray(users, dtype=np.int64)
        if len(users) and users.min() < 0:
            raise ValueError("user_idx must be >= 0")
        order = np.argsort(users, kind="stable")
        size = int(users.max()) + 1 if len(users) else 0
        offsets = np.zeros(size + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=size), out=offsets[1:])
        return SeenIndex(offsets=offsets, items=np.asarray(items, dtype=np.int32)[order])

    def lookup(self, user_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(number of seen items of each user, their items concatenated in the users' order); unknown users: 0."""
        users = np.asarray(user_idx, dtype=np.int64)
        known = (users >= 0) & (users < len(self.offsets) - 1)
        # an unknown user reads offsets[0] twice: an empty slice (offsets always has that entry)
        starts = self.offsets[np.where(known, users, 0)]
        lengths = self.offsets[np.where(known, users + 1, 0)] - starts
        before = np.cumsum(lengths) - lengths  # where each user's items start in the output
        positions = np.repeat(starts - before, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
        return lengths, self.items[positions]


def collect_seen_index(seen: DataFrame, *, max_pairs: int) -> SeenIndex | None:
    """The seen pairs as a SeenIndex, or None when there are more than ``max_pairs`` of them (or a negative id)."""
    pairs = seen.select(C.USER_IDX, C.ITEM_IDX)
    if max_pairs < 1 or pairs.count() > max_pairs:
        return None
    table = pairs.toArrow()
    users = table.column(C.USER_IDX).to_numpy() if table.num_rows else np.empty(0, np.int64)
    items = table.column(C.ITEM_IDX).to_numpy() if table.num_rows else np.empty(0, np.int32)
    if len(users) and (users.min() < 0):
        return None
    return SeenIndex.from_pairs(users, items)


def factor_shape(factors: DataFrame, id_col: str) -> tuple[int, int]:
    """(rows, rank) of a factor table; raises ValueError if its vectors differ in length."""
    row = factors.agg(F.count(F.lit(1)).alias("rows"), F.min(F.size(C.FEATURES)).alias("lo"),
                      F.max(F.size(C.FEATURES)).alias("hi")).first()
    if row["rows"] and row["lo"] != row["hi"]:
        raise ValueError(f"{id_col} factor vectors differ in length ({row['lo']}..{row['hi']})")
    return int(row["rows"]), int(row["hi"] or 0)


def collect_factors(factors: DataFrame, id_col: str, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids ascending as int32, vectors as a float32 matrix) of a factor table, through Arrow."""
    table = factors.select(id_col, C.FEATURES).toArrow().combine_chunks()
    ids = table.column(id_col).to_numpy().astype(np.int32) if table.num_rows else np.empty(0, np.int32)
    vecs = factor_matrix(table.column(C.FEATURES).combine_chunks(), rank) if table.num_rows else np.zeros((0, rank), np.float32)
    order = np.argsort(ids, kind="stable")
    ids, vecs = ids[order], vecs[order]
    if len(ids) > 1 and np.any(ids[1:] == ids[:-1]):
        raise ValueError(f"{id_col} has duplicate factor rows")
    return ids, np.ascontiguousarray(vecs)

