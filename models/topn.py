"""Exact top-N per user with seen items excluded: a compiled selection kernel, and Spark batch scoring built on it.

Why not ``ALSModel.recommendForAllUsers``: it cross-joins blocks of factors, keeps a bounded priority queue per
user in the JVM (slow), and cannot exclude seen items, so one has to ask for N + max(seen) items and filter
afterwards (apache/spark#17742). Here:

* Users stream through ``mapInArrow`` as flat Arrow buffers (no pandas object columns); their seen items come
  from one broadcast per-user index. When the user factors are a plain scan of local Parquet files (as the saved
  model's are), each task reads its share of their rows itself with pyarrow (models.parquet_direct.split_rows),
  so the JVM neither decodes nor converts them. Each Arrow batch is scored MAX_BLOCK_USERS users at a time: one float32
  matrix product (``user_vecs @ item_vecs.T``) into a reused buffer, then ``_select_rows`` (compiled with numba)
  reads it. The product is most of the work. With a rank of 32-128 the inner dimension is short, and BLAS
  libraries differ on such shapes, and which is faster depends on the CPU: ``gemm="auto"`` times BLIS (the
  ``blis`` package) and numpy's own BLAS on the job's block shape and takes the faster (the kernel figures of both
  are in bench/results/scoring.json, AVX-512, and scoring-avx2.json).
* The selection is exact and several times cheaper than ``np.argpartition`` (which costs more than the product):
  per row, the seen columns are set to -inf; a threshold is read from a strided sample of the row (the k-th
  largest sampled score, k chosen so that about ``OVERSAMPLE * n`` scores pass it); one pass collects the scores
  at or above it (64 columns at a time: a vectorised compare builds a bit mask, and only its set bits are
  visited); the candidates are counted into equal score buckets, which finds the bucket of the n-th best and
  places those above it nearly in order, and an insertion sort of unique 64-bit keys (score bits, column) finishes
  the order (no comparison sort of random scores: its mispredicted branches cost more than the rest). A row where
  fewer than n pass gets every finite score as candidate instead, so no row can miss an item: the top N always lie
  above the threshold.
* Order: score descending, ties broken by item_idx ascending, so the output equals a brute-force full sort.
* The seen pairs are collected (and broadcast) in a driver thread while the item factors are: the two set-up
  chains overlap instead of adding up. Both are read by the driver from their Parquet files when Spark's plan
  shows a plain scan of local files (models.parquet_direct), and collected through Spark otherwise.
* Item factors that fit ``item_budget_bytes`` are broadcast once. Larger ones are split into chunks that do fit:
  every user is scored against each chunk (partial top N per chunk, one broadcast at a time), and the partial
  lists are merged with a window ordered the same way. The result is the same, the memory is bounded.
* numba caches the compiled kernels on disk (next to this file, or in $NUMBA_CACHE_DIR): a Python worker loads
  them in milliseconds; the first run on a machine compiles them (a few seconds per worker).
"""
from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
from numba.core import cgutils, types
from numba.extending import intrinsic
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import inheritable_thread_target
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from models import parquet_direct
from transforms import columns as C

log = logging.getLogger(__name__)

OUTPUT_SCHEMA = f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.SCORE} float, {C.RANK} int"
SEEN = "seen_item_idx"
OUTPUT_ARROW_SCHEMA = pa.schema([(C.USER_IDX, pa.int32()), (C.ITEM_IDX, pa.int32()), (C.SCORE, pa.float32()),
                                 (C.RANK, pa.int32())])

