"""models.select's compiled selection kernel: the fast selection equals a brute-force full sort, ties and exclusions included."""
from __future__ import annotations

import numpy as np
import pytest

from models import select


def brute_force(scores: np.ndarray, n: int) -> list[list[int]]:
    """Per row: finite entries sorted by score descending, then column ascending; the first n columns."""
    out = []
    for row in scores:
        order = np.lexsort((np.arange(len(row)), -row))
        out.append([int(c) for c in order if row[c] > -np.inf][:n])
    return out


def as_lists(top: select.TopN, rows: int) -> list[list[int]]:
    return [top.cols[top.rows == r].tolist() for r in range(rows)]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("cols,n", [(7, 3), (60, 100), (3000, 10), (4097, 100), (5000, 100)])
def test_select_top_n_equals_brute_force(seed, cols, n):
    rng = np.random.default_rng(seed)
    rows = 25
    if seed % 2:  # small integers: many exact ties, also at the n-th place
        scores = rng.integers(-3, 4, size=(rows, cols)).astype(np.float32)
    else:
        scores = rng.standard_normal((rows, cols)).astype(np.float32)
    scores[rng.random((rows, cols)) < (0.05, 0.5, 0.97)[seed % 3]] = -np.inf  # excluded (seen) entries
    scores[0] = -np.inf  # a user who has seen everything
    top = select.select_top_n(scores, n)
    assert as_lists(top, rows) == brute_force(scores, n)
    for r in range(rows):
        picked = top.rows == r
        assert top.ranks[picked].tolist() == list(range(1, picked.sum() + 1))
        assert np.array_equal(top.scores[picked], scores[r, top.cols[picked]])


def test_nan_scores_are_never_selected():
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((6, 4160)).astype(np.float32)  # 65 chunks of 64 columns
    scores[rng.random(scores.shape) < 0.3] = np.nan
    scores[1, 63:65] = 50.0  # the best two straddle a 64-column chunk boundary
    top = select.select_top_n(scores, 40)
    assert as_lists(top, 6) == brute_force(np.where(np.isnan(scores), -np.inf, scores), 40)
    assert as_lists(top, 6)[1][:2] == [63, 64]


def order_best(values: np.ndarray, n: int) -> list[int]:
    """Run the kernel's candidate ordering on values given in column order; return the columns it ordered."""
    count = len(values)
    cols = np.arange(count, dtype=np.uint64)
    ordered = np.empty(max(count, 1), np.uint64)
    kept = select._order_best(values.astype(np.float32), cols, count, n, np.empty(max(count, 1), np.int64),
                            np.empty(select.ORDER_BUCKETS, np.int64), ordered)
    assert kept >= min(n, count)
    return [int(k & 0xFFFFFFFF) for k in ordered[:kept]]


@pytest.mark.parametrize("seed", range(4))
def test_candidates_are_ordered_by_score_then_column(seed):
    """Random scores, few distinct values (ties at the n-th place), one far outlier (most candidates in one bucket:
    the exact fallback sort), and all equal."""
    rng = np.random.default_rng(seed)
    for trial in range(200):
        size = int(rng.integers(1, 600))
        n = int(rng.integers(1, 150))
        kind = trial % 4
        if kind == 0:
            values = rng.standard_normal(size)
        elif kind == 1:
            values = rng.integers(-4, 5, size).astype(float)
        elif kind == 2:
            values = rng.standard_normal(size) * 1e-3
            values[rng.integers(0, size)] = 1e6
        else:
            values = np.full(size, 2.5)
        values = values.astype(np.float32)
        expected = [int(c) for c in np.lexsort((np.arange(size), -values))][:n]
        assert order_best(values, n)[:n] == expected, (trial, size, n)


def test_a_misleading_sample_falls_back_to_the_exact_threshold():
    """The sampled columns hold the largest scores, so the estimated threshold lets too few through."""
    rng = np.random.default_rng(7)
    cols = 20_000
    scores = rng.standard_normal((8, cols)).astype(np.float32)
    scores[:, :: cols // select.SAMPLE_COLUMNS] += 100.0
    assert as_lists(select.select_top_n(scores, 100), 8) == brute_force(scores, 100)


def test_ties_in_score_are_broken_by_column_even_among_many_candidates():
    scores = np.zeros((3, 4000), dtype=np.float32)
    scores[1, 3000:] = 1.0
    scores[2, ::2] = -0.0  # -0.0 equals 0.0: still ordered by column
    top = select.select_top_n(scores, 5)
    assert as_lists(top, 3) == [[0, 1, 2, 3, 4], [3000, 3001, 3002, 3003, 3004], [0, 1, 2, 3, 4]]


def test_seen_columns_given_as_csr_are_excluded_in_place():
    scores = np.array([[5.0, 4.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    top = select.select_top_n(scores.copy(), 2, seen_starts=np.array([0, 2, 3]), seen_cols=np.array([0, 2, 3]))
    assert as_lists(top, 2) == [[1, 3], [2, 1]]


def test_block_scorer_excludes_seen_items_and_ignores_unknown_ones():
    item_idx = np.array([2, 5, 9, 11])  # ids with gaps: columns are positions, not ids
    item_vecs = np.array([[1.0], [4.0], [3.0], [2.0]], dtype=np.float32)
    scorer = select.BlockScorer(item_idx, item_vecs, n=2, max_block_users=1)
    user_vecs = np.array([[1.0], [1.0], [-1.0]], dtype=np.float32)
    seen_lengths = np.array([2, 0, 1])
    seen_items = np.array([5, 77, 2])  # user 0 saw item 5 and an item without factors; user 2 saw item 2
    batch = scorer.score_batch(np.array([10, 11, 12]), user_vecs, seen_lengths, seen_items)
    rows = [tuple(r.values()) for r in batch.to_pylist()]
    assert rows == [(10, 9, 3.0, 1), (10, 11, 2.0, 2), (11, 5, 4.0, 1), (11, 9, 3.0, 2), (12, 11, -2.0, 1),
                    (12, 9, -3.0, 2)]


def test_every_block_is_scored_like_a_brute_force():
    """Blocks of 3 users reuse one score buffer: each product must overwrite it, not add to what it holds."""
    rng = np.random.default_rng(11)
    item_vecs = rng.integers(-3, 4, size=(40, 5)).astype(np.float32)  # small integers: exact float32 products
    user_vecs = rng.integers(-3, 4, size=(10, 5)).astype(np.float32)
    scorer = select.BlockScorer(np.arange(40), item_vecs, n=7, max_block_users=3)
    top = scorer.score(user_vecs, np.zeros(10, np.int64), np.empty(0, np.int64))
    scores = user_vecs @ item_vecs.T
    expected = [sorted(range(40), key=lambda c: (-scores[r, c], c))[:7] for r in range(10)]
    assert as_lists(top, 10) == expected
    assert np.array_equal(top.scores, scores[top.rows, top.cols])


def test_invalid_arguments_are_named():
    with pytest.raises(ValueError, match="n must be >= 1"):
        select.select_top_n(np.zeros((1, 3), np.float32), 0)
    with pytest.raises(ValueError, match="ascending"):
        select.BlockScorer(np.array([3, 1]), np.zeros((2, 1), np.float32), n=1, max_block_users=1)
