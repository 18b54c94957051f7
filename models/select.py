"""Exact top-N per row of a score matrix, seen items excluded: the compiled selection kernel and what feeds it.

numpy and numba only (no Spark): models.topn runs this inside Spark's Python workers.

* ``select_top_n`` (``_select_rows``, compiled with numba) returns the n best entries of every row of a float32
  score matrix, ordered by score descending and then column ascending, so the output equals a brute-force full
  sort. Entries equal to -inf (seen items) and NaN are never selected, so a row with fewer than n finite scores
  returns only those. Per row: the seen columns are set to -inf; a threshold is read from a strided sample of
  the row (the k-th largest sampled score, k chosen so that about ``OVERSAMPLE * n`` scores pass it); one pass
  collects the scores at or above it (64 columns at a time: a vectorised compare builds a bit mask, and only its
  set bits are visited); the candidates are counted into equal score buckets, which finds the bucket of the n-th
  best and places those above it nearly in order, and an insertion sort of unique 64-bit keys (score bits,
  column) finishes the order (no comparison sort of random scores: its mispredicted branches cost more than the
  rest). A row where fewer than n pass gets every finite score as candidate instead, so no row can miss an item:
  the top N always lie above the threshold.
* ``BlockScorer`` holds one set of item factors and scores users against them ``max_block_users`` at a time: one
  float32 matrix product (``user_vecs @ item_vecs.T``, numpy's BLAS) into a reused buffer, then the selection.
* ``SeenIndex``: every user's seen items grouped by user (CSR), built by a compiled counting sort; ``lookup``
  gives the seen items of a batch of users in the form BlockScorer takes.
* numba caches the compiled kernels on disk (next to this file, or in $NUMBA_CACHE_DIR): a Python worker loads
  them from there; the first run on a machine compiles them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numba
from numba.core import cgutils, types
from numba.extending import intrinsic
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import columns as C

OUTPUT_ARROW_SCHEMA = pa.schema([(C.USER_IDX, pa.int32()), (C.ITEM_IDX, pa.int32()), (C.SCORE, pa.float32()),
                                 (C.RANK, pa.int32())])
MAX_BLOCK_USERS = 256  # users per matrix product: fewer, larger products amortise BLAS's packing of the items
SAMPLE_COLUMNS = 1024  # columns sampled per row to estimate the candidate threshold
OVERSAMPLE = 2.5  # aim for about this many times n candidates per row
ORDER_BUCKETS = 1024  # score buckets that put the candidates nearly in order before the final sort (_order_best)
SAMPLED_LEVELS = 24  # the threshold is about the 24th largest sampled score (fewer when SAMPLE_COLUMNS caps it)


# --------------------------------------------------------------------------------------------------------------
# selection kernel (numba)
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


def select_top_n(scores: np.ndarray, n: int, *, seen_starts: np.ndarray | None = None,
                 seen_cols: np.ndarray | None = None) -> TopN:
    """The n best entries of every row of ``scores``: score descending, then column ascending. Exact.

    Entries equal to -inf are excluded (that is how seen items are removed), and so are NaN scores, so a row with
    fewer than n such scores returns only those. ``seen_starts``/``seen_cols`` (CSR: the excluded columns of row r
    are ``seen_cols[seen_starts[r]:seen_starts[r + 1]]``) are set to -inf in ``scores`` first, in place.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    rows_count, cols_count = scores.shape
    if rows_count == 0 or cols_count == 0:
        return TopN.empty()
    if seen_starts is None:
        seen_starts, seen_cols = np.zeros(rows_count + 1, np.int64), np.empty(0, np.int64)
    out = _output_buffers(rows_count * min(n, cols_count))
    total = _select_rows(scores, n, np.asarray(seen_starts, np.int64), np.asarray(seen_cols, np.int64), 0, *out, 0)
    return TopN(*(a[:total] for a in out))