DEFAULT_BLOCK_BYTES = 256 << 20  # bound on one block's score matrix (users x items x 4 bytes)
DEFAULT_ITEM_BUDGET_BYTES = 1 << 30  # item factors up to this size are broadcast whole, larger ones in chunks
DIRECT_COLLECT_MARGIN = 4  # item factors planned at most budget / 4 bytes are collected without counting them first
DEFAULT_SEEN_BROADCAST_PAIRS = 50_000_000  # seen pairs up to this many reach the scorers as one broadcast index
MAX_BLOCK_USERS = 256  # users per matrix product: fewer, larger products amortise BLAS's packing of the items
DIRECT_READ_BATCH_USERS = 10_000  # users per batch a task reads from the files (Spark's Arrow batch size)
OUTPUT_SLICE_USERS = 2048  # users per output batch: the scorer's temporaries stay a few MB, reused slice after slice
KEEP_FREED_BELOW_BYTES = 32 << 20  # glibc's largest heap allocation: smaller blocks are kept and reused (see below)
GEMM_BACKENDS = ("auto", "blis", "numpy")  # who computes the score blocks; "auto": the faster here (resolve_gemm)
AUTO_GEMM_MAX_ITEMS = 16_384  # "auto" times products of at most this many items (about 10-40 ms each)
AUTO_GEMM_MIN_FLOPS = 50_000_000  # below this a product is too small for the backend to matter: numpy
AUTO_GEMM_MARGIN = 0.10  # BLIS must be this much faster to be chosen over numpy's BLAS
_AUTO_GEMM: dict[tuple[int, int, int], str] = {}  # (rows, items, rank) -> backend chosen by "auto" in this process
SAMPLE_COLUMNS = 1024  # columns sampled per row to estimate the candidate threshold
OVERSAMPLE = 2.5  # aim for about this many times n candidates per row
ORDER_BUCKETS = 1024  # score buckets that put the candidates nearly in order before the final sort (_order_best)
SAMPLED_LEVELS = 24  # the threshold is about the 24th largest sampled score (fewer when SAMPLE_COLUMNS caps it)


# --------------------------------------------------------------------------------------------------------------
# selection kernel (numpy for the product, numba for the selection)
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


def check_gemm(gemm: str) -> None:
    """ValueError unless ``gemm`` names a backend (GEMM_BACKENDS)."""
    if gemm not in GEMM_BACKENDS:
        raise ValueError(f"gemm must be one of {', '.join(GEMM_BACKENDS)}; got {gemm!r}")


def resolve_gemm(gemm: str = "auto", *, rows: int = MAX_BLOCK_USERS, items: int = 20_000, rank: int = 64) -> str:
    """The matrix-product backend to use: ``gemm`` itself, or for "auto" the faster one on this machine.

    "auto" is "numpy" when BLIS is not installed or the product is small (below AUTO_GEMM_MIN_FLOPS, where the
    choice does not matter). Otherwise both backends are timed on one single-threaded product of the job's shape
    (``rows`` users x ``rank``, by up to AUTO_GEMM_MAX_ITEMS of the ``items``), best of a few rounds, and BLIS is
    chosen only when it is at least AUTO_GEMM_MARGIN faster: which one wins depends on the CPU (BLIS's kernels beat
    OpenBLAS's on an AVX2 EPYC, OpenBLAS's AVX-512 kernels beat BLIS's on an AVX-512 EPYC by 2x; see
    bench/results/scoring.json, AVX-512, and scoring-avx2.json). The answer is remembered per shape for the life of
    the process.
    """
    check_gemm(gemm)
    if gemm != "auto":
        return gemm
    try:
        import blis.py  # noqa: F401
    except ImportError:
        return "numpy"
    items = min(items, AUTO_GEMM_MAX_ITEMS)
    if 2 * rows * items * rank < AUTO_GEMM_MIN_FLOPS:
        return "numpy"
    key = (rows, items, rank)
    if key not in _AUTO_GEMM:
        seconds = time_gemm(rows, items, rank)
        _AUTO_GEMM[key] = "blis" if seconds["blis"] * (1 + AUTO_GEMM_MARGIN) < seconds["numpy"] else "numpy"
        log.info("gemm=auto chose %s for %d x %d x %d products (one product, single-threaded: numpy %.1f ms, "
                 "blis %.1f ms)", _AUTO_GEMM[key], rows, rank, items, seconds["numpy"] * 1e3, seconds["blis"] * 1e3)
    return _AUTO_GEMM[key]


