"""Cross-validated ALS hyper-parameters on gold/training: every configuration's fold scores go to a Delta table.

    summary = tune(spark, Lake("./lake"), TuneRunOptions(search=TuneOptions(ranks=(32, 64)), k=10))

Implicit training tables (a ``weight`` column) are tuned on nDCG@k (``metric`` for another ranking metric),
explicit ones (``rating``) on RMSE. Folds are per user (each user's pairs dealt to ``folds`` folds),
deterministic for the seed. Rows go to meta/tuning_results (tuning_run_id, config, fold, score, all metrics,
fit time, is_best); the summary names the best configuration. ``flow.train`` with ``tune`` runs the same search
and refits the best configuration on all the data; ``flow.evaluate`` runs it on its training part.
"""
from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from flow.training_table import read_training, training_mode
from lake import tables
from lake.registry import Lake
from models.als import AlsParams
from models.tuning import (DEFAULT_EXPLICIT_SPACE, DEFAULT_IMPLICIT_SPACE, DEFAULT_TUNE_FOLDS, DEFAULT_TUNE_TEST_FOLDS,
                           TUNING_TABLE_SCHEMA, SearchSpace, cross_validate, fold_rows, grid_configs, random_configs)

SEARCHES = ("grid", "random")


@dataclass(frozen=True, kw_only=True)
class TuneOptions:
    """The search shared by flow.tune, flow.train and flow.evaluate (the flags of jobs.cli.add_tuning_args)."""
    folds: int = DEFAULT_TUNE_FOLDS  # folds dealt per user
    test_folds: int | None = None  # of which this many are held out in turn (None: at most DEFAULT_TUNE_TEST_FOLDS)
    search: str = "grid"  # one of SEARCHES
    n_configs: int = 8  # random search: configurations to draw
    ranks: tuple[int, ...] | None = None  # None: the built-in default space, here and below
    reg_params: tuple[float, ...] | None = None  # random search: log-uniform between min and max
    alphas: tuple[float, ...] | None = None  # implicit only
    max_iters: tuple[int, ...] | None = None
    parallelism: int = 1  # fits at once
    metric: str | None = None  # selection metric (None: ndcg@k implicit, rmse explicit)

    @property
    def scored_folds(self) -> int:
        """The folds scored: ``test_folds``, or at most DEFAULT_TUNE_TEST_FOLDS of ``folds``."""
        return self.test_folds or min(DEFAULT_TUNE_TEST_FOLDS, self.folds)

    def configs(self, *, implicit: bool, seed: int) -> list[dict]:
        """The configurations the options describe (the built-in default space where a list is not given)."""
        default = DEFAULT_IMPLICIT_SPACE if implicit else DEFAULT_EXPLICIT_SPACE
        space = SearchSpace(rank=self.ranks or default.rank, reg_param=self.reg_params or default.reg_param,
                            alpha=self.alphas or default.alpha, max_iter=self.max_iters or default.max_iter)
        if self.search == "random":
            return random_configs(space, n=self.n_configs, seed=seed, implicit=implicit)
        return grid_configs(space, implicit=implicit)


@dataclass(frozen=True, kw_only=True)
class TuneRunOptions:
    """A tuning run on its own (jobs.tune): the search, the metric cut-off, the seed of folds and ALS."""
    search: TuneOptions = field(default_factory=TuneOptions)
    k: int = 10  # cut-off of the ranking metrics (implicit)
    seed: int = 42  # seed of the folds, the random search and ALS
    num_blocks: int | None = None  # ALS user/item blocks (None: Spark's parallelism)


def protocol_tuning(search: TuneOptions | None, *, implicit: bool, seed: int) -> dict:
    """The tuning keywords of models.evaluation's protocols for ``search`` (None: no tuning, tune_configs None)."""
    configs = search.configs(implicit=implicit, seed=seed) if search else None
    search = search or TuneOptions()
    return dict(tune_configs=configs, tune_folds=search.folds, tune_test_folds=search.scored_folds,
                parallelism=search.parallelism, metric=search.metric)


def store_fold_scores(spark: SparkSession, path: str, tuning: dict, *, run_id: str, mode: str, source: str,
                      source_version: int | None, model_version: str | None = None) -> None:
    """Append one row per (configuration, fold) to the Delta table at ``path``."""
    extra = {"source": source, "source_version": source_version, "model_version": model_version,
             "created_at": dt.datetime.now(dt.timezone.utc)}
    rows = fold_rows(tuning, run_id=run_id, mode=mode, extra=extra)
    tables.append(spark.createDataFrame(rows, schema=TUNING_TABLE_SCHEMA), path)


def tune(spark: SparkSession, lake: Lake, options: TuneRunOptions) -> dict:
    """Cross-validate the search on gold/training, append the fold scores to meta/tuning_results; returns the
    summary: the run id, the best configuration and its score, and every configuration's mean score
    (``configurations``, rows of models.tuning.TuningResult.summary()). Progress goes to stdout as it runs."""
    started = time.time()
    version, data = read_training(spark, lake)
    implicit = training_mode(data.columns)
    search = options.search
    configs = search.configs(implicit=implicit, seed=options.seed)
    print(f"tune gold/training v{version} ({'implicit' if implicit else 'explicit'}): {len(configs)} configurations "
          f"x {search.scored_folds} of {search.folds} folds", flush=True)
    result = cross_validate(data, configs, implicit=implicit, folds=search.folds,
                            test_folds=search.scored_folds, seed=options.seed, k=options.k,
                            metric=search.metric, checkpoint_dir=lake.checkpoints, parallelism=search.parallelism,
                            base_params=AlsParams(num_blocks=options.num_blocks))
    run_id = uuid.uuid4().hex
    store_fold_scores(spark, lake.tuning_results, result.to_dict(), run_id=run_id,
                      mode="implicit" if implicit else "explicit",
                      source=lake.training, source_version=version)
    configurations = result.summary()
    return {"tuning_run_id": run_id, "training_version": version, "metric": result.metric,
            "best": result.best_config, "best_config_id": result.best_config_id,
            "best_score": configurations[result.best_config_id]["mean"],
            "configs": len(configs), "folds": search.folds, "test_folds": search.scored_folds,
            "table": lake.tuning_results, "configurations": configurations,
            "seconds": round(time.time() - started, 1)}
