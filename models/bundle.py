"""A trained model as the batch flow keeps it: one recommender plus the id maps it was trained with and its lineage.

    <model_dir>/recommender.json, user_factors/, item_factors/   the recommender (models.base layout)
    <model_dir>/user_ids/, item_ids/                              (user_id, user_idx), (item_id, item_idx)
    <model_dir>/params.json                                       lineage: params, training table and version, metrics

Train writes it, score reads it; evaluation and tuning use the recommender alone.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

from lake import fs
from models import load_recommender
from models.base import MODEL_FILE, FactorRecommender

LINEAGE_FILE = "params.json"


class NotAModelError(FileNotFoundError):
    """A folder that holds no saved model (or one in a layout this version does not read)."""


@dataclass
class ModelBundle:
    model_dir: str
    model: FactorRecommender
    user_ids: DataFrame  # user_id, user_idx
    item_ids: DataFrame  # item_id, item_idx
    info: dict  # the lineage (params.json)


def save_bundle(model: FactorRecommender, model_dir: str, *, user_ids: DataFrame, item_ids: DataFrame,
                info: dict) -> None:
    """Write ``model`` (Recommender.save), the id maps and ``info`` under ``model_dir``."""
    model.save(model_dir)
    user_ids.write.mode("overwrite").parquet(f"{model_dir}/user_ids")
    item_ids.write.mode("overwrite").parquet(f"{model_dir}/item_ids")
    fs.write_bytes(user_ids.sparkSession, f"{model_dir}/{LINEAGE_FILE}",
                   json.dumps(info, indent=2, default=str).encode("utf-8"))


def load_bundle(spark: SparkSession, model_dir: str) -> ModelBundle:
    """The bundle saved under ``model_dir``; NotAModelError when it holds none."""
    try:
        info = json.loads(fs.read_text(spark, f"{model_dir}/{LINEAGE_FILE}"))
        model = load_recommender(spark, model_dir)
    except Exception as error:  # noqa: BLE001 - Spark's AnalysisException for a missing path, among others
        if "PATH_NOT_FOUND" not in str(error) and "does not exist" not in str(error):
            raise
        raise NotAModelError(f"{model_dir} holds no model saved as {MODEL_FILE} + factors + id maps (a model of "
                             "an older layout, or no model): train it again with jobs.train") from error
    return ModelBundle(model_dir, model, spark.read.parquet(f"{model_dir}/user_ids"),
                       spark.read.parquet(f"{model_dir}/item_ids"), info)
