"""Exact top-N per user with seen items excluded, scored in blocks with BLAS inside mapInPandas.

Item factors are collected once and broadcast (they fit in executor memory up to millions of items at
rank 64-128); users stream through in blocks sized to a memory budget. Ties are broken by item_idx ascending,
so the output is deterministic and equals a brute-force full sort.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from transforms import columns as C

OUTPUT_SCHEMA = f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.SCORE} float, {C.RANK} int"
SEEN = "seen_item_idx"


def top_n_indices(scores: np.ndarray, n: int) -> np.ndarray:
    """Column indices of the n largest scores per row, by score descending then column ascending.

    ``scores`` rows may contain -inf for excluded columns; those are returned last and must be dropped by
    the caller. Exact: ties at the boundary are resolved by column index, not by argpartition's whim.
    """
    rows, cols = scores.shape
    n = min(n, cols)
    if n == 0:
        return np.empty((rows, 0), dtype=np.int64)
    if n < cols:
        part = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    else:
        part = np.broadcast_to(np.arange(cols), (rows, cols)).copy()
    top_vals = np.take_along_axis(scores, part, axis=1)
    # order the candidates: score descending, then column ascending
    order = np.lexsort((part, -top_vals), axis=1)
    result = np.take_along_axis(part, order, axis=1)
    if n < cols:
        # A row whose n-th value ties with a value outside the selection needs the exact rule: redo it alone.
        kth = np.take_along_axis(scores, result[:, -1:], axis=1)
        ties_outside = (scores == kth).sum(axis=1) > (np.take_along_axis(scores, result, axis=1) == kth).sum(axis=1)
        for r in np.flatnonzero(ties_outside & np.isfinite(kth[:, 0])):
            full = np.lexsort((np.arange(cols), -scores[r]))
            result[r] = full[:n]
    return result


def score_block(user_vecs: np.ndarray, item_vecs: np.ndarray, seen_rows: np.ndarray, seen_cols: np.ndarray,
                n: int) -> tuple[np.ndarray, np.ndarray]:
    """(top column indices, their scores) for a block of users; seen (row, col) pairs are excluded."""
    scores = user_vecs @ item_vecs.T
    scores[seen_rows, seen_cols] = -np.inf
    top = top_n_indices(scores, n)
    return top, np.take_along_axis(scores, top, axis=1)


def recommend_top_n(user_factors: DataFrame, item_factors: DataFrame, seen: DataFrame, *, n: int,
                    block_bytes: int = 256 << 20) -> DataFrame:
    """(user_idx, item_idx, score, rank) for every user in ``user_factors``: n items each, seen ones excluded.

    ``seen`` holds (user_idx, item_idx) pairs to exclude. A user with fewer than n unseen items gets them all.
    ``block_bytes`` bounds the score matrix of one block (users x items x 4 bytes).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    spark = user_factors.sparkSession
    items = item_factors.select(C.ITEM_IDX, C.FEATURES).orderBy(C.ITEM_IDX).toPandas()
    item_idx = items[C.ITEM_IDX].to_numpy(np.int32)
    item_vecs = np.stack(items[C.FEATURES].to_numpy()).astype(np.float32) if len(items) else np.zeros((0, 1), np.float32)
    shared = spark.sparkContext.broadcast((item_idx, item_vecs))
    users_per_block = max(1, block_bytes // max(1, 4 * len(item_idx)))

    seen_lists = seen.groupBy(C.USER_IDX).agg(F.collect_list(C.ITEM_IDX).alias(SEEN))
    users = user_factors.select(C.USER_IDX, C.FEATURES).join(seen_lists, on=C.USER_IDX, how="left")

    def score_partition(batches):
        ids, vecs = shared.value
        for pdf in batches:
            for start in range(0, len(pdf), users_per_block):
                yield _score_frame(pdf.iloc[start:start + users_per_block], ids, vecs, n)

    return users.mapInPandas(score_partition, OUTPUT_SCHEMA)


def _score_frame(pdf: pd.DataFrame, item_idx: np.ndarray, item_vecs: np.ndarray, n: int) -> pd.DataFrame:
    user_vecs = np.stack(pdf[C.FEATURES].to_numpy()).astype(np.float32)
    seen_rows, seen_cols = [], []
    for row, seen in enumerate(pdf[SEEN].to_numpy()):
        if seen is not None and len(seen):
            cols = _seen_columns(np.asarray(seen, dtype=np.int32), item_idx)
            seen_rows.append(np.full(len(cols), row))
            seen_cols.append(cols)
    rows = np.concatenate(seen_rows) if seen_rows else np.empty(0, np.int64)
    cols = np.concatenate(seen_cols) if seen_cols else np.empty(0, np.int64)
    top, vals = score_block(user_vecs, item_vecs, rows, cols, n)
    keep = np.isfinite(vals)
    ranks = np.broadcast_to(np.arange(1, top.shape[1] + 1, dtype=np.int32), top.shape)
    user_col = np.broadcast_to(pdf[C.USER_IDX].to_numpy(np.int32)[:, None], top.shape)
    return pd.DataFrame({
        C.USER_IDX: user_col[keep],
        C.ITEM_IDX: item_idx[top][keep],
        C.SCORE: vals[keep].astype(np.float32),
        C.RANK: ranks[keep],
    })


def _seen_columns(seen: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
    """Column positions of the seen items in the sorted ``item_idx`` (items without factors are ignored)."""
    if not len(item_idx):
        return np.empty(0, np.int64)
    cols = np.minimum(np.searchsorted(item_idx, seen), len(item_idx) - 1)
    return cols[item_idx[cols] == seen]