def time_gemm(rows: int, items: int, rank: int, rounds: int = 3) -> dict[str, float]:
    """Best-of-``rounds`` seconds of one float32 (rows x rank) @ (rank x items) product per installed backend, the
    backends in turns (the same background load for both), numpy's BLAS limited to one thread as in a Spark task."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    left = rng.standard_normal((rows, rank), dtype=np.float32)
    right = np.ascontiguousarray(rng.standard_normal((items, rank), dtype=np.float32).T)
    out = np.empty((rows, items), dtype=np.float32)
    backends = {name: gemm_function(name) for name in ("numpy", "blis")}
    best = {name: math.inf for name in backends}
    with threadpool_limits(1, "blas"):
        for product in backends.values():  # warm: first-call set-up, pages of ``out``
            product(left, right, out)
        for _ in range(rounds):
            for name, product in backends.items():
                started = time.perf_counter()
                product(left, right, out)
                best[name] = min(best[name], time.perf_counter() - started)
    return best


def gemm_function(gemm: str):
    """``product(a, b, out)`` writing ``a @ b`` (float32, C-contiguous) into ``out`` with the chosen backend."""
    gemm = resolve_gemm(gemm)
    if gemm == "numpy":
        return lambda a, b, out: np.matmul(a, b, out=out)
    try:
        from blis.py import gemm as blis_gemm
    except ImportError as exc:
        raise RuntimeError("the scorer was asked to use BLIS (gemm='blis', or 'auto' where the job started) but "
                           "the blis package is not installed in this Python: install it (requirements/batch.lock) "
                           "or pass gemm='numpy'") from exc
    return lambda a, b, out: blis_gemm(a, b, out=out, beta=0.0)  # blis adds to out unless beta is 0


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
    (the compiler turns it into a few vector compares), and only the set bits are visited. About 1 score in 80 is
    a candidate, so this costs about a third of one test and branch per score.
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

    Comparison sorts of a few hundred random scores are bound by mispredicted branches (a quickselect of 250 scores
    plus a sort of the best 100 cost about 8 us). Here the candidates' range is cut into ORDER_BUCKETS equal
    buckets (bucket_of: monotone in the score): counting them from the top bucket down finds the bucket that holds
    the n-th best, the candidates from there up are placed bucket by bucket (best bucket first, column order kept
    within one), and an insertion sort, which finds them nearly in order, fixes what is left. Candidates must come
    in ascending column order (as _collect gives them). When the buckets cannot separate the best few (many
    near-equal scores), it falls back to one comparison sort of all the keys.
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
    return kept


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
    """Scores batches of users against one fixed set of items; holds the items and a reusable score buffer.

    ``item_idx`` must be sorted ascending (ties in score are then broken by item_idx through the column order).
    A batch is scored ``max_block_users`` users at a time: each block's scores are one matrix product (``gemm``:
    see GEMM_BACKENDS) into the buffer, which the compiled selection then reads.
    """

    def __init__(self, item_idx: np.ndarray, item_vecs: np.ndarray, *, n: int, max_block_users: int,
                 gemm: str = "auto"):
        if len(item_idx) and np.any(np.diff(item_idx) <= 0):
            raise ValueError("item_idx must be strictly ascending")
        self.item_idx = np.asarray(item_idx, dtype=np.int32)
        self.item_vecs_t = np.ascontiguousarray(np.asarray(item_vecs, dtype=np.float32).T)  # rank x items
        self.n = n
        self.max_block_users = max(1, max_block_users)
        self.product = gemm_function(resolve_gemm(gemm, rows=self.max_block_users, items=len(self.item_idx),
                                                  rank=self.item_vecs_t.shape[0]))
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
            self.product(user_vecs[start:stop], self.item_vecs_t, scores)
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
                    seen_broadcast_pairs: int = DEFAULT_SEEN_BROADCAST_PAIRS, gemm: str = "auto",
                    direct_read: bool = True) -> DataFrame:
    """(user_idx, item_idx, score, rank) for every user in ``user_factors``: n items each, seen ones excluded.

    ``user_factors`` (user_idx, features) and ``item_factors`` (item_idx, features) are ALS factor tables;
    ``seen`` holds (user_idx, item_idx) pairs to exclude. A user with fewer than n unseen items gets them all.
    ``block_bytes`` bounds one block's score matrix (users x items x 4 bytes). Item factors larger than
    ``item_budget_bytes`` are scored in chunks that fit it, and the partial lists merged (same result). When
    Spark's planner sizes the item factors (a table or file scan) at most a quarter of that budget, they are
    collected in one job, without counting them first (planned_size_bytes).
    ``partitions`` is the number of user partitions scored in parallel. By default the users keep their own
    partitioning when it has at least one partition per core, and are spread over 2 x the cores otherwise.
    Up to ``seen_broadcast_pairs`` seen pairs are collected once into a per-user index (8 bytes a pair) that every
    scorer receives as a broadcast, so neither the seen pairs nor the users are shuffled or joined; more than that
    and the seen lists are grouped per user and joined to the users in Spark.
    ``gemm`` chooses the matrix-product backend (GEMM_BACKENDS); "auto" is resolved here, on the driver, by timing
    both on this job's block shape (resolve_gemm), so that every executor uses the same one (the same scores to the
    last bit) and an executor without it fails clearly. Pin it when the driver's CPU differs from the executors'.
    ``direct_read``: the driver reads the seen pairs and the item factors straight from their Parquet files when
    they are plain scans of local files (models.parquet_direct; several times faster than Spark's collection on a
    fresh JVM); False always collects them through Spark.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if block_bytes < 1 or item_budget_bytes < 1:
        raise ValueError(f"block_bytes and item_budget_bytes must be positive, got {block_bytes}, {item_budget_bytes}")
    check_gemm(gemm)  # before any Spark work; "auto" is resolved once the block shape is known
    spark = user_factors.sparkSession
    cores = spark.sparkContext.defaultParallelism
    started = time.perf_counter()
    # The seen pairs are collected beside the item factors (their shape, the vectors, the gemm choice): independent
    # Spark jobs, and the driver's own part of each (Arrow to numpy, grouping, pickling) overlaps the other's.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recsys-seen-index")
    try:
        pending_seen = pool.submit(inheritable_thread_target(spark)(_broadcast_seen), seen, seen_broadcast_pairs,
                                   direct_read)
        # Item factors that Spark's planner puts well inside the budget are collected at once (one job), and their
        # shape read from the result; others (or no estimate) are counted first to plan the chunks.
        estimate = planned_size_bytes(item_factors.select(C.ITEM_IDX, C.FEATURES))
        direct = None
        if estimate is not None and estimate * DIRECT_COLLECT_MARGIN <= item_budget_bytes:
            direct = collect_factors(item_factors, C.ITEM_IDX, direct_read=direct_read)
            items_count, rank = direct[1].shape
        else:
            items_count, rank = factor_shape(item_factors, C.ITEM_IDX)
        if items_count == 0:
            return spark.createDataFrame([], OUTPUT_SCHEMA)
        chunks = max(1, math.ceil(items_count * rank * 4 / item_budget_bytes))
        chunk_items = math.ceil(items_count / chunks)
        block_users = max(1, min(MAX_BLOCK_USERS, block_bytes // (4 * chunk_items)))
        gemm = resolve_gemm(gemm, rows=block_users, items=chunk_items, rank=rank)
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
    user_source = user_reads = None
    if shared_seen is not None:
        users = user_factors.select(C.USER_IDX, C.FEATURES)
        user_source = parquet_direct.parquet_source(users) if direct_read else None
        if user_source is not None:
            user_reads = parquet_direct.split_rows(user_source, partitions or 2 * cores)
        if user_reads is not None:  # each task reads its share of the files' rows itself: no JVM work per user
            users = spark.range(0, len(user_reads), 1, max(1, len(user_reads)))  # row t: read user_reads[t]
        elif partitions is not None or users.rdd.getNumPartitions() < cores:
            users = users.repartition(partitions or 2 * cores)
    else:
        partitions = partitions or 2 * cores
        seen_lists = (seen.select(C.USER_IDX, C.ITEM_IDX).repartition(partitions, C.USER_IDX)
                      .groupBy(C.USER_IDX).agg(F.collect_list(C.ITEM_IDX).alias(SEEN)))
        users = (user_factors.select(C.USER_IDX, C.FEATURES).repartition(partitions, C.USER_IDX)
                 .join(seen_lists.hint("shuffle_hash"), on=C.USER_IDX, how="left"))

    parts = []
    for chunk in range(chunks):
        shared = first_items if chunk == 0 else _broadcast_items(item_factors, chunks, chunk, rank, direct_read)
        scorer = _partition_scorer(shared, n, rank, block_users, shared_seen, gemm, user_source, user_reads)
        parts.append(users.mapInArrow(scorer, OUTPUT_SCHEMA))
    if chunks == 1:
        return parts[0]
    partial = parts[0]
    for part in parts[1:]:
        partial = partial.unionAll(part)
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


def _partition_scorer(shared, n: int, rank: int, block_users: int, shared_seen, gemm: str,
                      user_source: parquet_direct.ParquetSource | None = None, user_reads=None):
    """The mapInArrow function: score each Arrow batch of (user_idx, features[, seen list]) in blocks; the seen
    items come from the batch's list column, or from the broadcast ``SeenIndex`` when one is given (not None).
    With ``user_reads`` (not None), the function's input is task numbers instead, and task t reads the users of
    ``user_reads[t]`` (row-group slices of ``user_source``'s files) with pyarrow.
    ``gemm`` is the backend recommend_top_n resolved on the driver. The output goes out OUTPUT_SLICE_USERS users
    at a time, so that the temporaries of one slice (seen columns, selected entries, output columns) are small
    blocks that the worker's allocator hands out again for the next slice."""

    def score_partition(batches):
        keep_freed_memory()
        item_idx, item_vecs = shared.value
        seen_index = shared_seen.value if shared_seen is not None else None
        scorer = BlockScorer(item_idx, item_vecs, n=n, max_block_users=block_users, gemm=gemm)
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
                                   "score with direct_read=False (jobs.score --read-through-spark) to read them "
                                   "through Spark") from error


_KEEPS_FREED_MEMORY = False


def keep_freed_memory() -> None:
    """Make this process's C allocator (glibc) keep the memory it frees, below KEEP_FREED_BELOW_BYTES a block.

    By default glibc gives large freed blocks back to the kernel (blocks over 128 KB-32 MB are separate mappings,
    and the heap is trimmed when its free top passes twice that), and the next batch's arrays fault in fresh pages
    again: the kernel zeroes each one, and on virtual machines that hand freed memory back to the host (free page
    reporting, as on the benchmark machine) each fresh page costs several times more. A scorer allocates the same
    sizes batch after batch, so kept blocks are reused: measured in the two Python workers of a 100k x 20k job, page
    faults per run 34-40 thousand -> 0.3 thousand, and their system CPU 0.3-1.4 s -> 0.05 s. The worker keeps its
    peak heap (tens of MB) until it exits. pyarrow's buffers then come from the same allocator (its system memory
    pool): its default pool, mimalloc, hands freed pages back to the kernel after 10 ms, so every batch a task reads
    from Parquet faulted in fresh pages (a 100k x 20k job's first run in a fresh process, three each: 3.98-4.10 s
    with mimalloc, 3.74-3.93 s with the system pool). Once per process; nothing is done where glibc's mallopt is
    absent."""
    global _KEEPS_FREED_MEMORY
    if _KEEPS_FREED_MEMORY:
        return
    _KEEPS_FREED_MEMORY = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): leave the allocator as it is
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    mallopt(m_trim_threshold, ctypes.c_int(1 << 30))
    mallopt(m_mmap_threshold, ctypes.c_int(KEEP_FREED_BELOW_BYTES))
    pa.set_memory_pool(pa.system_memory_pool())  # pyarrow's buffers from glibc too, kept the same way


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
        for chunk in users:  # not np.bincount: it copies int32 ids to int64 first (0.1-0.2 s at 10M)
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


