"""Popularity baseline: every user gets the most popular items they have not seen.

Popularity = number of distinct training users per item (ties: lower item_idx first, as in all top-N code).
Written as a factor model (user vector [1], item vector [popularity]) so it is ranked, filtered and evaluated
by exactly the same code as ALS. A known user and an unknown one get the same list; ``recommend`` still only
answers users it has factors for (the users seen in training), like every model here.
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from models.base import FactorRecommender
from transforms import columns as C


class PopularityRecommender(FactorRecommender):
    name = "popularity"

    def fit(self, training: DataFrame) -> "PopularityRecommender":
        for col in (C.USER_IDX, C.ITEM_IDX):
            if col not in training.columns:
                raise ValueError(f"popularity needs column {col!r}; the training frame has {training.columns}")
        counts = training.groupBy(C.ITEM_IDX).agg(F.countDistinct(C.USER_IDX).alias("users"))
        self._item_factors = counts.select(C.ITEM_IDX, F.array(F.col("users").cast("float")).alias(C.FEATURES)).cache()
        self._user_factors = (training.select(C.USER_IDX).distinct()
                              .select(C.USER_IDX, F.array(F.lit(1.0).cast("float")).alias(C.FEATURES)).cache())
        self._remember_training(training)
        return self

    def _item_neighbour_vectors(self) -> tuple[DataFrame, DataFrame]:
        """"Similar" to any item = the most popular other items (score: their popularity)."""
        queries = self.item_factors.select(C.ITEM_IDX, F.array(F.lit(1.0).cast("float")).alias(C.FEATURES))
        return queries, self.item_factors
