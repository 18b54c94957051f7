"""Hyper-parameter search for ALS with per-user K-fold cross-validation.

    configs = grid_configs(SearchSpace(rank=[32, 64], reg_param=[0.01, 0.1], alpha=[1, 10], max_iter=[15]))
    result = cross_validate(pairs, configs, implicit=True, folds=3, seed=42, k=10, checkpoint_dir=...)
    result.best_params  # an AlsParams, ready to refit on all data

Implicit models are selected on a ranking metric (``ndcg@k`` by default, higher is better), never on RMSE;
explicit models on RMSE (lower is better). Folds come from :func:`transforms.splits.assign_user_folds`
(deterministic for the seed, materialised once and shared by every configuration). Each (configuration, fold)
fit is independent, so up to ``parallelism`` of them run at once from driver threads; on a 2-core machine one
at a time is fastest, on a cluster with idle executors raise it. Every fold score is kept
(:meth:`TuningResult.fold_rows`) so a job can store them in a Delta table.

Spark's regParam is scaled by each user's and item's number of ratings (ALS-WR), so good values are not the
implicit library's: search a wide log range (1e-3 .. 10).
"""
from __future__ import annotations

import functools
import itertools
import json
import math
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from pyspark import inheritable_thread_target
from pyspark.sql import DataFrame

from models.als import AlsParams, AlsRecommender, BiasedAlsRecommender
from models.metrics import ranking_metrics, rating_metrics
from transforms import columns as C
from transforms import splits

TUNED_FIELDS = ("rank", "reg_param", "alpha", "max_iter")
DEFAULT_TUNE_FOLDS = 10  # the jobs' default: folds dealt per user (users with fewer training pairs: train only)
DEFAULT_TUNE_TEST_FOLDS = 3  # of which this many are held out and scored in turn, so each fit trains on 90%
MODELS = {"als": AlsRecommender, "als_bias": BiasedAlsRecommender}


@dataclass(frozen=True)
class SearchSpace:
    """Values (grid search) or, for random search, the [low, high] range of reg_param and alpha (log-uniform)
    and the choices of rank and max_iter."""

    rank: tuple[int, ...] = (32, 64)
    reg_param: tuple[float, ...] = (0.01, 0.1, 1.0)
    alpha: tuple[float, ...] = (1.0, 10.0)
    max_iter: tuple[int, ...] = (15,)


# Implicit, on ml-latest-small (per-user random 75/25, seed 42), single fits scored on the test part: nDCG@10 rises
# with rank at regParam 0.3, alpha 1 (rank 16: 0.346, 64: 0.387, 100: 0.395, 128: 0.395, 200: 0.404); regParam 1
# and 0.1 are worse at every rank tried, alpha 0.5 or 2 too, and binary or BM25 weights lose to rating-valued ones.
# 8-10 iterations score as 15 do. The best rank grows with the data: 3-fold CV, where each fit trains on 2/3 of the
# training part, ranked rank 64 first (fold means 0.2399, rank 128 0.2363, rank 200 0.2350), so --tune picked it
# (0.385 on test). Folds that train on 90% (DEFAULT_TUNE_FOLDS 10, of which DEFAULT_TUNE_TEST_FOLDS 3 are scored)
# rank them as the test part does. Spark's ALS solves every user's and item's normal equations with a packed
# Cholesky, so a fit costs rank^3 per user and item: on 2 cores 10 s at rank 64, 80 s at 128, about 3 minutes at
# 200 (10 iterations); tuning this grid takes about 20 minutes there.
# Explicit (ALS on the bias baseline's residuals): rank 32, regParam 0.1 gives hold-out RMSE 0.856 vs 0.874 for
# the biases alone, and 5-fold CV RMSE 0.8465 +- 0.0038 vs 0.8683 +- 0.0040 (bench/results/evaluation.json);
# plain explicit ALS (0.887 hold-out) does not beat them there.
DEFAULT_IMPLICIT_SPACE = SearchSpace(rank=(64, 128, 200), reg_param=(0.3,), alpha=(1.0,), max_iter=(10,))
DEFAULT_EXPLICIT_SPACE = SearchSpace(rank=(32, 64), reg_param=(0.05, 0.1, 0.2), alpha=(1.0,), max_iter=(15,))


