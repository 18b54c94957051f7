"""Distributed for real: a Spark standalone master and two workers on this machine (from the pip pyspark),
ingest -> build_training -> train -> score through `spark-submit --master spark://...`, compared with the same
steps run locally."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.find_spark_home import _find_spark_home
from pyspark.sql import functions as F

from jobs import build_training, ingest, package_code, score, train
from lake import tables
from jobs.spark_session import delta_maven_coordinate
from transforms import columns as C

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_log(path: Path, text: str, count: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text(errors="replace").count(text) >= count:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{path} did not show {text!r} {count} times in {timeout} s:\n{path.read_text(errors='replace')[-3000:] if path.exists() else ''}")


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("cluster")
    spark_home = _find_spark_home()
    spark_class = str(Path(spark_home) / "bin" / "spark-class")
    env = {**os.environ, "SPARK_HOME": spark_home, "SPARK_LOCAL_IP": HOST, "PYSPARK_PYTHON": sys.executable,
           "SPARK_LOG_DIR": str(base), "SPARK_WORKER_DIR": str(base / "work")}
    port, ui = free_port(), free_port()
    procs = []
    master_log = base / "master.log"
    procs.append(subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", HOST,
                                   "--port", str(port), "--webui-port", str(ui)],
                                  stdout=open(master_log, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True))
    url = f"spark://{HOST}:{port}"
    try:
        wait_for_log(master_log, "I have been elected leader", 1, 90)
        for i in range(2):
            procs.append(subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", HOST, "--cores", "1",
                 "--memory", "1500m", "--webui-port", str(free_port()), "--work-dir", str(base / f"work{i}")],
                stdout=open(base / f"worker{i}.log", "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True))
        wait_for_log(master_log, "Registering worker", 2, 90)
        yield {"url": url, "env": env, "base": base}
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


STEPS = [
    (ingest, ["--input", "{input}", "--format", "movielens"]),
    (build_training, ["--mode", "implicit"]),
    (train, ["--rank", "6", "--max-iter", "6", "--num-blocks", "2", "--model-version", "cluster-v1"]),
    (score, ["--model-version", "cluster-v1", "--n", "5"]),
]


def step_argv(argv, lake, input_path):
    return ["--lake", str(lake)] + [a.format(input=input_path) for a in argv]


def test_jobs_on_a_standalone_cluster_equal_the_local_run(spark, standalone_cluster, tmp_path, fixtures_dir):
    from jobs import generate_logs

    logs = tmp_path / "logs"
    generate_logs.run(spark, generate_logs.build_parser().parse_args(
        ["--output", str(logs), "--users", "120", "--items", "60", "--ratings", "3000", "--files", "2", "--seed", "5"]))
    code_zip = package_code.build_zip(tmp_path / "recsys-code.zip")

    cluster_lake = tmp_path / "cluster-lake"
    for module, argv in STEPS:
        cmd = [str(Path(sys.executable).parent / "spark-submit"), "--master", standalone_cluster["url"],
               "--packages", delta_maven_coordinate(), "--py-files", str(code_zip),
               "--conf", f"spark.pyspark.python={sys.executable}", "--conf", "spark.sql.shuffle.partitions=4",
               "--conf", "spark.executor.memory=1g", "--conf", "spark.ui.enabled=false",
               str(REPO / "jobs" / f"{module.__name__.split('.')[-1]}.py"), *step_argv(argv, cluster_lake, logs)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=standalone_cluster["env"])
        assert out.returncode == 0, f"{module.__name__} failed on the cluster:\n{out.stderr[-4000:]}"
    master_log = (standalone_cluster["base"] / "master.log").read_text()
    assert master_log.count("Registered app") >= len(STEPS)  # really ran on the cluster

    local_lake = tmp_path / "local-lake"
    for module, argv in STEPS:
        module.run(spark, module.build_parser().parse_args(step_argv(argv, local_lake, logs)))

    def table(lake, layer, name, cols):
        return tables.read(spark, str(lake / layer / name)).select(*cols)

    silver_cols = [C.EVENT_ID, C.USER_ID, C.ITEM_ID, C.VALUE, C.EVENT_TS]
    assert table(cluster_lake, "silver", "interactions", silver_cols).exceptAll(
        table(local_lake, "silver", "interactions", silver_cols)).count() == 0
    assert table(cluster_lake, "silver", "interactions", silver_cols).count() == \
        table(local_lake, "silver", "interactions", silver_cols).count()
    train_cols = [C.USER_ID, C.ITEM_ID, C.USER_IDX, C.ITEM_IDX, C.WEIGHT]
    assert table(cluster_lake, "gold", "training", train_cols).exceptAll(
        table(local_lake, "gold", "training", train_cols)).count() == 0

    # ALS sums each user's normal equations in shuffle-arrival order, so factors may differ in the last float
    # bits between a cluster and a local run: recommendations are compared up to that.
    rec_cols = [C.USER_ID, C.RANK, C.ITEM_ID, C.SCORE]
    cluster = {(r[C.USER_ID], r[C.RANK]): (r[C.ITEM_ID], r[C.SCORE]) for r in
               table(cluster_lake, "gold", "user_recommendations", rec_cols).collect()}
    local = {(r[C.USER_ID], r[C.RANK]): (r[C.ITEM_ID], r[C.SCORE]) for r in
             table(local_lake, "gold", "user_recommendations", rec_cols).collect()}
    assert cluster.keys() == local.keys() and len(cluster) > 100 * 5
    same_item = sum(cluster[k][0] == local[k][0] for k in cluster) / len(cluster)
    max_score_diff = max(abs(cluster[k][1] - local[k][1]) for k in cluster)
    assert same_item >= 0.95 and max_score_diff < 1e-2, (same_item, max_score_diff)
