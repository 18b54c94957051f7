"""One small recommender interface, in the style of the implicit library: fit, recommend, similar_items, save, load.

Every model here is a *factor model*: it ends up as user vectors and item vectors whose dot product is the score
(ALS learns them; the popularity and bias baselines are written as 1- or 2-dimensional factors). So top-N,
seen-item exclusion and item neighbours are one piece of code for all models, the same code the scoring job uses
(:func:`models.topn.recommend_top_n`): what evaluation measures is what production serves.

All frames use dense integer ids (``user_idx``, ``item_idx``, see transforms.ids); outputs:

- ``recommend``     -> (user_idx, item_idx, score, rank): n items per known user, seen items excluded, ranks 1..n;
- ``similar_items`` -> (item_idx, similar_item_idx, score, rank): n neighbours per item, never the item itself;
- ``predict``       -> the input pairs plus ``prediction`` (null where the user or item has no factors).

A user (or item) without factors gets no rows from ``recommend`` (``similar_items``): callers pad from the
popularity fallback, and evaluation counts such users as ``users_without_recs``.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lake import fs
from models.topn import recommend_top_n
from transforms import columns as C

SIMILAR_ITEM_IDX = "similar_item_idx"
PREDICTION = "prediction"
MODEL_FILE = "recommender.json"


class NotFittedError(RuntimeError):
    """The model was used before fit() or load()."""


class Recommender(ABC):
    """The interface every model implements; :class:`FactorRecommender` implements all of it but ``fit``."""

    name: str = "recommender"

    @abstractmethod
    def fit(self, training: DataFrame) -> "Recommender":
        """Learn from (user_idx, item_idx, weight|rating) rows; returns self."""

    @abstractmethod
    def recommend(self, users: DataFrame, *, n: int, seen: DataFrame | None = None,
                  exclude_seen: bool = True) -> DataFrame:
        """Top ``n`` items for each user in ``users`` (a frame with user_idx), excluding ``seen`` pairs."""

    @abstractmethod
    def similar_items(self, items: DataFrame, *, n: int) -> DataFrame:
        """Top ``n`` neighbours of each item in ``items`` (a frame with item_idx), the item itself excluded."""

    @abstractmethod
    def save(self, path: str) -> None:
        """Write the model under ``path`` (any Hadoop-compatible URI)."""


class FactorRecommender(Recommender):
    """Shared implementation over ``user_factors`` (user_idx, features) and ``item_factors`` (item_idx, features).

    Subclasses implement ``fit`` (setting the two frames) and may override ``_item_neighbour_vectors`` to choose
    what "similar" means (default: cosine of the item factors, models.similar; popularity: "the most popular
    other items").
    """

    def __init__(self) -> None:
        self._user_factors: DataFrame | None = None
        self._item_factors: DataFrame | None = None
        self._training_pairs: DataFrame | None = None

    # -- state -------------------------------------------------------------------------------------------------
    @property
    def user_factors(self) -> DataFrame:
        if self._user_factors is None:
            raise NotFittedError(f"{self.name}: call fit() or load() first")
        return self._user_factors

    @property
    def item_factors(self) -> DataFrame:
        if self._item_factors is None:
            raise NotFittedError(f"{self.name}: call fit() or load() first")
        return self._item_factors

    def _remember_training(self, training: DataFrame) -> None:
        self._training_pairs = training.select(C.USER_IDX, C.ITEM_IDX)

    def config(self) -> dict:
        """Constructor arguments as JSON-able values (saved with the model)."""
        return {}

    # -- scoring -----------------------------------------------------------------------------------------------
    def recommend(self, users: DataFrame, *, n: int, seen: DataFrame | None = None,
                  exclude_seen: bool = True) -> DataFrame:
        """Top ``n`` unseen items for each user in ``users``. ``seen`` defaults to the pairs the model was fit on.

        After ``load`` the training pairs are unknown: pass ``seen`` (or ``exclude_seen=False``) explicitly.
        """
        if exclude_seen and seen is None:
            if self._training_pairs is None:
                raise ValueError(f"{self.name}: the model does not know its training pairs (it was loaded); "
                                 "pass seen=<(user_idx, item_idx) frame> or exclude_seen=False")
            seen = self._training_pairs
        if not exclude_seen:
            seen = self.user_factors.sparkSession.createDataFrame([], f"{C.USER_IDX} int, {C.ITEM_IDX} int")
        wanted = users.select(C.USER_IDX).distinct()
        user_vecs = self.user_factors.join(wanted, on=C.USER_IDX, how="left_semi")
        seen_pairs = seen.select(C.USER_IDX, C.ITEM_IDX).join(wanted, on=C.USER_IDX, how="left_semi")
        return recommend_top_n(user_vecs, self.item_factors, seen_pairs, n=n)

    def _item_neighbour_vectors(self) -> tuple[DataFrame, DataFrame] | None:
        """(query vectors, candidate vectors), both (item_idx, features), for a model-specific notion of
        "similar"; None (the default) means cosine of the item factors (models.similar.similar_items_als)."""
        return None

    def similar_items(self, items: DataFrame, *, n: int) -> DataFrame:
        """Top ``n`` neighbours per item, the item itself excluded (through the same top-N code as recommend)."""
        wanted = items.select(C.ITEM_IDX).distinct()
        vectors = self._item_neighbour_vectors()
        if vectors is None:
            from models.similar import similar_items_als

            # items with an all-zero factor vector have no direction: they get no neighbours
            return similar_items_als(self.item_factors, n=n).join(wanted, on=C.ITEM_IDX, how="left_semi")
        queries, candidates = vectors
        as_users = queries.join(wanted, on=C.ITEM_IDX, how="left_semi").withColumnRenamed(C.ITEM_IDX, C.USER_IDX)
        itself = as_users.select(C.USER_IDX, F.col(C.USER_IDX).alias(C.ITEM_IDX))
        top = recommend_top_n(as_users, candidates, itself, n=n)
        return top.select(F.col(C.USER_IDX).alias(C.ITEM_IDX), F.col(C.ITEM_IDX).alias(SIMILAR_ITEM_IDX),
                          C.SCORE, C.RANK)

    def predict(self, pairs: DataFrame) -> DataFrame:
        """``pairs`` plus ``prediction`` = user vector . item vector (null when either has no factors)."""
        users = self.user_factors.select(C.USER_IDX, F.col(C.FEATURES).alias("_u"))
        items = self.item_factors.select(C.ITEM_IDX, F.col(C.FEATURES).alias("_i"))
        joined = pairs.join(users, on=C.USER_IDX, how="left").join(items, on=C.ITEM_IDX, how="left")
        dot = F.aggregate(F.zip_with("_u", "_i", lambda a, b: a * b), F.lit(0.0), lambda acc, x: acc + x)
        return joined.withColumn(PREDICTION, dot.cast("double")).drop("_u", "_i")

    # -- persistence -------------------------------------------------------------------------------------------
    def save(self, path: str) -> None:
        self.user_factors.write.mode("overwrite").parquet(f"{path}/user_factors")
        self.item_factors.write.mode("overwrite").parquet(f"{path}/item_factors")
        write_model_file(self.user_factors.sparkSession, path, {"class": type(self).__name__, "config": self.config()})

    @classmethod
    def from_config(cls, config: dict) -> "FactorRecommender":
        """A new, unfitted model from what ``config()`` returned (as JSON)."""
        return cls(**config)

    @classmethod
    def load(cls, spark: SparkSession, path: str) -> "FactorRecommender":
        doc = read_model_file(spark, path)
        if doc["class"] != cls.__name__:
            raise TypeError(f"{path} holds a {doc['class']}, not a {cls.__name__}: use models.load_recommender")
        model = cls.from_config(doc["config"])
        model._user_factors = spark.read.parquet(f"{path}/user_factors")
        model._item_factors = spark.read.parquet(f"{path}/item_factors")
        return model


def write_model_file(spark: SparkSession, path: str, doc: dict) -> None:
    fs.write_bytes(spark, f"{path}/{MODEL_FILE}", json.dumps(doc, indent=2, default=str).encode("utf-8"))


def read_model_file(spark: SparkSession, path: str) -> dict:
    return json.loads(fs.read_text(spark, f"{path}/{MODEL_FILE}"))