def grid_configs(space: SearchSpace, *, implicit: bool = True) -> list[dict]:
    """Every combination (alpha only varies in implicit mode)."""
    alphas = space.alpha if implicit else space.alpha[:1]
    return [dict(rank=r, reg_param=float(g), alpha=float(a), max_iter=m)
            for r, g, a, m in itertools.product(space.rank, space.reg_param, alphas, space.max_iter)]


def random_configs(space: SearchSpace, *, n: int, seed: int, implicit: bool = True) -> list[dict]:
    """``n`` draws: rank and max_iter from their choices, reg_param and alpha log-uniform between their min and
    max. Deterministic for the seed."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = random.Random(seed)

    def log_uniform(values):
        lo, hi = min(values), max(values)
        if lo <= 0:
            raise ValueError(f"random search needs positive bounds for a log scale, got {values}")
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))

    configs = []
    for _ in range(n):
        configs.append(dict(rank=rng.choice(space.rank), reg_param=round(log_uniform(space.reg_param), 5),
                            alpha=round(log_uniform(space.alpha), 4) if implicit else float(space.alpha[0]),
                            max_iter=rng.choice(space.max_iter)))
    return configs


@dataclass
class TuningResult:
    implicit: bool
    metric: str  # what selects: e.g. "ndcg@10" (higher is better) or "rmse" (lower is better)
    configs: list[dict]
    fold_scores: list[dict]  # one per (config, fold): config_id, fold, the config, every metric, fit_seconds
    best_config_id: int
    base_params: AlsParams
    folds: int
    fold_stats: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def higher_is_better(self) -> bool:
        return self.implicit

    @property
    def best_config(self) -> dict:
        return self.configs[self.best_config_id]

    @property
    def best_params(self) -> AlsParams:
        return replace(self.base_params, **self.best_config)

    def summary(self) -> list[dict]:
        """Per configuration: the config, mean and standard deviation of the selection metric over folds."""
        out = []
        for cid, config in enumerate(self.configs):
            values = [r[self.metric] for r in self.fold_scores if r["config_id"] == cid]
            out.append({"config_id": cid, **config, "mean": statistics.fmean(values),
                        "std": statistics.pstdev(values) if len(values) > 1 else 0.0, "folds": len(values),
                        "fit_seconds": statistics.fmean(r["fit_seconds"] for r in self.fold_scores
                                                        if r["config_id"] == cid)})
        return out

    def to_dict(self) -> dict:
        return {"metric": self.metric, "higher_is_better": self.higher_is_better, "folds": self.folds,
                "best_config_id": self.best_config_id, "best": self.best_config, "configs": self.summary(),
                "fold_scores": self.fold_scores, "fold_stats": self.fold_stats, "seconds": round(self.seconds, 1)}

    def fold_rows(self, *, run_id: str, extra: dict | None = None) -> list[dict]:
        """Rows for a fold-scores table: one per (configuration, fold), metrics as a JSON string."""
        return fold_rows(self.to_dict(), run_id=run_id, mode="implicit" if self.implicit else "explicit",
                         extra=extra)


def fold_rows(tuning: dict, *, run_id: str, mode: str, extra: dict | None = None) -> list[dict]:
    """Rows matching FOLD_SCORES_SCHEMA from a :meth:`TuningResult.to_dict` (as stored in a report)."""
    rows = []
    for r in tuning["fold_scores"]:
        metrics = {k: v for k, v in r.items() if k not in ("config_id", "fold", "fit_seconds", *TUNED_FIELDS)}
        config = {f: r[f] for f in TUNED_FIELDS}
        rows.append({
            "tuning_run_id": run_id, "mode": mode, "metric": tuning["metric"], "config_id": int(r["config_id"]),
            "fold": int(r["fold"]), "rank": int(r["rank"]), "reg_param": float(r["reg_param"]),
            "alpha": float(r["alpha"]), "max_iter": int(r["max_iter"]), "score": float(r[tuning["metric"]]),
            "metrics": json.dumps(metrics), "fit_seconds": float(r["fit_seconds"]),
            "is_best": r["config_id"] == tuning["best_config_id"], "params": json.dumps(config),
            **(extra or {}),
        })
    return rows


FOLD_SCORES_SCHEMA = (
    "tuning_run_id string, mode string, metric string, config_id int, fold int, rank int, reg_param double, "
    "alpha double, max_iter int, score double, metrics string, fit_seconds double, is_best boolean, params string"
)
# The Delta table jobs write (meta/tuning_results): the fold scores plus where the data came from.
TUNING_TABLE_SCHEMA = (FOLD_SCORES_SCHEMA + ", source string, source_version long, model_version string, "
                       "created_at timestamp")


def evaluate_fold(model, train: DataFrame, test: DataFrame, *, implicit: bool, k: int,
                  catalogue_size: int | None = None) -> dict:
    """Score a fitted model on one held-out set: ranking metrics at k (implicit) or RMSE / MAE (explicit).

    Ranking: top-k for the test users with their training pairs excluded, through the scoring code.
    """
    if implicit:
        test_users = test.select(C.USER_IDX).distinct()
        recs = model.recommend(test_users, n=k, seen=train)
        if catalogue_size is None:
            catalogue_size = train.select(C.ITEM_IDX).distinct().count()
        return ranking_metrics(recs, test, k=k, catalogue_size=catalogue_size)
    return rating_metrics(model.predict(test))


def _checked_search(*, model: str, implicit: bool, configs: list[dict], metric: str | None, k: int, folds: int,
                    test_folds: int | None) -> tuple[str, int]:
    """(the selection metric, the number of folds scored) of cross_validate's arguments; ValueError when they
    do not fit together."""
    if model not in MODELS or (implicit and model != "als"):
        raise ValueError(f"model must be one of {sorted(MODELS)} ('als_bias' is explicit only), got {model!r}")
    if not configs:
        raise ValueError("no configuration to try")
    metric = metric or (f"ndcg@{k}" if implicit else "rmse")
    if implicit and metric in ("rmse", "mae"):
        raise ValueError("implicit models are tuned on a ranking metric, not on RMSE (their scores are not ratings)")
    test_folds = folds if test_folds is None else test_folds
    if not 1 <= test_folds <= folds:
        raise ValueError(f"test_folds must be between 1 and folds ({folds}), got {test_folds}")
    return metric, test_folds


def _scored_folds(data: DataFrame, *, folds: int, test_folds: int, seed: int) -> tuple[list, dict]:
    """(the first ``test_folds`` of ``folds`` per-user folds as cached train/test sets, the fold statistics);
    ValueError, with nothing left cached, when a fold has nothing to score."""
    assigned, fold_stats = splits.assign_user_folds(data, folds=folds, seed=seed)
    fold_stats["test_folds"] = test_folds
    fold_sets = [splits.fold_split(assigned, f) for f in range(test_folds)]
    assigned.unpersist()
    if any(fs.stats["test_rows"] == 0 for fs in fold_sets):
        for fs in fold_sets:
            fs.unpersist()
        raise ValueError(f"nothing to score: no user has at least {folds} pairs, and users with fewer than the "
                         f"number of folds are only trained on ({fold_stats['users']} users); use fewer folds")
    return fold_sets, fold_stats


def _fit_and_score(task: tuple[int, int], *, configs: list[dict], base: AlsParams, fold_sets: list,
                   catalogues: list[int], model: str, checkpoint_dir: str, implicit: bool, k: int, metric: str,
                   log) -> dict:
    """One fold score of cross_validate: configuration ``task[0]`` fitted on the training part of fold ``task[1]``
    and scored on its test part (its factors unpersisted after); ValueError when ``metric`` is not among the scores."""
    cid, fold = task
    params = replace(base, **configs[cid])
    fold_set = fold_sets[fold]
    t0 = time.time()
    fitted = MODELS[model](params=params, checkpoint_dir=checkpoint_dir).fit(fold_set.train)
    fit_seconds = time.time() - t0
    scores = evaluate_fold(fitted, fold_set.train, fold_set.test, implicit=implicit, k=k,
                           catalogue_size=catalogues[fold])
    if metric not in scores:
        raise ValueError(f"metric {metric!r} is not computed; available: {sorted(scores)}")
    fitted.user_factors.unpersist()
    fitted.item_factors.unpersist()
    row = {"config_id": cid, "fold": fold, **configs[cid], **scores, "fit_seconds": round(fit_seconds, 2)}
    log(f"  config {cid:>2} fold {fold}  rank {params.rank:>3}  reg {params.reg_param:<8g} "
        f"alpha {params.alpha:<6g} iter {params.max_iter:>2}  {metric} {scores[metric]:.4f}  "
        f"fit {fit_seconds:.1f} s")
    return row


def cross_validate(data: DataFrame, configs: list[dict], *, implicit: bool, folds: int = 3, seed: int = 42,
                   k: int = 10, metric: str | None = None, checkpoint_dir: str, parallelism: int = 1,
                   base_params: AlsParams | None = None, model: str = "als", test_folds: int | None = None,
                   log=print) -> TuningResult:
    """K-fold CV of every configuration on ``data`` (user_idx, item_idx, weight|rating); returns all fold scores
    and the best configuration (ties: the earlier configuration).

    ``test_folds``: hold out and score only the first n of the ``folds`` folds, in turn (default: all of them).
    Each fit still trains on (folds - 1) / folds of the data, so ``folds=10, test_folds=3`` trains every fit on
    90% (close to the final refit, which matters because the best rank grows with the data) for the cost of 3
    fits per configuration.

    ``model``: "als" (plain ALS) or, explicit only, "als_bias" (ALS on the residuals of the bias baseline).
    """
    metric, test_folds = _checked_search(model=model, implicit=implicit, configs=configs, metric=metric, k=k,
                                         folds=folds, test_folds=test_folds)
    base = replace(base_params or AlsParams(), implicit=implicit, seed=seed)
    started = time.time()
    fold_sets, fold_stats = _scored_folds(data, folds=folds, test_folds=test_folds, seed=seed)
    catalogues = [fs.train.select(C.ITEM_IDX).distinct().count() for fs in fold_sets]
    run_one = functools.partial(_fit_and_score, configs=configs, base=base, fold_sets=fold_sets,
                                catalogues=catalogues, model=model, checkpoint_dir=checkpoint_dir,
                                implicit=implicit, k=k, metric=metric, log=log)
    tasks = [(cid, fold) for fold in range(test_folds) for cid in range(len(configs))]
    try:
        if parallelism <= 1:
            rows = [run_one(t) for t in tasks]
        else:
            with ThreadPoolExecutor(max_workers=parallelism) as pool:
                rows = list(pool.map(inheritable_thread_target(data.sparkSession)(run_one), tasks))
    finally:
        for fs in fold_sets:
            fs.unpersist()
    rows.sort(key=lambda r: (r["config_id"], r["fold"]))
    result = TuningResult(implicit=implicit, metric=metric, configs=configs, fold_scores=rows, best_config_id=0,
                          base_params=base, folds=folds, fold_stats=fold_stats)
    means = [s["mean"] for s in result.summary()]
    pick = max if implicit else min
    result.best_config_id = means.index(pick(means))
    result.seconds = time.time() - started
    return result
