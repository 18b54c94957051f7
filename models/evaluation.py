"""The offline evaluation protocol, end to end on Spark, shared by jobs.evaluate and jobs.train.

Implicit protocol (``evaluate_implicit``): split the (user, item) pairs (per-user random by default), optionally
tune ALS by K-fold CV on the *training part only*, fit ALS and the popularity baseline on the training part,
recommend top-k for every test user with their training pairs excluded (the scoring code), and score every
held-out pair as relevant. The test part is touched once, at the end.

Explicit protocol (``evaluate_explicit``): RMSE / MAE of explicit ALS and of the bias-only baseline
(global mean + user and item biases) from K-fold CV over all pairs; with tuning, the parameters are chosen by
CV on the split's training part and the untouched test part gives a hold-out RMSE as well.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, replace

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from models.als import AlsParams, AlsRecommender
from models.baseline import BiasBaseline
from models.metrics import popularity_bias, ranking_metrics_at, rating_metrics
from models.popularity import PopularityRecommender
from models.tuning import MODELS, TuningResult, cross_validate
from transforms import columns as C
from transforms import splits

DEFAULT_KS = (1, 5, 10, 20)


class NotEnoughDataError(ValueError):
    """The split left nothing to test on (every user has too few pairs); the message gives the counts."""


def _require_test_rows(split_set: splits.Split, split: str) -> None:
    if not split_set.stats.get("test_rows"):
        split_set.unpersist()
        raise NotEnoughDataError(f"the {split} split left no test pair: {split_set.stats}")


def _log_default(msg: str) -> None:
    print(msg, flush=True)


def evaluate_ranking_models(models: dict, train: DataFrame, test: DataFrame, *, k: int,
                            ks: tuple[int, ...] = DEFAULT_KS) -> dict:
    """{name: {"at_k": {k: metrics}, "popularity_bias": ..., ...}} for fitted models on one split."""
    ks = tuple(sorted(set(ks) | {k}))
    catalogue = train.select(C.ITEM_IDX).distinct().count()
    test_users = test.select(C.USER_IDX).distinct()
    out = {}
    for name, model in models.items():
        recs = model.recommend(test_users, n=max(ks), seen=train).cache()
        try:
            at_k = ranking_metrics_at(recs, test, ks=list(ks), catalogue_size=catalogue)
            bias = popularity_bias(recs, train, k=k)
        finally:
            recs.unpersist()
        out[name] = {"at_k": at_k, "popularity_bias": bias}
    return out


def evaluate_implicit(pairs: DataFrame, *, split: str = "user-random", test_fraction: float = 0.25, k: int = 10,
                      seed: int = 42, params: AlsParams | None = None, tune_configs: list[dict] | None = None,
                      tune_folds: int = 3, tune_test_folds: int | None = None, parallelism: int = 1,
                      checkpoint_dir: str, metric: str | None = None,
                      min_interactions: int = 2, ks: tuple[int, ...] = DEFAULT_KS, log=_log_default) -> dict:
    """The implicit protocol on (user_idx, item_idx, weight[, last_event_ts]) pairs; returns a JSON-able dict."""
    started = time.time()
    params = replace(params or AlsParams(), implicit=True, seed=seed)
    split_set = splits.make_split(pairs, split, test_fraction=test_fraction, seed=seed,
                                  min_interactions=min_interactions)
    log(f"split {split} ({test_fraction:.0%} to test, seed {seed}): {split_set.stats}")
    _require_test_rows(split_set, split)
    tuning: TuningResult | None = None
    try:
        if tune_configs:
            log(f"tuning: {len(tune_configs)} configurations x {tune_test_folds or tune_folds} of {tune_folds} folds "
                "on the training part")
            tuning = cross_validate(split_set.train, tune_configs, implicit=True, folds=tune_folds,
                                    test_folds=tune_test_folds, seed=seed, k=k,
                                    metric=metric, checkpoint_dir=checkpoint_dir, parallelism=parallelism, base_params=params,
                                    log=log)
            params = tuning.best_params
            log(f"best: {tuning.best_config} ({tuning.metric} {tuning.summary()[tuning.best_config_id]['mean']:.4f})")
        t0 = time.time()
        als = AlsRecommender(params=params, checkpoint_dir=checkpoint_dir).fit(split_set.train)
        fit_seconds = time.time() - t0
        popularity = PopularityRecommender().fit(split_set.train)
        results = evaluate_ranking_models({"als": als, "popularity": popularity}, split_set.train, split_set.test,
                                          k=k, ks=ks)
    finally:
        split_set.unpersist()
    report = {"protocol": "implicit", "k": k, "split": {"kind": split, "test_fraction": test_fraction,
                                                         "seed": seed, **split_set.stats}}
    for name, res in results.items():
        report[name] = {**res["at_k"][k], "metrics_at_k": {str(kk): v for kk, v in res["at_k"].items()},
                        "popularity_bias": res["popularity_bias"]}
    report["als"]["params"] = asdict(params)
    report["als"]["fit_seconds"] = round(fit_seconds, 1)
    report["als_params"] = {f: getattr(params, f) for f in ("rank", "reg_param", "alpha", "max_iter")}
    if tuning is not None:
        report["tuning"] = tuning.to_dict()
    report["seconds"] = round(time.time() - started, 1)
    return report


def _cv_explicit(pairs: DataFrame, params: AlsParams, *, folds: int, seed: int, checkpoint_dir: str,
                 explicit_model: str, log) -> dict:
    """K-fold CV RMSE / MAE of explicit ALS and the bias baseline, scored on the same rows."""
    assigned, fold_stats = splits.assign_user_folds(pairs, folds=folds, seed=seed)
    per_fold = []
    try:
        for fold in range(folds):
            fs = splits.fold_split(assigned, fold)
            try:
                als = MODELS[explicit_model](params=params, checkpoint_dir=checkpoint_dir).fit(fs.train)
                bias = BiasBaseline().fit(fs.train)
                scored = (als.predict(fs.test).withColumnRenamed("prediction", "als")
                          .join(bias.predict(fs.test).select(C.USER_IDX, C.ITEM_IDX, F.col("prediction").alias("bias")),
                                on=[C.USER_IDX, C.ITEM_IDX]).cache())
                row = {"fold": fold,
                       "als": rating_metrics(scored, prediction_col="als"),
                       "bias": rating_metrics(scored, prediction_col="bias")}
                scored.unpersist()
                log(f"  fold {fold}: ALS rmse {row['als']['rmse']:.4f} mae {row['als']['mae']:.4f} | "
                    f"bias rmse {row['bias']['rmse']:.4f} mae {row['bias']['mae']:.4f} "
                    f"({row['als']['rows_without_prediction']} test rows without a prediction: cold items)")
                per_fold.append(row)
            finally:
                fs.unpersist()
    finally:
        assigned.unpersist()
    out = {"folds": folds, "fold_stats": fold_stats, "per_fold": per_fold}
    for name in ("als", "bias"):
        for metric in ("rmse", "mae"):
            values = [r[name][metric] for r in per_fold]
            out.setdefault(name, {})[metric] = statistics.fmean(values)
            out[name][f"{metric}_std"] = statistics.pstdev(values)
        out[name]["rows_without_prediction"] = sum(r[name]["rows_without_prediction"] for r in per_fold)
    return out


def evaluate_explicit(pairs: DataFrame, *, split: str = "user-random", test_fraction: float = 0.25, seed: int = 42,
                      folds: int = 5, params: AlsParams | None = None, tune_configs: list[dict] | None = None,
                      tune_folds: int = 3, tune_test_folds: int | None = None, parallelism: int = 1,
                      checkpoint_dir: str, min_interactions: int = 2,
                      metric: str | None = None, explicit_model: str = "als", log=_log_default) -> dict:
    """The explicit protocol on (user_idx, item_idx, rating) pairs; returns a JSON-able dict.

    ``explicit_model``: "als" (plain explicit ALS) or "als_bias" (ALS on the bias baseline's residuals).
    """
    started = time.time()
    params = replace(params or AlsParams(), implicit=False, seed=seed)
    report: dict = {"protocol": "explicit"}
    tuning = None
    if tune_configs:
        split_set = splits.make_split(pairs, split, test_fraction=test_fraction, seed=seed,
                                      min_interactions=min_interactions)
        try:
            log(f"tuning: {len(tune_configs)} configurations x {tune_test_folds or tune_folds} of {tune_folds} folds "
                f"on the {split} training part")
            tuning = cross_validate(split_set.train, tune_configs, implicit=False, folds=tune_folds,
                                    test_folds=tune_test_folds, seed=seed,
                                    metric=metric, checkpoint_dir=checkpoint_dir, parallelism=parallelism, base_params=params,
                                    model=explicit_model, log=log)
            params = tuning.best_params
            log(f"best: {tuning.best_config} (rmse {tuning.summary()[tuning.best_config_id]['mean']:.4f})")
            als = MODELS[explicit_model](params=params, checkpoint_dir=checkpoint_dir).fit(split_set.train)
            bias = BiasBaseline().fit(split_set.train)
            report["holdout"] = {
                "split": {"kind": split, "test_fraction": test_fraction, "seed": seed, **split_set.stats},
                "als": rating_metrics(als.predict(split_set.test)),
                "bias": rating_metrics(bias.predict(split_set.test)),
            }
        finally:
            split_set.unpersist()
    log(f"{folds}-fold CV over all pairs with {params.rank=}, {params.reg_param=}, {params.max_iter=}")
    cv = _cv_explicit(pairs, params, folds=folds, seed=seed, checkpoint_dir=checkpoint_dir,
                      explicit_model=explicit_model, log=log)
    report["cv"] = cv
    report["als"] = {"rmse": cv["als"]["rmse"], "mae": cv["als"]["mae"], "rmse_std": cv["als"]["rmse_std"],
                     "model": explicit_model, "params": asdict(params)}
    report["bias"] = {"rmse": cv["bias"]["rmse"], "mae": cv["bias"]["mae"], "rmse_std": cv["bias"]["rmse_std"]}
    report["rmse"], report["mae"] = cv["als"]["rmse"], cv["als"]["mae"]
    report["als_params"] = {f: getattr(params, f) for f in ("rank", "reg_param", "max_iter")}
    if tuning is not None:
        report["tuning"] = tuning.to_dict()
    report["seconds"] = round(time.time() - started, 1)
    return report


def evaluate_explicit_holdout(pairs: DataFrame, *, split: str = "user-random", test_fraction: float = 0.2,
                              seed: int = 42, params: AlsParams | None = None,
                              tune_configs: list[dict] | None = None, tune_folds: int = 3,
                              tune_test_folds: int | None = None, parallelism: int = 1,
                              checkpoint_dir: str, min_interactions: int = 2, metric: str | None = None,
                              explicit_model: str = "als", log=_log_default) -> dict:
    """A cheaper explicit protocol for every training run: one hold-out split (tuning, if any, by CV on its
    training part), RMSE / MAE of ALS and the bias baseline on the same held-out rows."""
    started = time.time()
    params = replace(params or AlsParams(), implicit=False, seed=seed)
    split_set = splits.make_split(pairs, split, test_fraction=test_fraction, seed=seed,
                                  min_interactions=min_interactions)
    _require_test_rows(split_set, split)
    report: dict = {"protocol": "explicit"}
    try:
        if tune_configs:
            tuning = cross_validate(split_set.train, tune_configs, implicit=False, folds=tune_folds,
                                    test_folds=tune_test_folds, seed=seed,
                                    metric=metric, checkpoint_dir=checkpoint_dir, parallelism=parallelism,
                                    base_params=params, model=explicit_model, log=log)
            params = tuning.best_params
            report["tuning"] = tuning.to_dict()
        als = MODELS[explicit_model](params=params, checkpoint_dir=checkpoint_dir).fit(split_set.train)
        bias = BiasBaseline().fit(split_set.train)
        scored = (als.predict(split_set.test).withColumnRenamed("prediction", "als")
                  .join(bias.predict(split_set.test).select(C.USER_IDX, C.ITEM_IDX, F.col("prediction").alias("bias")),
                        on=[C.USER_IDX, C.ITEM_IDX]).cache())
        holdout = {"split": {"kind": split, "test_fraction": test_fraction, "seed": seed, **split_set.stats},
                   "als": rating_metrics(scored, prediction_col="als"),
                   "bias": rating_metrics(scored, prediction_col="bias")}
        scored.unpersist()
    finally:
        split_set.unpersist()
    report["holdout"] = holdout
    report["als"] = {"rmse": holdout["als"]["rmse"], "mae": holdout["als"]["mae"], "rmse_std": 0.0,
                     "model": explicit_model, "params": asdict(params)}
    report["bias"] = {"rmse": holdout["bias"]["rmse"], "mae": holdout["bias"]["mae"], "rmse_std": 0.0}
    report["rmse"], report["mae"] = report["als"]["rmse"], report["als"]["mae"]
    report["als_params"] = {f: getattr(params, f) for f in ("rank", "reg_param", "max_iter")}
    report["seconds"] = round(time.time() - started, 1)
    return report
