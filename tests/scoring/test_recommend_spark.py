"""models.topn.recommend_top_n on Spark: broadcast and chunked (tiny memory budget) paths, with the seen items
broadcast as an index or joined in Spark, equal a brute force."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from lake import jvm
from models import select, topn
from transforms import columns as C

RANK = 3


def factors_df(spark, ids, vecs, id_col):
    return spark.createDataFrame([(int(i), [float(x) for x in v]) for i, v in zip(ids, vecs)],
                                 f"{id_col} int, {C.FEATURES} array<float>")


def brute_force(user_ids, user_vecs, item_ids, item_vecs, seen: set[tuple[int, int]], n: int) -> dict[int, list]:
    """user_idx -> [(item_idx, score)], by score descending then item_idx ascending, seen excluded."""
    scores = user_vecs.astype(np.float64) @ item_vecs.astype(np.float64).T
    out = {}
    for r, u in enumerate(user_ids):
        cands = sorted((-scores[r, c], int(i)) for c, i in enumerate(item_ids) if (int(u), int(i)) not in seen)
        if cands:
            out[int(u)] = [(i, -s) for s, i in cands[:n]]
    return out


def collected(df) -> dict[int, list]:
    out: dict[int, list] = {}
    for r in sorted(df.collect(), key=lambda r: (r[C.USER_IDX], r[C.RANK])):
        out.setdefault(r[C.USER_IDX], []).append((r[C.ITEM_IDX], r[C.SCORE], r[C.RANK]))
    return out


@pytest.fixture(scope="module")
def case(spark):
    """Small integer factors (exact float scores, many ties), item ids with gaps, seen items without factors."""
    rng = np.random.default_rng(5)
    user_ids = np.arange(0, 40) * 3 + 1
    item_ids = np.array(sorted(rng.choice(200, size=37, replace=False)))
    user_vecs = rng.integers(-2, 3, size=(len(user_ids), RANK)).astype(np.float32)
    item_vecs = rng.integers(-2, 3, size=(len(item_ids), RANK)).astype(np.float32)
    seen = {(int(u), int(i)) for u in user_ids for i in rng.choice(item_ids, size=int(u) % 9, replace=False)}
    seen |= {(int(user_ids[0]), int(i)) for i in item_ids}  # has seen every item: gets nothing
    seen |= {(int(user_ids[1]), 999)}  # an item without factors: ignored
    return {
        "users": factors_df(spark, user_ids, user_vecs, C.USER_IDX),
        "items": factors_df(spark, item_ids, item_vecs, C.ITEM_IDX),
        "seen": spark.createDataFrame(sorted(seen), f"{C.USER_IDX} int, {C.ITEM_IDX} int"),
        "expected": lambda n: brute_force(user_ids, user_vecs, item_ids, item_vecs, seen, n),
        "user_ids": user_ids,
    }


@pytest.mark.parametrize("n", [1, 6, 50])
def test_broadcast_path_equals_brute_force(case, n):
    got = collected(topn.recommend_top_n(case["users"], case["items"], case["seen"], n=n, block_bytes=4 * 37 * 4))
    expected = case["expected"](n)
    assert {u: [(i, s) for i, s, _ in rows] for u, rows in got.items()} == expected
    assert all([r for _, _, r in rows] == list(range(1, len(rows) + 1)) for rows in got.values())
    assert int(case["user_ids"][0]) not in got
    assert len(got) == len(case["user_ids"]) - 1  # every other user is there


@pytest.mark.parametrize("n", [1, 6, 50])
def test_seen_lists_joined_in_spark_give_the_same_rows(case, n):
    """Over seen_broadcast_pairs the seen lists are grouped and joined instead of broadcast: same result."""
    joined = topn.recommend_top_n(case["users"], case["items"], case["seen"], n=n, seen_broadcast_pairs=3)
    broadcast = topn.recommend_top_n(case["users"], case["items"], case["seen"], n=n)
    assert collected(joined) == collected(broadcast)
    assert {u: [(i, s) for i, s, _ in rows] for u, rows in collected(joined).items()} == case["expected"](n)


def test_seen_index_is_collected_up_to_its_limit(spark):
    """At the limit the index holds every pair (duplicates too), one over it there is none."""
    pairs = [(u, i) for u in range(40) for i in range(u % 7)] + [(3, 100), (3, 2)]
    seen = spark.createDataFrame(pairs, f"{C.USER_IDX} int, {C.ITEM_IDX} int").repartition(3)
    index = topn.collect_seen_index(seen, max_pairs=len(pairs))
    assert index is not None and len(index.items) == len(pairs)
    lengths, items = index.lookup(np.array([3, 6, 0, 999]))
    assert lengths.tolist() == [5, 6, 0, 0]
    assert sorted(items[:5].tolist()) == [0, 1, 2, 2, 100]
    assert topn.collect_seen_index(seen, max_pairs=len(pairs) - 1) is None
    assert topn.collect_seen_index(seen, max_pairs=0) is None


def test_chunked_path_under_a_tiny_item_budget_gives_the_same_rows(case):
    """Item factors over budget are scored in chunks (5 items each here) and merged: same items, order, ranks."""
    whole = collected(topn.recommend_top_n(case["users"], case["items"], case["seen"], n=6))
    chunked_df = topn.recommend_top_n(case["users"], case["items"], case["seen"], n=6,
                                      item_budget_bytes=5 * RANK * 4, block_bytes=64)
    assert chunked_df.schema.simpleString() == "struct<user_idx:int,item_idx:int,score:float,rank:int>"
    assert collected(chunked_df) == whole


def test_random_factors_agree_with_float64_scores(spark):
    rng = np.random.default_rng(11)
    user_vecs = rng.standard_normal((300, 8)).astype(np.float32)
    item_vecs = rng.standard_normal((1500, 8)).astype(np.float32)
    users = factors_df(spark, range(300), user_vecs, C.USER_IDX)
    items = factors_df(spark, range(1500), item_vecs, C.ITEM_IDX)
    seen_pairs = {(u, int(i)) for u in range(300) for i in rng.choice(1500, size=20, replace=False)}
    seen = spark.createDataFrame(sorted(seen_pairs), f"{C.USER_IDX} int, {C.ITEM_IDX} int")
    got = collected(topn.recommend_top_n(users, items, seen, n=20))
    expected = brute_force(range(300), user_vecs, range(1500), item_vecs, seen_pairs, 20)
    assert sorted(got) == sorted(expected)
    for u, rows in got.items():
        assert [i for i, _, _ in rows] == [i for i, _ in expected[u]]
        assert [s for _, s, _ in rows] == pytest.approx([s for _, s in expected[u]], rel=1e-5)


def test_no_items_gives_an_empty_result(spark, case):
    empty = spark.createDataFrame([], f"{C.ITEM_IDX} int, {C.FEATURES} array<float>")
    assert topn.recommend_top_n(case["users"], empty, case["seen"], n=3).count() == 0


def test_planned_size_is_the_files_size_for_a_file_scan_and_unknown_for_an_rdd(spark, case, tmp_path):
    case["items"].write.parquet(str(tmp_path / "items"))
    files = sum(p.stat().st_size for p in (tmp_path / "items").glob("*.parquet"))
    assert jvm.planned_size_bytes(spark.read.parquet(str(tmp_path / "items"))) == files
    assert jvm.planned_size_bytes(case["items"]) is None  # built from Python rows: an RDD-based plan


def test_item_factors_within_the_planned_budget_are_collected_without_a_shape_job(spark, case, tmp_path, monkeypatch):
    """Read from files (a size Spark can plan), the item factors are collected once, their shape taken from them:
    factor_shape is never called, and the rows are the same."""
    case["items"].write.parquet(str(tmp_path / "items"))
    items = spark.read.parquet(str(tmp_path / "items"))
    whole = collected(topn.recommend_top_n(case["users"], case["items"], case["seen"], n=6))

    def no_shape_job(*_args, **_kwargs):
        raise AssertionError("factor_shape was called")

    monkeypatch.setattr(topn, "factor_shape", no_shape_job)
    assert collected(topn.recommend_top_n(case["users"], items, case["seen"], n=6)) == whole


def test_an_estimate_below_the_real_size_still_scores_in_chunks(spark, case, monkeypatch):
    """When the planner's estimate says the items fit but they do not, they are scored in chunks: same rows."""
    whole = collected(topn.recommend_top_n(case["users"], case["items"], case["seen"], n=6))
    monkeypatch.setattr(jvm, "planned_size_bytes", lambda _df: 1)
    chunked = topn.recommend_top_n(case["users"], case["items"], case["seen"], n=6,
                                   item_budget_bytes=5 * RANK * 4, block_bytes=64)
    assert collected(chunked) == whole


