"""Spark MLlib ALS, explicit (ratings) or implicit (weighted ALS of Hu, Koren and Volinsky on confidence weights).

Caveats users trip over, handled here: ALS needs integer ids (transforms.ids gives dense int32 ids) and a
deterministic input (we cache it before fitting); checkpointInterval does nothing without a checkpoint
directory (we always set one); NaN factors are an error, never a silent NaN score.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace

from pyspark import StorageLevel
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lake import jvm
from models import als_blas
from models.base import FactorRecommender
from transforms import columns as C


_STORAGE_LEVELS = {"NONE", "DISK_ONLY", "MEMORY_ONLY", "MEMORY_AND_DISK", "MEMORY_AND_DISK_DESER"}
_blas_checked: set[int] = set()
log = logging.getLogger(__name__)


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
    # Where ALS keeps its per-iteration blocks and the final factors (see bench/training.py for the effect).
    intermediate_storage: str = "MEMORY_AND_DISK"
    final_storage: str = "MEMORY_AND_DISK"

    def __post_init__(self):
        if self.rank < 1 or self.max_iter < 1:
            raise ValueError(f"rank and max_iter must be >= 1, got rank={self.rank}, max_iter={self.max_iter}")
        if self.reg_param < 0 or self.alpha < 0:
            raise ValueError(f"reg_param and alpha must be >= 0, got {self.reg_param}, {self.alpha}")
        if self.checkpoint_interval < 1:
            raise ValueError(f"checkpoint_interval must be >= 1, got {self.checkpoint_interval}")
        if self.intermediate_storage not in _STORAGE_LEVELS or self.intermediate_storage == "NONE":
            raise ValueError(f"intermediate_storage must be one of {sorted(_STORAGE_LEVELS - {'NONE'})}, "
                             f"got {self.intermediate_storage!r}")
        if self.final_storage not in _STORAGE_LEVELS:
            raise ValueError(f"final_storage must be one of {sorted(_STORAGE_LEVELS)}, got {self.final_storage!r}")

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
    warn_if_java_blas(spark)
    blocks = params.num_blocks or spark.sparkContext.defaultParallelism
    data = training.select(C.USER_IDX, C.ITEM_IDX, F.col(params.rating_col).cast("float").alias(params.rating_col))
    data = data.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        als = ALS(
            rank=params.rank, maxIter=params.max_iter, regParam=params.reg_param, alpha=params.alpha,
            implicitPrefs=params.implicit, seed=params.seed, userCol=C.ALS_USER_COL, itemCol=C.ALS_ITEM_COL,
            ratingCol=params.rating_col, numUserBlocks=blocks, numItemBlocks=blocks,
            checkpointInterval=params.checkpoint_interval, coldStartStrategy="drop", nonnegative=False,
            intermediateStorageLevel=params.intermediate_storage, finalStorageLevel=params.final_storage,
        )
        model = als.fit(data)
    finally:
        data.unpersist()
    trained = TrainedAls(model, params)
    _raise_on_nan(trained)
    return trained


def blas_implementation(spark: SparkSession) -> str:
    """Class name of the BLAS the driver JVM uses for ALS: JNIBLAS (native, fast) or a Java fallback."""
    java_vm = jvm.handle(spark)
    try:
        return java_vm.dev.ludovic.netlib.blas.NativeBLAS.getInstance().getClass().getName()
    except Exception:  # no native library: netlib falls back to its Java implementation
        return java_vm.dev.ludovic.netlib.blas.BLAS.getInstance().getClass().getName()


def warn_if_java_blas(spark: SparkSession) -> bool:
    """Log a warning (once per session) when ALS would run on a scalar Java BLAS; True when the BLAS is fast.

    Fast: JNIBLAS (a native libblas.so.3 such as OpenBLAS, best with our dspr/daxpy library in front of it, see
    models/als_blas.py) or VectorBLAS (netlib's SIMD Java BLAS, used on Java 16+ when jdk.incubator.vector is
    loaded, as Spark 4 does). Slow: F2jBLAS / Java8BLAS / Java11BLAS, the scalar fallback, many times slower.
    Fix for the slow case: install libopenblas0-pthread (``make blas``; the Docker image has it) or run on
    Java 17+. When our library is loaded, its dspr, daxpy and dppsv are checked once against netlib's Java code
    (models.als_blas.check_against_java): a wrong result stops the fit with AlsBlasError.
    """
    name = blas_implementation(spark)
    fast = name.endswith("JNIBLAS") or name.endswith("VectorBLAS")
    key = id(spark.sparkContext)
    if key in _blas_checked:
        return fast
    if not fast:
        log.warning("Spark ALS falls back to a scalar Java BLAS (%s), many times slower: install "
                    "libopenblas0-pthread (apt-get install libopenblas0-pthread) so that dev.ludovic.netlib loads "
                    "libblas.so.3, or run Spark on Java 17+ (VectorBLAS). Executors on other hosts need it too.", name)
    library = als_blas.loaded_library(spark)
    if name.endswith("JNIBLAS") and library:
        als_blas.check_against_java(spark)
        lapack = als_blas.loaded_lapack_library(spark)
        log.info("Spark ALS BLAS: %s (dspr, daxpy) in front of libblas.so.3; LAPACK: %s", library,
                 f"{lapack} (dppsv) in front of liblapack.so.3" if lapack else "liblapack.so.3")
    elif name.endswith("JNIBLAS"):
        built = als_blas.library_path()
        chosen = als_blas.jvm_property(spark, als_blas.NETLIB_BLAS_LIBRARY)
        if built is not None and not chosen:  # built, but this JVM was started without it (spark-submit's driver)
            log.warning("The driver JVM was started without %s (spark-submit starts it before this session): "
                        "executors this session starts load it, but a local master's ALS runs on libblas.so.3 "
                        "alone, about 1.3x slower per iteration. Pass --driver-java-options \"%s\" to spark-submit.",
                        built, als_blas.java_option(built))
        else:
            log.info("Spark ALS BLAS: libblas.so.3 alone; `make als-blas` builds the faster dspr/daxpy/dppsv library")
    _blas_checked.add(key)
    return fast


def _raise_on_nan(trained: TrainedAls) -> None:
    """One Spark job over both factor tables (a fit's fixed cost matters when tuning runs many fits)."""
    bad = F.exists(F.col("features"), lambda x: F.isnan(x) | F.isnull(x))
    sides = trained.model.userFactors.select(F.lit("user").alias("side"), bad.alias("bad")).unionAll(
        trained.model.itemFactors.select(F.lit("item").alias("side"), bad.alias("bad")))
    counts = {r["side"]: r["n"] for r in sides.where("bad").groupBy("side").agg(F.count(F.lit(1)).alias("n")).collect()}
    for name, n in sorted(counts.items()):
        raise NaNFactorsError(f"{n} {name} factor vectors contain NaN with params {asdict(trained.params)}")


class AlsRecommender(FactorRecommender):
    """Spark ALS behind the shared recommender interface (models.base): implicit or explicit by ``params``.

    ``fit`` runs :func:`fit_als` (checkpointed, NaN-checked); ``save`` and ``load`` use the interface's layout
    (models.base: the factors as Parquet beside recommender.json), like every other model.
    """

    name = "als"

    def __init__(self, *, params: AlsParams | None = None, checkpoint_dir: str | None = None) -> None:
        super().__init__()
        self.params = params or AlsParams()
        self.checkpoint_dir = checkpoint_dir

    def config(self) -> dict:
        return {"params": asdict(self.params), "checkpoint_dir": self.checkpoint_dir}

    def fit(self, training: DataFrame) -> "AlsRecommender":
        if not self.checkpoint_dir:
            raise ValueError("ALS needs checkpoint_dir: without it checkpointInterval is ignored and long runs "
                             "overflow the lineage (apache/spark#5076)")
        trained = fit_als(training, self.params, checkpoint_dir=self.checkpoint_dir)
        self._user_factors = trained.user_factors
        self._item_factors = trained.item_factors
        self._remember_training(training)
        return self

    @classmethod
    def from_config(cls, config: dict) -> "AlsRecommender":
        return cls(params=AlsParams(**config["params"]), checkpoint_dir=config.get("checkpoint_dir"))


class BiasedAlsRecommender(FactorRecommender):
    """Explicit ALS on what the bias baseline leaves: rating ~ mu + b_u + b_i + p_u . q_i.

    Fits :class:`models.baseline.BiasBaseline`, then explicit ALS on the residuals r - (mu + b_u + b_i), and
    joins both into one factor model (user [p_u, 1, mu + b_u], item [q_i, b_i, 1]) so it predicts, recommends,
    saves and loads like every other model. On small explicit data sets plain ALS hardly beats the biases; this
    usually does (see the README's measured RMSE).
    """

    name = "als_bias"

    def __init__(self, *, params: AlsParams | None = None, checkpoint_dir: str | None = None,
                 reg_user: float = 15.0, reg_item: float = 10.0) -> None:
        super().__init__()
        self.params = params or AlsParams(implicit=False)
        self.checkpoint_dir = checkpoint_dir
        self.reg_user, self.reg_item = reg_user, reg_item

    def config(self) -> dict:
        return {"params": asdict(self.params), "checkpoint_dir": self.checkpoint_dir, "reg_user": self.reg_user,
                "reg_item": self.reg_item}

    @classmethod
    def from_config(cls, config: dict) -> "BiasedAlsRecommender":
        return cls(**{**config, "params": AlsParams(**config["params"])})

    def fit(self, training: DataFrame) -> "BiasedAlsRecommender":
        from models.baseline import BiasBaseline

        if not self.checkpoint_dir:
            raise ValueError("ALS needs checkpoint_dir (apache/spark#5076)")
        params = replace(self.params, implicit=False)
        bias = BiasBaseline(reg_user=self.reg_user, reg_item=self.reg_item).fit(training)
        residual = (bias.predict(training.select(C.USER_IDX, C.ITEM_IDX, C.RATING))
                    .select(C.USER_IDX, C.ITEM_IDX, (F.col(C.RATING) - F.col("prediction")).alias(C.RATING))
                    .persist(StorageLevel.MEMORY_AND_DISK))
        try:
            trained = fit_als(residual, params, checkpoint_dir=self.checkpoint_dir)
        finally:
            residual.unpersist()
        self._user_factors = (trained.user_factors.join(bias.user_factors.withColumnRenamed(C.FEATURES, "_b"), C.USER_IDX)
                              .select(C.USER_IDX, F.concat(C.FEATURES, "_b").alias(C.FEATURES)).cache())
        self._item_factors = (trained.item_factors.join(bias.item_factors.withColumnRenamed(C.FEATURES, "_b"), C.ITEM_IDX)
                              .select(C.ITEM_IDX, F.concat(C.FEATURES, "_b").alias(C.FEATURES)).cache())
        self._remember_training(training)
        return self
