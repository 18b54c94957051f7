"""The gates inside the nightly flow: real jobs into a small lake, a good run, then doctored runs.

The session fixture ``published_lake`` ran ingest -> build_training -> train -> score -> publish (model v1)
with every gate around the steps, as jobs.nightly runs them. The tests below then damage a later run and check
that the gate stops it with the right expectation named, and that what is served stays the last good snapshot.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from lake import tables
from lake.registry import Lake
from serving import snapshot
from tests.conftest import REPO_ROOT
from tests.support.serving import write_snapshot
from tests.validation.helpers import N, folder_digest, run_gated_nightly, write_logs
from transforms import columns as C
from validation import STAGES
from validation.gates import GateOptions, run_gate
from validation.report import GateFailed

pytestmark = pytest.mark.slow  # whole-pipeline runs (see pytest.ini)


def snapshot_state(lake: str) -> tuple[str, dict]:
    """The model version LATEST serves, and every file of the snapshot root with its checksum."""
    root = Path(lake) / "snapshots"
    return snapshot.model_version_of(snapshot.latest_version_dir(root).name), folder_digest(root)


def test_a_good_run_passes_every_gate(published_lake):
    done = published_lake["done"]
    for stage in STAGES:
        assert done[f"gate:{stage}"].success, done[f"gate:{stage}"].describe()
    assert done["gate:recommendations"].model_version == "v1"
    assert done["gate:snapshot"].targets["snapshot_user_recommendations"]["rows"] == done["score"]["users"]


def test_each_gate_writes_a_json_report_a_runs_row_and_data_docs(spark, published_lake):
    lake, done = published_lake["lake"], published_lake["done"]
    runs = tables.read(spark, Lake(lake).validation_runs)
    first = {r["stage"]: r for r in runs.where(F.col("run_id").isin([done[f"gate:{s}"].run_id for s in STAGES])).collect()}
    assert set(first) == set(STAGES) and all(r["success"] for r in first.values())
    report = json.loads(Path(first["silver"]["report_path"]).read_text())
    assert report["stage"] == "silver" and report["success"] is True
    assert report["metrics"]["silver_interactions"]["rows"] == report["targets"]["silver_interactions"]["rows"] > 0
    assert {c["kind"] for c in report["checks"]} == {"expectation"}  # first run: no drift baseline yet
    index = Path(first["training"]["docs_path"])
    assert index.name == "index.html" and "training.gold_training" in index.read_text()


def test_bad_input_stops_the_run_after_ingest_and_leaves_silver_as_it_was(spark, published_lake, tmp_path):
    lake = published_lake["lake"]
    silver = Lake(lake).silver
    rows_before = tables.read(spark, silver).count()
    gold_before = tables.version(spark, Lake(lake).training)
    snapshot_before = snapshot_state(lake)
    logs = write_logs(spark, tmp_path / "garbage", seed=9, fault_rate=0.4)
    with pytest.raises(GateFailed) as failure:
        run_gated_nightly(spark, lake, logs, "v-garbage")
    result = failure.value.result
    assert result.stage == "raw"
    assert {c.description for c in result.failures} == {"at most 5.00% of the lines are quarantined",
                                                        "quarantine rate rises by at most 2.00% points"}
    assert "FAILED raw_input: at most 5.00% of the lines are quarantined" in str(failure.value)
    assert result.actions and result.actions[0].startswith("silver restored to v")
    assert tables.read(spark, silver).count() == rows_before  # the run's rows are out of silver again
    assert tables.version(spark, Lake(lake).training) == gold_before  # build_training never ran
    assert snapshot_state(lake) == snapshot_before


def test_failed_recommendations_gate_stops_publish_and_leaves_the_snapshot_unchanged(spark, published_lake, tmp_path):
    lake = published_lake["lake"]
    latest_before, files_before = snapshot_state(lake)
    assert latest_before == "v1"

    def drop_last_items(step: str) -> None:
        """After scoring v2, lose the last recommendation of two users (a partial write, say)."""
        if step == "score":
            recs = DeltaTable.forPath(spark, Lake(lake).user_recommendations)
            victims = [r[0] for r in recs.toDF().where(F.col(C.MODEL_VERSION) == "v2").select(C.USER_ID)
                       .distinct().orderBy(C.USER_ID).limit(2).collect()]
            recs.delete((F.col(C.MODEL_VERSION) == "v2") & (F.col(C.RANK) == N) & F.col(C.USER_ID).isin(victims))

    logs = write_logs(spark, tmp_path / "logs-2", seed=4)
    # this run doubles the data, so implicit weights (sums of events) legitimately grow: allow it
    lenient = GateOptions(drift_thresholds={"training": {"mean_change": 0.6, "quantile_shift": 1.0}})
    with pytest.raises(GateFailed) as failure:
        run_gated_nightly(spark, lake, logs, "v2", options=lenient, doctor=drop_last_items)
    result = failure.value.result
    assert result.stage == "recommendations" and result.model_version == "v2"
    assert [c.description for c in result.failures] == [f"every scored user has exactly {N} recommendations"]
    assert result.failures[0].observed == 2 and {e["rows"] for e in result.failures[0].examples} == {N - 1}
    assert snapshot_state(lake) == (latest_before, files_before)  # publish never ran: same LATEST, same bytes
    assert snapshot.version_dirs(Path(lake) / "snapshots", "v2") == []


@pytest.fixture
def bad_snapshot(published_lake):
    """A snapshot 'v-bad' beside v1: manifest and checksums fine, but one list repeats an item."""
    root = Path(published_lake["lake"]) / "snapshots"
    if not (root / "v-bad").exists():
        write_snapshot(root, model_version="v-bad", n=2, publish=False,
                       user_recommendations={"u1": [("a", 0.9), ("b", 0.5)], "u2": [("a", 0.9), ("a", 0.8)]},
                       popular_items=[("a", 10.0), ("b", 9.0)])
    return root


def test_failed_snapshot_gate_points_latest_back_at_the_last_good_snapshot(spark, published_lake, bad_snapshot):
    lake = published_lake["lake"]
    snapshot.set_latest(bad_snapshot, "v-bad")  # published, but not yet checked
    with pytest.raises(GateFailed) as failure:
        run_gate(spark, "snapshot", Lake(lake))
    result = failure.value.result
    assert {c.description for c in result.failures if c.kind == "expectation"} == {"no item twice in a list"}
    assert {c.name for c in result.failures if c.kind == "drift"} == {"drift_rows"}  # 2 users where v1 had 40
    assert result.actions == ["LATEST pointed back from v-bad to v1, the last snapshot that passed its gate"]
    assert snapshot.model_version_of(snapshot.latest_version_dir(bad_snapshot).name) == "v1"


def test_the_job_exits_non_zero_when_its_gate_fails(published_lake, bad_snapshot):
    """As a process (python -m jobs.validate, spark-submit, a SparkApplication): a failed gate is exit code 1."""
    cmd = [sys.executable, "-m", "jobs.validate", "--lake", published_lake["lake"], "--stage", "snapshot",
           "--model-version", "v-bad", "--master", "local[1]", "--conf", "spark.ui.enabled=false"]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "FAILED snapshot_user_recommendations: no item twice in a list" in proc.stdout
    assert "gate snapshot failed: snapshot_user_recommendations: no item twice in a list" in proc.stderr