def _output_buffers(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (np.empty(size, np.int64), np.empty(size, np.int64), np.empty(size, np.float32), np.empty(size, np.int32))


@intrinsic
def _trailing_zeros(typingctx, bits):
    """Index of the lowest set bit of a nonzero uint64 (LLVM's cttz: one tzcnt instruction on x86-64)."""
    signature = types.uint64(types.uint64)

    def codegen(context, builder, sig, args):
        return builder.cttz(args[0], cgutils.true_bit)

    return signature, codegen


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _collect(row, threshold, cand_vals, cand_cols):
    """Copy the scores >= threshold (never -inf or NaN: threshold is finite) and their columns; return how many.

    The row is read 64 columns at a time: a branch-free loop sets one bit per column that reaches the threshold
    (the compiler turns it into a few vector compares), and only the set bits are visited: the cost is one mask
    per 64 columns plus one visit per candidate (about OVERSAMPLE * n of them when the threshold is sampled).
    """
    count = 0
    cols = row.shape[0]
    whole = cols - cols % 64
    one = np.uint64(1)
    for start in range(0, whole, 64):
        mask = np.uint64(0)
        for t in range(64):
            mask |= np.uint64(row[start + t] >= threshold) << np.uint64(t)
        while mask:
            j = start + np.int64(_trailing_zeros(mask))
            cand_vals[count] = row[j] + np.float32(0.0)  # -0.0 becomes 0.0: they compare equal, so must sort equal
            cand_cols[count] = j
            count += 1
            mask &= mask - one
    for j in range(whole, cols):
        v = row[j]
        if v >= threshold:
            cand_vals[count] = v + np.float32(0.0)
            cand_cols[count] = j
            count += 1
    return count


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _sort_key(score_bits, col):
    """One uint64 per candidate: the bits of its float32 score, flipped so that ascending keys mean descending
    scores, above the column. Keys are unique, so ascending keys give score descending, then column ascending."""
    bits = np.uint64(score_bits)
    if bits >> np.uint64(31):  # negative: ascending order of -x is descending order of its bits
        flipped = bits
    else:
        flipped = bits ^ np.uint64(0x7FFFFFFF)
    return (flipped << np.uint64(32)) | np.uint64(col)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _order_best(cand_vals, cand_cols, count, n, bucket_of, bucket_counts, ordered):
    """Write the sort keys of the candidates that can be among the n best into ``ordered``, ascending (score
    descending, then column ascending); return how many were written (at least min(n, count)).

    Comparison sorts of a few hundred random scores are bound by mispredicted branches. Here the candidates' range
    is cut into ORDER_BUCKETS equal buckets (bucket_of: monotone in the score): counting them from the top bucket
    down finds the bucket that holds the n-th best, the candidates from there up are placed bucket by bucket (best
    bucket first, column order kept within one), and an insertion sort, which finds them nearly in order, fixes
    what is left. Candidates must come in ascending column order (as _collect gives them). When the buckets cannot
    separate the best few (many near-equal scores), it falls back to one comparison sort of all the keys.
    """
    if count == 0:
        return 0
    cand_bits = cand_vals.view(np.uint32)
    lo = cand_vals[0]
    hi = lo
    for i in range(count):
        lo = min(lo, cand_vals[i])
        hi = max(hi, cand_vals[i])
    buckets = bucket_counts.shape[0]
    if hi == lo:  # all tied: column order is the order
        kept = min(n, count)
        for i in range(kept):
            ordered[i] = _sort_key(cand_bits[i], cand_cols[i])
        return kept
    scale = buckets / (np.float64(hi) - np.float64(lo))
    bucket_counts[:] = 0
    for i in range(count):
        b = min(buckets - 1, np.int64((np.float64(cand_vals[i]) - np.float64(lo)) * scale))
        bucket_of[i] = b
        bucket_counts[b] += 1
    kept = 0
    boundary = buckets - 1
    while boundary > 0:
        kept += bucket_counts[boundary]
        if kept >= n:
            break
        boundary -= 1
    if boundary == 0:
        kept += bucket_counts[0]
    if kept > 4 * n + 64:  # the buckets did not separate them: one exact comparison sort
        for i in range(count):
            ordered[i] = _sort_key(cand_bits[i], cand_cols[i])
        ordered[:count] = np.sort(ordered[:count])
        return count
    _place_from_boundary(cand_bits, cand_cols, count, bucket_of, bucket_counts, boundary, kept, ordered)
    return kept


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _place_from_boundary(cand_bits, cand_cols, count, bucket_of, bucket_counts, boundary, kept, ordered):
    """_order_best's last phase: write the sort keys of the ``kept`` candidates in buckets ``boundary`` and above
    into ``ordered[:kept]``, ascending. ``bucket_counts`` holds each bucket's count on entry (its contents are
    spent on return); the keys are placed bucket by bucket, best bucket first and column order kept within one,
    then an insertion sort puts each bucket's keys in order."""
    buckets = bucket_counts.shape[0]
    start = 0
    for b in range(buckets - 1, boundary - 1, -1):  # bucket_counts now holds where each bucket's keys go
        size = bucket_counts[b]
        bucket_counts[b] = start
        start += size
    for i in range(count):
        b = bucket_of[i]
        if b >= boundary:
            ordered[bucket_counts[b]] = _sort_key(cand_bits[i], cand_cols[i])
            bucket_counts[b] += 1
    for i in range(1, kept):  # insertion sort: keys are out of order only within a bucket
        key = ordered[i]
        j = i - 1
        while j >= 0 and ordered[j] > key:
            ordered[j + 1] = ordered[j]
            j -= 1
        ordered[j + 1] = key


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _select_rows(scores, n, seen_starts, seen_cols, row_offset, out_rows, out_cols, out_scores, out_ranks, start):
    """select_top_n's compiled kernel: one pass per row. Writes from ``start``; returns where the output ends.

    Per row: exclude its seen columns; read a threshold from a strided sample of the row (the k-th largest of at
    most SAMPLE_COLUMNS sampled scores, k chosen so that about OVERSAMPLE * n scores of the row reach it); collect
    the scores at or above it; if fewer than n were collected the sample misled, so collect every finite score
    instead. One sort of unique 64-bit keys (score bits, column) orders them by score descending and, among equal
    scores, by column ascending; the first n are written.
    """
    rows, cols = scores.shape
    lowest = np.float32(-3.4028234663852886e38)  # the lowest finite float32: ">= lowest" drops -inf and NaN
    neg_inf = np.float32(-np.inf)
    # Sample about SAMPLED_LEVELS / (OVERSAMPLE * n / cols) columns (enough for a steady k-th largest), at most
    # SAMPLE_COLUMNS: k, the sampled rank of the threshold, then stays near SAMPLED_LEVELS or below.
    wanted = int(math.ceil(SAMPLED_LEVELS * cols / (OVERSAMPLE * n)))
    stride = max(1, cols // max(1, min(SAMPLE_COLUMNS, wanted)))
    width = -(-cols // stride)
    k = min(width, max(1, int(math.ceil(OVERSAMPLE * n * width / cols))))
    if cols <= max(SAMPLE_COLUMNS, 4 * n):  # small rows: every finite entry is a candidate
        k = 0
    best_sampled = np.empty(max(k, 1), np.float32)
    cand_vals = np.empty(cols, np.float32)
    cand_cols = np.empty(cols, np.uint64)  # the candidates' columns
    bucket_of = np.empty(cols, np.int64)
    bucket_counts = np.empty(ORDER_BUCKETS, np.int64)
    ordered = np.empty(cols, np.uint64)
    total = start
    for r in range(rows):
        row = scores[r]
        for s in range(seen_starts[r], seen_starts[r + 1]):
            row[seen_cols[s]] = neg_inf
        threshold = lowest
        if k > 0:
            for i in range(k):  # the k largest sampled scores, descending
                best_sampled[i] = neg_inf
            for j in range(0, cols, stride):
                v = row[j]
                if v > best_sampled[k - 1]:
                    i = k - 1
                    while i > 0 and best_sampled[i - 1] < v:
                        best_sampled[i] = best_sampled[i - 1]
                        i -= 1
                    best_sampled[i] = v
            if best_sampled[k - 1] > lowest:
                threshold = best_sampled[k - 1]
        count = _collect(row, threshold, cand_vals, cand_cols)
        if count < n and threshold > lowest:
            count = _collect(row, lowest, cand_vals, cand_cols)
        count = _order_best(cand_vals, cand_cols, count, n, bucket_of, bucket_counts, ordered)
        for i in range(min(n, count)):
            key = ordered[i]
            out_rows[total] = r + row_offset
            out_cols[total] = np.int64(key & np.uint64(0xFFFFFFFF))
            out_scores[total] = row[out_cols[total]] + np.float32(0.0)  # -0.0 is written as 0.0
            out_ranks[total] = i + 1
            total += 1
    return total


class BlockScorer:
    """Scores batches of users against one fixed set of items; holds the items and a reusable score buffer.

    ``item_idx`` must be strictly ascending, ValueError otherwise (ties in score are then broken by item_idx through
    the column order). Seen items without factors (not in ``item_idx``) are ignored.
    A batch is scored ``max_block_users`` users at a time: each block's scores are one matrix product into the
    buffer, which the compiled selection then reads.
    """

    def __init__(self, item_idx: np.ndarray, item_vecs: np.ndarray, *, n: int, max_block_users: int):
        if len(item_idx) and np.any(np.diff(item_idx) <= 0):
            raise ValueError("item_idx must be strictly ascending")
        self.item_idx = np.asarray(item_idx, dtype=np.int32)
        self.item_vecs_t = np.ascontiguousarray(np.asarray(item_vecs, dtype=np.float32).T)  # rank x items
        self.n = n
        self.max_block_users = max(1, max_block_users)
        size = int(self.item_idx.max()) + 1 if len(self.item_idx) else 0
        self.column_of = np.full(size, -1, dtype=np.int64)  # item_idx -> column, -1 when the item has no factors
        self.column_of[self.item_idx] = np.arange(len(self.item_idx))
        self._scores = None

    def _buffer(self, rows: int) -> np.ndarray:
        if self._scores is None or self._scores.shape[0] < rows:
            self._scores = np.empty((rows, len(self.item_idx)), dtype=np.float32)
        return self._scores[:rows]

    def seen_columns(self, seen_lengths: np.ndarray, seen_items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row starts, columns) in CSR form: the seen items of row r that have factors, as columns."""
        items = np.asarray(seen_items, dtype=np.int64)
        known = (items >= 0) & (items < len(self.column_of))
        cols = np.full(len(items), -1, dtype=np.int64)
        cols[known] = self.column_of[items[known]]
        keep = cols >= 0
        kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
        ends = np.cumsum(np.asarray(seen_lengths, dtype=np.int64))
        starts = np.concatenate([[0], kept_before[ends]]).astype(np.int64)
        return starts, cols[keep]

    def score(self, user_vecs: np.ndarray, seen_lengths: np.ndarray, seen_items: np.ndarray) -> TopN:
        """Top n unseen items of each user (user_vecs: users x rank); TopN.rows index the users."""
        users = len(user_vecs)
        if len(self.item_idx) == 0 or users == 0:
            return TopN.empty()
        user_vecs = np.ascontiguousarray(user_vecs, dtype=np.float32)
        seen_starts, seen_cols = self.seen_columns(seen_lengths, seen_items)
        out = _output_buffers(users * min(self.n, len(self.item_idx)))
        total = 0
        for start in range(0, users, self.max_block_users):
            stop = min(start + self.max_block_users, users)
            scores = self._buffer(stop - start)
            np.matmul(user_vecs[start:stop], self.item_vecs_t, out=scores)
            total = _select_rows(scores, self.n, seen_starts[start:stop + 1], seen_cols, start, *out, total)
        return TopN(*(a[:total] for a in out))

    def score_batch(self, user_idx: np.ndarray, user_vecs: np.ndarray, seen_lengths: np.ndarray,
                    seen_items: np.ndarray) -> pa.RecordBatch:
        """One Arrow record batch (user_idx, item_idx, score, rank) with the top n of every user given."""
        top = self.score(user_vecs, seen_lengths, seen_items)
        return pa.RecordBatch.from_arrays([
            pa.array(np.asarray(user_idx, dtype=np.int32)[top.rows], pa.int32()),
            pa.array(self.item_idx[top.cols], pa.int32()),
            pa.array(top.scores, pa.float32()),
            pa.array(top.ranks, pa.int32()),
        ], schema=OUTPUT_ARROW_SCHEMA)


# --------------------------------------------------------------------------------------------------------------
# seen-item index
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SeenIndex:
    """Every user's seen items, grouped by user_idx (CSR): the items of user u are items[offsets[u]:offsets[u + 1]]."""

    offsets: np.ndarray  # int64, max user_idx + 2 entries
    items: np.ndarray  # uint16 when every item id is in 0..65535 (half the bytes to broadcast), else int32

    @staticmethod
    def from_pairs(users: np.ndarray, items: np.ndarray) -> "SeenIndex":
        return SeenIndex.from_chunks([users], [items])

    @staticmethod
    def from_chunks(users: list[np.ndarray], items: list[np.ndarray]) -> "SeenIndex":
        """The index of the pairs (users[k][j], items[k][j]), chunk by chunk (as Arrow record batches come): the
        chunks are not concatenated first (a copy of every pair, which costs more than the grouping itself)."""
        users = [np.asarray(chunk) for chunk in users]
        if any(len(chunk) and chunk.min() < 0 for chunk in users):
            raise ValueError("user_idx must be >= 0")
        size = max((int(chunk.max()) + 1 for chunk in users if len(chunk)), default=0)
        offsets = np.zeros(size + 1, dtype=np.int64)
        for chunk in users:  # not np.bincount: it copies int32 ids to int64 first
            _count_per_user(chunk, offsets)
        np.cumsum(offsets, out=offsets)
        items = [np.asarray(chunk, dtype=np.int32) for chunk in items]
        lowest = min((int(chunk.min()) for chunk in items if len(chunk)), default=0)
        highest = max((int(chunk.max()) for chunk in items if len(chunk)), default=0)
        narrow = lowest >= 0 and highest <= np.iinfo(np.uint16).max  # item ids of most catalogues fit 16 bits
        grouped = np.empty(int(offsets[-1]), dtype=np.uint16 if narrow else np.int32)
        next_slot = offsets[:-1].copy()
        for user_chunk, item_chunk in zip(users, items, strict=True):
            _group_by_user(user_chunk, item_chunk, next_slot, grouped)
        return SeenIndex(offsets=offsets, items=grouped)

    @staticmethod
    def from_arrow(pairs: pa.Table) -> "SeenIndex | None":
        """The index of a table of (user_idx, item_idx) pairs, or None when a user_idx is negative. A pair with a
        null id excludes nothing (as when the seen lists are joined in Spark) and is dropped."""
        if pairs.column(C.USER_IDX).null_count or pairs.column(C.ITEM_IDX).null_count:
            pairs = pairs.drop_null()
        batches = [batch for batch in pairs.to_batches() if batch.num_rows]
        users = [batch.column(C.USER_IDX).to_numpy() for batch in batches]  # zero-copy views of the batches
        if any(chunk.min() < 0 for chunk in users):
            return None
        return SeenIndex.from_chunks(users, [batch.column(C.ITEM_IDX).to_numpy() for batch in batches])

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


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _count_per_user(users, offsets):
    """offsets[u + 1] += the number of pairs of user u (ids already checked to be >= 0 and < len(offsets) - 1)."""
    for i in range(len(users)):
        offsets[users[i] + 1] += 1


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _group_by_user(users, items, next_slot, grouped):
    """Counting sort: each user's items land in its slots, in input order (next_slot starts at the offsets)."""
    for i in range(len(users)):
        u = users[i]
        grouped[next_slot[u]] = items[i]
        next_slot[u] += 1


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


def factors_from_arrow(table: pa.Table, id_col: str, rank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids ascending as int32, vectors as a C-contiguous float32 matrix) of a factor table (``id_col``, features).

    ``rank`` is the vectors' length when known; otherwise it is read from them. ValueError when the vectors differ
    in length or one is null, or when an id has more than one row.
    """
    table = table.combine_chunks()
    if rank is None and table.num_rows:
        features = table.column(C.FEATURES)
        bounds = pc.min_max(pc.list_value_length(features)).as_py()
        if features.null_count or bounds["min"] != bounds["max"]:
            raise ValueError(f"{id_col} factor vectors differ in length ({bounds['min']}..{bounds['max']}) or "
                             f"are null ({features.null_count})")
        rank = bounds["max"]
    rank = rank or 0
    ids = table.column(id_col).to_numpy().astype(np.int32) if table.num_rows else np.empty(0, np.int32)
    if table.num_rows:
        vecs = factor_matrix(table.column(C.FEATURES).combine_chunks(), rank)
    else:
        vecs = np.zeros((0, rank), np.float32)
    order = np.argsort(ids, kind="stable")
    ids, vecs = ids[order], vecs[order]
    if len(ids) > 1 and np.any(ids[1:] == ids[:-1]):
        raise ValueError(f"{id_col} has duplicate factor rows")
    return ids, np.ascontiguousarray(vecs)
