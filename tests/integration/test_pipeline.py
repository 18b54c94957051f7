"""The whole flow on small data, through the real jobs, into a temporary Delta lake, then served for real.

ingest -> build_training -> train -> score -> publish (jobs.nightly, one Spark session), then the real
seldon-core-microservice on the published snapshot, queried over REST and gRPC.
"""
from __future__ import annotations

import argparse
import json
import subprocess

import pytest
from pyspark.sql import functions as F

from flow import generate_logs as synthetic
from jobs import generate_logs, ingest, nightly, publish
from lake import tables
from lake.registry import Lake
from serving import snapshot
from serving.serve import running_service, serving_python
from transforms import columns as C

pytestmark = pytest.mark.slow

N = 10
CLUSTERS = 4


@pytest.fixture(scope="module")
def pipeline(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("pipeline")
    logs = str(base / "logs")
    gen = generate_logs.build_parser().parse_args(
        ["--output", logs, "--users", "300", "--items", "120", "--ratings", "9000", "--clusters", str(CLUSTERS),
         "--fault-rate", "0.02", "--duplicate-rate", "0.02", "--files", "2", "--seed", "11"])
    generate_logs.run(spark, gen)
    args = nightly.build_parser().parse_args(
        ["--lake", str(base / "lake"), "--input", logs, "--format", "movielens", "--n", str(N),
         "--rank", "8", "--max-iter", "8", "--reg-param", "0.05", "--model-version", "itest-v1"])
    results = nightly.run(spark, args)
    return {"base": base, "lake": Lake(str(base / "lake")), "logs": logs, "results": results, "args": args}


def recs_of(spark, lake):
    return tables.read(spark, lake.user_recommendations).where(F.col(C.MODEL_VERSION) == "itest-v1")


def test_ingest_accounts_for_every_line(pipeline):
    s = pipeline["results"]["ingest"]
    assert s["read"] == 9000 + 180
    assert s["quarantined"] > 0 and s["duplicates"] > 0
    assert s["read"] == s["headers"] + s["loaded"] + s["duplicates"] + s["quarantined"]
    assert set(s["quarantined_by_reason"]) <= set(synthetic.FAULT_KINDS)


def test_reingesting_the_same_files_adds_nothing(spark, pipeline):
    lake = pipeline["lake"]
    silver = lake.silver
    before = tables.version(spark, silver), tables.read(spark, silver).count()
    args = ingest.build_parser().parse_args(["--lake", lake.root, "--input", pipeline["logs"], "--format", "movielens"])
    again = ingest.run(spark, args)
    assert again["loaded"] == 0
    assert again["duplicates"] == pipeline["results"]["ingest"]["loaded"] + pipeline["results"]["ingest"]["duplicates"]
    assert tables.read(spark, silver).count() == before[1]


def test_every_user_gets_n_unseen_items_in_score_order(spark, pipeline):
    lake = pipeline["lake"]
    recs = recs_of(spark, lake)
    training = tables.read(spark, lake.training)
    n_users = training.select(C.USER_ID).distinct().count()
    per_user = recs.groupBy(C.USER_ID).agg(F.count(F.lit(1)).alias("rows"), F.collect_list(F.struct(C.RANK, C.SCORE)).alias("ranked"))
    rows = per_user.collect()
    assert len(rows) == n_users  # every user in the training table is covered
    assert all(r["rows"] == N for r in rows)
    for r in rows:
        ranked = sorted(r["ranked"])
        assert [x[C.RANK] for x in ranked] == list(range(1, N + 1))
        scores = [x[C.SCORE] for x in ranked]
        assert scores == sorted(scores, reverse=True)
    seen_recommended = recs.join(training, on=[C.USER_ID, C.ITEM_ID]).count()
    assert seen_recommended == 0


def test_the_model_learned_the_taste_groups(spark, pipeline):
    """The generator puts user u and item i in group (id - 1) % CLUSTERS; light users must get their own group."""
    lake = pipeline["lake"]
    recs = recs_of(spark, lake).where(F.col(C.RANK) <= 5)
    light = tables.read(spark, lake.training).groupBy(C.USER_ID).count().where(F.col("count") <= 20)
    same = recs.join(light, on=C.USER_ID).select(
        ((F.col(C.USER_ID).cast("int") - 1) % CLUSTERS == (F.col(C.ITEM_ID).cast("int") - 1) % CLUSTERS).cast("int").alias("hit"))
    share = same.agg(F.avg("hit")).first()[0]
    assert share > 0.8, f"only {share:.2f} of light users' top-5 are in their own taste group"


def test_rescoring_the_same_version_replaces_its_rows(spark, pipeline):
    from jobs import score

    lake = pipeline["lake"]
    before = recs_of(spark, lake).count()
    score.run(spark, score.build_parser().parse_args(["--lake", lake.root, "--model-version", "itest-v1", "--n", str(N)]))
    assert recs_of(spark, lake).count() == before


def test_published_snapshot_matches_the_table(spark, pipeline):
    lake = pipeline["lake"]
    root = pipeline["base"] / "lake" / "snapshots"
    manifest = snapshot.verify_snapshot(snapshot.latest_version_dir(root))
    assert manifest.model_version == "itest-v1" and manifest.n == N
    users = recs_of(spark, lake).select(C.USER_ID).distinct().count()
    assert manifest.tables["user_recommendations"]["rows"] == users
    assert manifest.tables["popular_items"]["rows"] == N


def test_publishing_again_reuses_the_intact_snapshot(spark, pipeline):
    lake = pipeline["lake"]
    args = publish.build_parser().parse_args(["--lake", lake.root, "--model-version", "itest-v1"])
    assert publish.run(spark, args)["reused"] is True


def expected_list(spark, lake, user_id, k):
    rows = recs_of(spark, lake).where(F.col(C.USER_ID) == user_id).orderBy(C.RANK).limit(k).collect()
    return [r[C.ITEM_ID] for r in rows], [r[C.SCORE] for r in rows]


def test_live_service_answers_from_the_published_snapshot(spark, pipeline, tmp_path):
    lake = pipeline["lake"]
    root = pipeline["base"] / "lake" / "snapshots"
    popular = [r[C.ITEM_ID] for r in tables.read(spark, lake.popular_items)
               .where(F.col(C.MODEL_VERSION) == "itest-v1").orderBy(C.RANK).limit(4).collect()]
    import requests

    with running_service(root, log_path=tmp_path / "service.log", ready_timeout=60) as service:
        for user_id in ("1", "150", "299"):
            items, scores = expected_list(spark, lake, user_id, 5)
            body = requests.post(f"{service.base_url}/api/v1.0/predictions",
                                 json={"jsonData": {"user_id": user_id, "k": 5}}, timeout=10).json()["jsonData"]
            assert body["item_ids"] == items
            assert body["scores"] == pytest.approx(scores, rel=1e-6)
            assert body["source"] == "personal" and body["model_version"] == "itest-v1"
        unknown = requests.post(f"{service.base_url}/api/v1.0/predictions",
                                json={"jsonData": {"user_id": "no-such-user", "k": 4}}, timeout=10).json()["jsonData"]
        assert unknown["source"] == "popular" and unknown["item_ids"] == popular

        items, _ = expected_list(spark, lake, "150", 3)
        out = subprocess.run(
            [str(serving_python()), "-m", "serving.client", "--protocol", "grpc", "--host", service.host,
             "--http-port", str(service.http_port), "--grpc-port", str(service.grpc_port), "--user-id", "150", "--k", "3"],
            capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["item_ids"] == items
