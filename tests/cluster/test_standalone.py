"""Distributed for real: the full nightly (ingest, gates, training table, ALS, scoring, publish) on a Spark
standalone master with two workers that act as other machines (tests/support/cluster.py: their own Python
environment without the project, private work folders, and where possible a mount namespace that hides the
driver's checkout), with the lake, the input and the snapshots on object storage (the session's S3 emulator).

It runs the nightly twice on the cluster, as the README's cluster section says: by ``spark-submit jobs/nightly.py``
and by ``python -m jobs.nightly --master spark://...`` (which ships the code itself), and once locally on local
folders; the three published snapshots hold the same recommendations.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs import nightly
from jobs.spark_session import delta_maven_coordinate
from lake import object_store
from serving import snapshot, storage
from tests.support.cluster import REPO, start_cluster

pytestmark = pytest.mark.slow
NIGHTLY_ARGS = ["--format", "movielens", "--rank", "6", "--max-iter", "6", "--num-blocks", "2",
                "--model-version", "cluster-v1", "--n", "5"]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    started = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield started
    started.stop()


@pytest.fixture(scope="module")
def logs(spark, tmp_path_factory):
    from jobs import generate_logs

    folder = tmp_path_factory.mktemp("logs") / "logs"
    generate_logs.run(spark, generate_logs.build_parser().parse_args(
        ["--output", str(folder), "--users", "120", "--items", "60", "--ratings", "3000", "--files", "2",
         "--seed", "5"]))
    return folder


def upload(folder: Path, uri: str, options: storage.S3Options) -> None:
    root = storage.resolve(uri, options)
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith((".", "_")):
            storage.write_atomic(root / path.name, path.read_bytes())


def cluster_conf(cluster) -> list[str]:
    conf = {"spark.pyspark.python": str(cluster.worker_python), "spark.executor.memory": "1g",
            "spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false", "spark.cores.max": "2"}
    return [arg for key, value in conf.items() for arg in ("--conf", f"{key}={value}")]


def run_on_cluster(cmd: list[str], env: dict, cwd: Path, what: str) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=cwd, env=env)
    assert out.returncode == 0, f"{what} failed on the cluster:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
    return out.stdout


def published_lists(root: str, options: storage.S3Options | None = None) -> dict[str, list[str]]:
    """user id -> recommended item ids, from the snapshot LATEST names under ``root`` (verified first)."""
    location = storage.resolve(root, options)
    manifest = snapshot.verify_snapshot(snapshot.latest_version_dir(location))
    lists = {}
    for path in manifest.table_files("user_recommendations"):
        with storage.open_input_file(storage.resolve(path, options)) as fh:
            table = pq.read_table(fh, columns=["user_id", "item_ids"])
        lists.update(zip(table.column("user_id").to_pylist(), table.column("item_ids").to_pylist()))
    return lists


def test_nightly_on_a_cluster_with_object_storage_equals_the_local_run(spark, cluster, s3_server, logs, tmp_path):
    bucket = s3_server.make_bucket("cluster")
    options = storage.S3Options.from_env(s3_server.env())
    upload(logs, f"s3a://{bucket}/logs", options)
    # the driver's side as a user's shell with .venv activated; the workers' Python comes from spark.pyspark.python
    env = {**os.environ, **s3_server.env(), "SPARK_LOCAL_IP": "127.0.0.1",
           "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
    env.pop("PYSPARK_PYTHON", None)
    apps_before = cluster.master_log.read_text().count("Registered app")

    packages = ",".join([delta_maven_coordinate(), *object_store.s3a_packages()])
    submitted = run_on_cluster(
        [str(VENV_BIN / "spark-submit"), "--master", cluster.url, "--packages", packages,
         "--exclude-packages", ",".join(object_store.PACKAGE_EXCLUDES), *cluster_conf(cluster),
         str(REPO / "jobs" / "nightly.py"), "--lake", f"s3a://{bucket}/submit-lake", "--input",
         f"s3a://{bucket}/logs", *NIGHTLY_ARGS], env, tmp_path, "spark-submit jobs/nightly.py")
    by_module = run_on_cluster(
        [sys.executable, "-m", "jobs.nightly", "--master", cluster.url, *cluster_conf(cluster),
         "--lake", f"s3a://{bucket}/module-lake", "--input", f"s3a://{bucket}/logs", *NIGHTLY_ARGS],
        env, REPO, "python -m jobs.nightly --master spark://...")
    assert "nightly done" in submitted and "nightly done" in by_module
    assert cluster.master_log.read_text().count("Registered app") == apps_before + 2  # both ran on the cluster

    local_lake = tmp_path / "local-lake"
    nightly.run(spark, nightly.build_parser().parse_args(["--lake", str(local_lake), "--input", str(logs),
                                                          *NIGHTLY_ARGS]))
    local = published_lists(str(local_lake / "snapshots"))
    assert len(local) >= 100
    for lake in ("submit-lake", "module-lake"):
        remote = published_lists(f"s3a://{bucket}/{lake}/snapshots", options)
        assert remote.keys() == local.keys()
        # ALS sums each user's normal equations in shuffle-arrival order: the last float bits may differ
        same = sum(remote[u] == local[u] for u in local) / len(local)
        assert same >= 0.9, (lake, same)
    executor_logs = [p for p in cluster.base.glob("work*/app-*/*/stderr")]
    assert executor_logs, "no executor ran on the workers"
    if cluster.hides_checkout:  # the executors could not have read the driver's checkout
        assert not any(str(REPO / ".venv") in p.read_text(errors="replace") for p in executor_logs)
