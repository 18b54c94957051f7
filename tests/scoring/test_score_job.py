"""jobs.score and jobs.publish end to end on a tiny lake: exact top-N, similar items both ways, recent popular."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from flow.model_runs import model_run
from jobs import generate_logs, nightly, publish, score
from lake import tables
from lake.registry import Lake
from models import parquet_direct, speed
from models.bundle import load_bundle
from serving import snapshot
from transforms import columns as C

pytestmark = pytest.mark.slow

VERSION = "scoring-v1"
N = 5


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("scoring")
    logs = str(base / "logs")
    generate_logs.run(spark, generate_logs.build_parser().parse_args(
        ["--output", logs, "--users", "80", "--items", "40", "--ratings", "1500", "--clusters", "4",
         "--fault-rate", "0", "--duplicate-rate", "0", "--files", "1", "--seed", "3"]))
    nightly.run(spark, nightly.build_parser().parse_args(
        ["--lake", str(base / "lake"), "--input", logs, "--format", "movielens", "--n", str(N), "--rank", "4",
         "--max-iter", "3", "--model-version", VERSION]))
    return Lake(str(base / "lake"))


def rows_of(spark, lake, name):
    return tables.read(spark, lake.table("gold", name)).where(F.col(C.MODEL_VERSION) == VERSION)


def rescore(spark, lake, *flags):
    return score.run(spark, score.build_parser().parse_args(
        ["--lake", lake.root, "--model-version", VERSION, "--n", str(N), *flags]))


def republish(spark, lake):
    publish.run(spark, publish.build_parser().parse_args(["--lake", lake.root, "--model-version", VERSION, "--force"]))
    return snapshot.verify_snapshot(snapshot.latest_version_dir(f"{lake.root}/snapshots"))


def test_recommendations_equal_a_brute_force_over_the_saved_factors(spark, lake):
    meta = model_run(spark, lake, VERSION)
    model = load_bundle(spark, meta["model_dir"])
    users = {r[C.USER_IDX]: np.array(r[C.FEATURES], np.float64) for r in model.model.user_factors.collect()}
    items = {r[C.ITEM_IDX]: np.array(r[C.FEATURES], np.float64) for r in model.model.item_factors.collect()}
    training = tables.read(spark, meta["training_table"], version=meta["training_version"])
    seen = {(r[C.USER_ID], r[C.ITEM_ID]) for r in training.select(C.USER_ID, C.ITEM_ID).collect()}
    user_id = {r[C.USER_IDX]: r[C.USER_ID] for r in model.user_ids.collect()}
    item_id = {r[C.ITEM_IDX]: r[C.ITEM_ID] for r in model.item_ids.collect()}
    got: dict[str, list] = {}
    for r in rows_of(spark, lake, "user_recommendations").orderBy(C.USER_ID, C.RANK).collect():
        got.setdefault(r[C.USER_ID], []).append(r[C.ITEM_ID])
    assert len(got) == len(users)
    for u, vec in users.items():
        scored = sorted((-float(vec @ v), i) for i, v in items.items() if (user_id[u], item_id[i]) not in seen)
        expected = [item_id[i] for _, i in scored[:N]]
        near = [s for s, _ in scored[: N + 1]]
        if len(set(np.round(near, 5))) == len(near):  # no near-ties around the top N: the order is exact
            assert got[user_id[u]] == expected, u


def test_the_jobs_inputs_are_read_from_their_files_and_through_spark_alike(spark, lake, monkeypatch):
    """The saved model's item factors and the training table at the model's version are plain Parquet scans: the
    driver reads them itself. On the reference path (models.speed) it collects them through Spark and writes the
    same rows."""
    meta = model_run(spark, lake, VERSION)
    model = load_bundle(spark, meta["model_dir"])
    training = tables.read(spark, meta["training_table"], version=meta["training_version"])
    assert parquet_direct.parquet_source(model.model.item_factors.select(C.ITEM_IDX, C.FEATURES)) is not None
    assert parquet_direct.parquet_source(training.select(C.USER_IDX, C.ITEM_IDX)) is not None

    def recommendations():
        return sorted(tuple(r) for r in rows_of(spark, lake, "user_recommendations")
                      .select(C.USER_ID, C.RANK, C.ITEM_ID, C.SCORE).collect())

    direct = recommendations()
    monkeypatch.setenv(speed.REFERENCE_PATH_ENV, "1")
    assert rescore(spark, lake)["rows"] == len(direct)
    assert recommendations() == direct


def test_default_run_writes_als_similar_items_and_publishes_them(spark, lake):
    similar = rows_of(spark, lake, "similar_items")
    assert similar.columns == [C.MODEL_VERSION, C.ITEM_ID, C.RANK, "similar_item_id", C.SCORE]
    per_item = similar.groupBy(C.ITEM_ID).agg(F.count(F.lit(1)).alias("k"), F.max(C.SCORE).alias("top")).collect()
    assert per_item and all(r["k"] == N and r["top"] <= 1.0 + 1e-5 for r in per_item)
    assert similar.where(F.col(C.ITEM_ID) == F.col("similar_item_id")).count() == 0
    manifest = snapshot.verify_snapshot(snapshot.latest_version_dir(f"{lake.root}/snapshots"))
    assert manifest.tables["similar_items"]["rows"] == len(per_item)
    table = pq.read_table(manifest.table_files("similar_items")[0]).to_pylist()
    first = table[0]
    expected = similar.where(F.col(C.ITEM_ID) == first["item_id"]).orderBy(C.RANK).collect()
    assert first["item_ids"] == [r["similar_item_id"] for r in expected]
    assert first["scores"] == pytest.approx([r[C.SCORE] for r in expected])
    assert rows_of(spark, lake, "popular_items_recent").count() > 0


def test_cooccurrence_rerun_replaces_the_versions_rows(spark, lake):
    summary = rescore(spark, lake, "--similar", "cooccurrence", "--cooccurrence-measure", "jaccard")
    similar = rows_of(spark, lake, "similar_items")
    assert similar.count() == summary["similar_rows"] > 0
    assert similar.groupBy(C.ITEM_ID, C.RANK).count().where(F.col("count") > 1).count() == 0
    assert similar.agg(F.max(C.SCORE)).first()[0] <= 1.0
    assert republish(spark, lake).tables["similar_items"]["rows"] == similar.select(C.ITEM_ID).distinct().count()


def test_similar_none_removes_them_from_table_and_snapshot(spark, lake):
    rescore(spark, lake, "--similar", "none")
    assert rows_of(spark, lake, "similar_items").count() == 0
    assert "similar_items" not in republish(spark, lake).tables