def test_item_vectors_of_different_lengths_are_an_error_on_either_path(spark, tmp_path, case):
    uneven = spark.createDataFrame([(1, [1.0, 2.0]), (2, [1.0])], f"{C.ITEM_IDX} int, {C.FEATURES} array<float>")
    uneven.write.parquet(str(tmp_path / "uneven"))
    for items in (uneven, spark.read.parquet(str(tmp_path / "uneven"))):
        with pytest.raises(ValueError, match="differ in length"):
            topn.recommend_top_n(case["users"], items, case["seen"], n=3)


class _Shared:
    """Stands in for a Spark broadcast inside one process: the scorer only reads ``.value``."""

    def __init__(self, value):
        self.value = value


@pytest.mark.parametrize("seen_from", ["index", "list column"])
def test_the_scorer_writes_batches_in_slices_of_users_with_the_same_rows(monkeypatch, seen_from):
    """A batch larger than OUTPUT_SLICE_USERS goes out in several record batches; each user's seen items stay with
    that user across the slice boundaries (index lookup, or the batch's own list column), and the rows equal a brute
    force."""
    rng = np.random.default_rng(11)
    user_ids = np.arange(23, dtype=np.int32) * 2
    item_ids = np.arange(0, 60, 2, dtype=np.int32)
    user_vecs = rng.standard_normal((len(user_ids), RANK)).astype(np.float32)
    item_vecs = rng.standard_normal((len(item_ids), RANK)).astype(np.float32)
    seen_lists = [[int(i) for i in rng.choice(item_ids, size=k % 7, replace=False)] for k in range(len(user_ids))]
    seen = {(int(u), i) for u, items in zip(user_ids, seen_lists) for i in items}
    columns = {C.USER_IDX: pa.array(user_ids), C.FEATURES: pa.array(list(user_vecs), pa.list_(pa.float32()))}
    index = None
    if seen_from == "index":
        pairs = np.array(sorted(seen), dtype=np.int32).reshape(-1, 2)
        index = _Shared(select.SeenIndex.from_pairs(pairs[:, 0], pairs[:, 1]))
    else:
        columns[topn.SEEN] = pa.array(seen_lists, pa.list_(pa.int32()))
    batch = pa.RecordBatch.from_pydict(columns)
    monkeypatch.setattr(topn, "OUTPUT_SLICE_USERS", 5)
    scorer = topn._partition_scorer(_Shared((item_ids, item_vecs)), 4, RANK, 2, index, "numpy")
    out = list(scorer(iter([batch])))
    assert [b.num_rows for b in out] == [20, 20, 20, 20, 12]  # 5 users x 4 items a slice; 3 users last
    table = pa.Table.from_batches(out).to_pydict()
    got: dict[int, list] = {}
    for u, i, s in zip(table[C.USER_IDX], table[C.ITEM_IDX], table[C.SCORE]):
        got.setdefault(u, []).append((i, s))
    expected = brute_force(user_ids, user_vecs, item_ids, item_vecs, seen, 4)
    assert {u: [i for i, _ in rows] for u, rows in got.items()} == {u: [i for i, _ in rows]
                                                                   for u, rows in expected.items()}
    assert all(np.allclose([s for _, s in got[u]], [s for _, s in expected[u]], rtol=1e-5) for u in expected)