def collect_seen_index(seen: DataFrame, *, max_pairs: int, direct_read: bool = True) -> SeenIndex | None:
    """The seen pairs as a SeenIndex, or None when there are more than ``max_pairs`` of them (or a negative id).

    With ``direct_read`` and a plain scan of local Parquet files (models.parquet_direct), the pairs are counted from
    the files' footers and read by pyarrow; otherwise Spark counts them and collects them as Arrow.
    """
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
    table = parquet_direct.to_arrow(pairs, direct=source is not None, source=source)
    if table.column(C.USER_IDX).null_count or table.column(C.ITEM_IDX).null_count:
        table = table.drop_null()  # a pair without a user or an item excludes nothing (as in the joined path)
    batches = [batch for batch in table.to_batches() if batch.num_rows]
    users = [batch.column(C.USER_IDX).to_numpy() for batch in batches]  # zero-copy views of the batches
    if any(chunk.min() < 0 for chunk in users):
        return None
    return SeenIndex.from_chunks(users, [batch.column(C.ITEM_IDX).to_numpy() for batch in batches])


def factor_shape(factors: DataFrame, id_col: str) -> tuple[int, int]:
    """(rows, rank) of a factor table; raises ValueError if its vectors differ in length."""
    row = factors.agg(F.count(F.lit(1)).alias("rows"), F.min(F.size(C.FEATURES)).alias("lo"),
                      F.max(F.size(C.FEATURES)).alias("hi")).first()
    if row["rows"] and row["lo"] != row["hi"]:
        raise ValueError(f"{id_col} factor vectors differ in length ({row['lo']}..{row['hi']})")
    return int(row["rows"]), int(row["hi"] or 0)


