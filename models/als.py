"""Spark MLlib ALS, explicit (ratings) or implicit (weighted ALS of Hu, Koren and Volinsky on confidence weights).

Caveats users trip over, handled here: ALS needs integer ids (transforms.ids gives dense int32 ids) and a
deterministic input (we cache it before fitting); checkpointInterval does nothing without a checkpoint
directory (we always set one); NaN factors are an error, never a silent NaN score.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from pyspark import StorageLevel
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from transforms import columns as C


@dataclass(frozen=True, kw_only=True)
class AlsParams:
    rank: int = 32
    reg_param: float = 0.1
    alpha: float = 10.0  # implicit only: confidence = 1 + alpha * weight
    max_iter: int = 15
    implicit: bool = True
    seed: int = 42
    num_blocks: int | None = None  # user and item blocks; None: the session's default parallelism
    checkpoint_interval: int = 10

    def __post_init__(self):
        if self.rank < 1 or self.max_iter < 1:
            raise ValueError(f"rank and max_iter must be >= 1, got rank={self.rank}, max_iter={self.max_iter}")
        if self.reg_param < 0 or self.alpha < 0:
            raise ValueError(f"reg_param and alpha must be >= 0, got {self.reg_param}, {self.alpha}")

    @property
    def rating_col(self) -> str:
        return C.WEIGHT if self.implicit else C.RATING


class NaNFactorsError(RuntimeError):
    """ALS produced NaN factors (usually a divergent fit: raise reg_param or lower alpha)."""


@dataclass
class TrainedAls:
    model: ALSModel
    params: AlsParams
    extra: dict = field(default_factory=dict)

    @property
    def user_factors(self) -> DataFrame:
        return self.model.userFactors.withColumnRenamed("id", C.USER_IDX)

    @property
    def item_factors(self) -> DataFrame:
        return self.model.itemFactors.withColumnRenamed("id", C.ITEM_IDX)


def fit_als(training: DataFrame, params: AlsParams, *, checkpoint_dir: str) -> TrainedAls:
    """Fit ALS on (user_idx, item_idx, weight|rating). Raises NaNFactorsError on NaN factors."""
    for col in (C.USER_IDX, C.ITEM_IDX, params.rating_col):
        if col not in training.columns:
            mode = "implicit" if params.implicit else "explicit"
            raise ValueError(f"{mode} ALS needs column {col!r}; the training table has {training.columns}")
    spark = training.sparkSession
    spark.sparkContext.setCheckpointDir(checkpoint_dir)
    blocks = params.num_blocks or spark.sparkContext.defaultParallelism
    data = training.select(C.USER_IDX, C.ITEM_IDX, F.col(params.rating_col).cast("float").alias(params.rating_col))
    data = data.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        als = ALS(
            rank=params.rank, maxIter=params.max_iter, regParam=params.reg_param, alpha=params.alpha,
            implicitPrefs=params.implicit, seed=params.seed, userCol=C.ALS_USER_COL, itemCol=C.ALS_ITEM_COL,
            ratingCol=params.rating_col, numUserBlocks=blocks, numItemBlocks=blocks,
            checkpointInterval=params.checkpoint_interval, coldStartStrategy="drop", nonnegative=False,
        )
        model = als.fit(data)
    finally:
        data.unpersist()
    trained = TrainedAls(model, params)
    _raise_on_nan(trained)
    return trained


def _raise_on_nan(trained: TrainedAls) -> None:
    has_nan = F.exists(F.col("features"), lambda x: F.isnan(x))
    for name, factors in (("user", trained.model.userFactors), ("item", trained.model.itemFactors)):
        bad = factors.where(has_nan).count()
        if bad:
            raise NaNFactorsError(f"{bad} {name} factor vectors contain NaN with params {asdict(trained.params)}")


def save_model(trained: TrainedAls, model_dir: str, *, user_ids: DataFrame, item_ids: DataFrame, info: dict) -> None:
    """model_dir/{als, user_ids, item_ids, params.json}: factors, the id maps used, params and lineage."""
    trained.model.write().overwrite().save(f"{model_dir}/als")
    user_ids.write.mode("overwrite").parquet(f"{model_dir}/user_ids")
    item_ids.write.mode("overwrite").parquet(f"{model_dir}/item_ids")
    doc = {"params": asdict(trained.params), **info}
    _write_text(trained.model.userFactors.sparkSession, f"{model_dir}/params.json", json.dumps(doc, indent=2, default=str))


@dataclass
class LoadedModel:
    model_dir: str
    user_factors: DataFrame  # user_idx, features
    item_factors: DataFrame  # item_idx, features
    user_ids: DataFrame  # user_id, user_idx
    item_ids: DataFrame  # item_id, item_idx
    info: dict


def load_model(spark: SparkSession, model_dir: str) -> LoadedModel:
    model = ALSModel.load(f"{model_dir}/als")
    info = json.loads(_read_text(spark, f"{model_dir}/params.json"))
    return LoadedModel(
        model_dir,
        model.userFactors.withColumnRenamed("id", C.USER_IDX),
        model.itemFactors.withColumnRenamed("id", C.ITEM_IDX),
        spark.read.parquet(f"{model_dir}/user_ids"),
        spark.read.parquet(f"{model_dir}/item_ids"),
        info,
    )


def _write_text(spark: SparkSession, path: str, text: str) -> None:
    """Write a small text file through Hadoop's FileSystem, so any lake URI (file:, s3a:, abfss:) works."""
    jvm = spark._jvm  # noqa: SLF001
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark._jsc.hadoopConfiguration())  # noqa: SLF001
    out = fs.create(hpath, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()


def _read_text(spark: SparkSession, path: str) -> str:
    return spark.read.text(path, wholetext=True).first()[0]
