"""Bias-only baseline for explicit ratings: prediction = global mean + user bias + item bias.

The biases are fitted by a few rounds of regularised alternating averages (Koren 2010, section 2.1):
    b_i = sum_u (r_ui - mu - b_u) / (reg_item + n_i),    b_u = sum_i (r_ui - mu - b_i) / (reg_user + n_u).
It is the yardstick explicit ALS must beat on RMSE. Written as 2-dimensional factors (user [1, mu + b_u],
item [b_i, 1]) so it shares recommend / predict / save / load with the other models.
"""
from __future__ import annotations

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from models.base import FactorRecommender
from transforms import columns as C


class BiasBaseline(FactorRecommender):
    name = "bias"

    def __init__(self, *, reg_user: float = 15.0, reg_item: float = 10.0, iterations: int = 3,
                 rating_col: str = C.RATING) -> None:
        super().__init__()
        if reg_user < 0 or reg_item < 0 or iterations < 1:
            raise ValueError(f"need reg_user, reg_item >= 0 and iterations >= 1; got {reg_user}, {reg_item}, {iterations}")
        self.reg_user, self.reg_item, self.iterations, self.rating_col = reg_user, reg_item, iterations, rating_col
        self.global_mean: float | None = None

    def config(self) -> dict:
        return {"reg_user": self.reg_user, "reg_item": self.reg_item, "iterations": self.iterations,
                "rating_col": self.rating_col}

    def fit(self, training: DataFrame) -> "BiasBaseline":
        for col in (C.USER_IDX, C.ITEM_IDX, self.rating_col):
            if col not in training.columns:
                raise ValueError(f"bias baseline needs column {col!r}; the training frame has {training.columns}")
        data = training.select(C.USER_IDX, C.ITEM_IDX, F.col(self.rating_col).cast("double").alias("r"))
        data = data.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            mu = data.agg(F.avg("r")).first()[0]
            if mu is None:
                raise ValueError("bias baseline: the training frame is empty")
            # localCheckpoint cuts the lineage after each round: the plans stay shallow however many rounds run
            user_bias = data.select(C.USER_IDX).distinct().withColumn("b_u", F.lit(0.0)).localCheckpoint()
            item_bias = None
            for _ in range(self.iterations):
                item_bias = (data.join(user_bias, on=C.USER_IDX).groupBy(C.ITEM_IDX)
                             .agg((F.sum(F.col("r") - mu - F.col("b_u")) / (F.count(F.lit(1)) + self.reg_item))
                                  .alias("b_i"))
                             .localCheckpoint())
                user_bias = (data.join(item_bias, on=C.ITEM_IDX).groupBy(C.USER_IDX)
                             .agg((F.sum(F.col("r") - mu - F.col("b_i")) / (F.count(F.lit(1)) + self.reg_user))
                                  .alias("b_u"))
                             .localCheckpoint())
        finally:
            data.unpersist()
        self.global_mean = float(mu)
        self._user_factors = user_bias.select(
            C.USER_IDX, F.array(F.lit(1.0), F.lit(mu) + F.col("b_u")).cast("array<float>").alias(C.FEATURES))
        self._item_factors = item_bias.select(
            C.ITEM_IDX, F.array(F.col("b_i"), F.lit(1.0)).cast("array<float>").alias(C.FEATURES))
        self._remember_training(training)
        return self

    def _item_neighbour_vectors(self) -> tuple[DataFrame, DataFrame]:
        """"Similar" to any item = the items with the largest bias (the best rated after shrinkage)."""
        queries = self.item_factors.select(C.ITEM_IDX, F.array(F.lit(1.0), F.lit(0.0)).cast("array<float>").alias(C.FEATURES))
        return queries, self.item_factors