def planned_size_bytes(df: DataFrame) -> int | None:
    """Spark's estimate of a DataFrame's size in bytes (its optimized plan's statistics: the files' size for a
    table or file scan), or None when Spark has none (an RDD-based plan) or cannot be asked (Spark Connect)."""
    try:
        size = int(str(df._jdf.queryExecution().optimizedPlan().stats().sizeInBytes()))  # a Scala BigInt
    except Exception:  # noqa: BLE001 - no JVM plan to ask: the caller counts instead
        return None
    return size if 0 <= size < 1 << 62 else None  # "unknown" is Long.MaxValue


def collect_factors(factors: DataFrame, id_col: str, rank: int | None = None, *,
                    direct_read: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(ids ascending as int32, vectors as a float32 matrix) of a factor table, through Arrow.

    ``rank`` is the vectors' length when known; otherwise it is read from them (ValueError if they differ).
    ``direct_read``: read them with pyarrow when they are a plain scan of local Parquet files (models.parquet_direct).
    """
    table = parquet_direct.to_arrow(factors.select(id_col, C.FEATURES), direct=direct_read).combine_chunks()
    if rank is None and table.num_rows:
        features = table.column(C.FEATURES)
        bounds = pc.min_max(pc.list_value_length(features)).as_py()
        if features.null_count or bounds["min"] != bounds["max"]:
            raise ValueError(f"{id_col} factor vectors differ in length ({bounds['min']}..{bounds['max']}) or "
                             f"are null ({features.null_count})")
        rank = bounds["max"]
    rank = rank or 0
    ids = table.column(id_col).to_numpy().astype(np.int32) if table.num_rows else np.empty(0, np.int32)
    vecs = factor_matrix(table.column(C.FEATURES).combine_chunks(), rank) if table.num_rows else np.zeros((0, rank), np.float32)
    order = np.argsort(ids, kind="stable")
    ids, vecs = ids[order], vecs[order]
    if len(ids) > 1 and np.any(ids[1:] == ids[:-1]):
        raise ValueError(f"{id_col} has duplicate factor rows")
    return ids, np.ascontiguousarray(vecs)
