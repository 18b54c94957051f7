"""models.select and models.topn: exact top-N with seen items excluded equals a brute-force full sort."""
from __future__ import annotations

import numpy as np
import pytest

from models import select, topn
from transforms import columns as C


def columns_per_row(top: select.TopN, rows: int) -> list[list[int]]:
    return [top.cols[top.rows == r].tolist() for r in range(rows)]


def brute_force(scores: np.ndarray, seen: set[tuple[int, int]], n: int) -> list[list[int]]:
    out = []
    for r, row in enumerate(scores):
        candidates = [(-row[c], c) for c in range(len(row)) if (r, c) not in seen]
        out.append([c for _, c in sorted(candidates)[:n]])
    return out


def test_select_top_n_breaks_ties_by_column():
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    assert columns_per_row(select.select_top_n(scores, 2), 2) == [[1, 2], [0, 1]]
    top = select.select_top_n(scores, 5)
    assert columns_per_row(top, 2) == [[1, 2, 4, 3, 0], [0, 1, 2, 3, 4]]
    assert top.ranks.tolist() == [1, 2, 3, 4, 5] * 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_scorer_equals_brute_force_with_ties_and_exclusions(seed):
    rng = np.random.default_rng(seed)
    users = rng.integers(-2, 3, size=(30, 3)).astype(np.float32)  # small integers: many exact ties
    items = rng.integers(-2, 3, size=(25, 3)).astype(np.float32)
    seen = {(int(r), int(c)) for r, c in zip(rng.integers(0, 30, 120), rng.integers(0, 25, 120))}
    seen_lists = [sorted(c for r, c in seen if r == u) for u in range(30)]
    scorer = select.BlockScorer(np.arange(25), items, n=7, max_block_users=8)
    top = scorer.score(users, np.array([len(s) for s in seen_lists]), np.array([c for s in seen_lists for c in s]))
    assert columns_per_row(top, 30) == brute_force(users @ items.T, seen, 7)
    assert np.array_equal(top.scores, (users @ items.T)[top.rows, top.cols])


def test_recommend_top_n_on_spark_excludes_seen_and_keeps_every_user(spark):
    rng = np.random.default_rng(3)
    user_vecs = rng.normal(size=(12, 4)).astype(np.float32)
    item_vecs = rng.normal(size=(9, 4)).astype(np.float32)
    users = spark.createDataFrame([(i, v.tolist()) for i, v in enumerate(user_vecs)], f"{C.USER_IDX} int, {C.FEATURES} array<float>")
    items = spark.createDataFrame([(i, v.tolist()) for i, v in enumerate(item_vecs)], f"{C.ITEM_IDX} int, {C.FEATURES} array<float>")
    seen_pairs = {(u, (u * 3 + k) % 9) for u in range(12) for k in range(u % 4)}
    seen_pairs |= {(11, i) for i in range(9)}  # a user who has seen every item gets nothing
    seen = spark.createDataFrame(sorted(seen_pairs), f"{C.USER_IDX} int, {C.ITEM_IDX} int")
    out = topn.recommend_top_n(users, items, seen, n=5, block_bytes=4 * 9 * 5).collect()  # 5-user blocks
    by_user: dict[int, list] = {}
    for r in sorted(out, key=lambda r: (r[C.USER_IDX], r[C.RANK])):
        by_user.setdefault(r[C.USER_IDX], []).append(r[C.ITEM_IDX])
    expected = brute_force(user_vecs @ item_vecs.T, seen_pairs, 5)
    assert by_user == {u: e for u, e in enumerate(expected) if e}
    assert 11 not in by_user
    ranks = [r[C.RANK] for r in sorted(out, key=lambda r: (r[C.USER_IDX], r[C.RANK])) if r[C.USER_IDX] == 0]
    assert ranks == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("item_ids, dtype", [([0, 65_535, 7], np.uint16), ([0, 65_536, 7], np.int32),
                                              ([-1, 3, 7], np.int32)])
def test_seen_index_stores_items_in_16_bits_only_when_every_id_fits(item_ids, dtype):
    """Half the bytes to broadcast for catalogues under 65,536 items; an id outside 0..65535 keeps 32 bits, so no id
    wraps round to another item's (a -1 would become 65535)."""
    index = select.SeenIndex.from_chunks([np.array([1, 0], np.int32), np.array([1], np.int32)],
                                         [np.array(item_ids[:2], np.int64), np.array(item_ids[2:], np.int32)])
    assert index.items.dtype == dtype
    lengths, items = index.lookup(np.array([1, 0]))
    assert lengths.tolist() == [2, 1] and items.tolist() == [item_ids[0], item_ids[2], item_ids[1]]


def test_seen_index_returns_each_users_items_in_the_users_order():
    index = select.SeenIndex.from_pairs(np.array([5, 2, 5, 0, 2, 5]), np.array([50, 20, 51, 1, 21, 52]))
    lengths, items = index.lookup(np.array([5, 3, 2, 99, -1, 0], dtype=np.int32))
    assert lengths.tolist() == [3, 0, 2, 0, 0, 1]  # 3 has no pair, 99 and -1 are outside the index
    assert items.tolist() == [50, 51, 52, 20, 21, 1]  # stable: each user's items keep their input order
    empty_lengths, empty_items = select.SeenIndex.from_pairs(np.array([], np.int64), np.array([], np.int32)).lookup(
        np.array([0, 4], dtype=np.int32))
    assert empty_lengths.tolist() == [0, 0] and empty_items.tolist() == []
    with pytest.raises(ValueError, match="user_idx"):
        select.SeenIndex.from_pairs(np.array([-2]), np.array([1]))
