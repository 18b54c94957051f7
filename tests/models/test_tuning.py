"""models.tuning: search spaces, K-fold CV that keeps every fold score and picks the right configuration."""
from __future__ import annotations

import math

import pytest

from models.als import AlsParams
from models.tuning import (FOLD_SCORES_SCHEMA, SearchSpace, cross_validate, fold_rows, grid_configs,
                           random_configs)


def test_grid_and_random_configs():
    space = SearchSpace(rank=(4, 8), reg_param=(0.01, 1.0), alpha=(1.0, 10.0), max_iter=(5,))
    assert len(grid_configs(space)) == 8
    assert len(grid_configs(space, implicit=False)) == 4  # alpha means nothing for explicit ALS
    a = random_configs(space, n=6, seed=1)
    assert a == random_configs(space, n=6, seed=1) and a != random_configs(space, n=6, seed=2)
    assert all(0.01 <= c["reg_param"] <= 1.0 and 1.0 <= c["alpha"] <= 10.0 and c["rank"] in (4, 8) for c in a)


def test_implicit_cv_keeps_every_fold_score_and_selects_the_best_mean(spark, pairs_frame, tmp_path):
    configs = [dict(rank=1, reg_param=50.0, alpha=1.0, max_iter=2), dict(rank=4, reg_param=0.05, alpha=5.0, max_iter=4)]
    result = cross_validate(pairs_frame, configs, implicit=True, folds=2, seed=5, k=5,
                            checkpoint_dir=str(tmp_path / "ckpt"), base_params=AlsParams(num_blocks=1))
    assert len(result.fold_scores) == 4 and result.metric == "ndcg@5"
    assert all(math.isfinite(r["ndcg@5"]) for r in result.fold_scores)
    means = [s["mean"] for s in result.summary()]
    assert result.best_config_id == means.index(max(means))
    assert result.best_params.rank == configs[result.best_config_id]["rank"]
    rows = fold_rows(result.to_dict(), run_id="r1", mode="implicit")
    table = spark.createDataFrame(rows, schema=FOLD_SCORES_SCHEMA)
    assert table.count() == 4 and table.where("is_best").count() == 2


def test_explicit_cv_selects_lowest_rmse(pairs_frame, tmp_path):
    configs = [dict(rank=2, reg_param=0.1, alpha=1.0, max_iter=2), dict(rank=2, reg_param=30.0, alpha=1.0, max_iter=2)]
    result = cross_validate(pairs_frame, configs, implicit=False, folds=2, seed=5,
                            checkpoint_dir=str(tmp_path / "ckpt"), base_params=AlsParams(num_blocks=1))
    means = [s["mean"] for s in result.summary()]
    assert result.metric == "rmse" and result.best_config_id == means.index(min(means))


def test_implicit_models_are_not_tuned_on_rmse(pairs_frame, tmp_path):
    with pytest.raises(ValueError, match="ranking metric"):
        cross_validate(pairs_frame, [dict(rank=2, reg_param=0.1, alpha=1.0, max_iter=2)], implicit=True,
                       metric="rmse", checkpoint_dir=str(tmp_path))


def test_cv_can_score_fewer_folds_than_it_deals(pairs_frame, tmp_path):
    """folds=4, test_folds=2: every fit trains on 3/4 of the data, and only folds 0 and 1 are held out."""
    config = dict(rank=2, reg_param=0.1, alpha=1.0, max_iter=2)
    result = cross_validate(pairs_frame, [config], implicit=False, folds=4, test_folds=2, seed=5,
                            checkpoint_dir=str(tmp_path / "ckpt"), base_params=AlsParams(num_blocks=1))
    assert sorted(r["fold"] for r in result.fold_scores) == [0, 1]
    assert result.fold_stats["test_folds"] == 2 and result.summary()[0]["folds"] == 2
    with pytest.raises(ValueError, match="no user has at least 50 pairs"):
        cross_validate(pairs_frame, [config], implicit=False, folds=50, test_folds=1, checkpoint_dir=str(tmp_path))
    with pytest.raises(ValueError, match="test_folds must be between 1 and folds"):
        cross_validate(pairs_frame, [config], implicit=False, folds=3, test_folds=4, checkpoint_dir=str(tmp_path))


def test_jobs_score_at_most_three_of_ten_folds_by_default():
    import argparse

    from jobs.cli import add_tuning_args, tune_options

    parser = argparse.ArgumentParser()
    add_tuning_args(parser)
    assert tune_options(parser.parse_args([])).scored_folds == 3 and parser.parse_args([]).tune_folds == 10
    assert tune_options(parser.parse_args(["--tune-folds", "2"])).scored_folds == 2  # every fold of a 2-fold CV
    assert tune_options(parser.parse_args(["--tune-folds", "5", "--tune-test-folds", "5"])).scored_folds == 5
