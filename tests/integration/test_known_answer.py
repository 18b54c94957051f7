"""Known answer: a checkerboard log (even users use even items, odd users odd items, one item held back each).

Implicit ALS must rank each user's held-back item first among the items they have not seen: the only unseen
item of their own parity.
"""
from __future__ import annotations

from pyspark.sql import functions as F

from models.als import AlsParams, fit_als
from models.topn import recommend_top_n
from transforms import columns as C

USERS = 24
ITEMS = 16


def held_back(user: int) -> int:
    return (user + 2 * (user // 2)) % ITEMS  # same parity as the user, varies across users


def test_checkerboard_held_back_item_ranks_first(spark, tmp_path):
    rows = [(u, i, 1.0) for u in range(USERS) for i in range(ITEMS) if i % 2 == u % 2 and i != held_back(u)]
    training = spark.createDataFrame(rows, f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.WEIGHT} double")
    params = AlsParams(rank=4, reg_param=0.01, alpha=20.0, max_iter=10, implicit=True, seed=1)
    trained = fit_als(training, params, checkpoint_dir=str(tmp_path / "checkpoints"))
    top = recommend_top_n(trained.user_factors, trained.item_factors, training.select(C.USER_IDX, C.ITEM_IDX), n=3)
    first = {r[C.USER_IDX]: r[C.ITEM_IDX] for r in top.where(F.col(C.RANK) == 1).collect()}
    assert first == {u: held_back(u) for u in range(USERS)}


def test_long_runs_checkpoint_instead_of_overflowing_the_lineage(spark, tmp_path):
    """30+ iterations with a checkpoint directory (apache/spark#5076): finishes, factors finite."""
    rows = [(u, i, 1.0 + (u * i) % 3) for u in range(20) for i in range(12) if (u + i) % 3]
    training = spark.createDataFrame(rows, f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.WEIGHT} double")
    params = AlsParams(rank=3, max_iter=32, checkpoint_interval=5, seed=3)
    trained = fit_als(training, params, checkpoint_dir=str(tmp_path / "checkpoints"))
    assert trained.user_factors.count() == 20
    assert any((tmp_path / "checkpoints").iterdir())
