"""Gates that always run and see: the silver gate without new input, baselines said out loud, concentration.

The slow tests copy the lake of the session fixture ``published_lake`` (a gated nightly published model v1), so
they can damage it freely, and run the real nightly (flow.nightly, and jobs.nightly as a process) on the copy.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from flow.nightly import NightlyOptions, nightly
from flow.score import ScoreOptions
from flow.train import TrainOptions
from lake import tables
from lake.registry import Lake
from models.als import AlsParams
from serving import snapshot
from tests.conftest import REPO_ROOT
from tests.validation.helpers import N, folder_digest, write_logs
from tests.validation.test_drift import silver_events
from transforms import columns as C
from validation.drift import ProfileSpec, compare, profile, resolve_thresholds
from validation.gates import GateOptions, run_gate
from validation.report import GateFailed

ALS = AlsParams(rank=4, max_iter=3, reg_param=0.05)


def shares(rows: int, on_top: float) -> dict:
    """A profile whose top item holds ``on_top`` of ``rows`` rows (the rest spread thinly)."""
    return {"rows": rows, "distinct_users": 40, "distinct_items": 150, "top_share": {"user": 0.04, "item": on_top}}


def test_the_profile_holds_the_share_of_rows_on_the_top_user_and_item(spark):
    rows = [(f"u{i % 20}", "hot" if i % 10 else f"i{i}", 1.0) for i in range(1000)]  # 90% on one item
    df = spark.createDataFrame(rows, "user_id string, item_id string, value double")
    result = profile(df, ProfileSpec(user_col="user_id", item_col="item_id"))
    assert result["top_share"] == {"user": 0.05, "item": 0.9}
    assert (result["distinct_users"], result["distinct_items"]) == (20, 101)
    assert profile(df.limit(0), ProfileSpec(user_col="user_id"))["top_share"] == {"user": None}


def test_a_batch_concentrated_on_one_item_trips_the_top_share_check():
    checks = {c.name: c for c in compare("batch_events", shares(1500, 0.9), shares(1480, 0.03),
                                         resolve_thresholds("raw"))}
    top = checks["drift_top_item_share"]
    assert not top.success and top.observed == {"now": 0.9, "before": 0.03, "increase": 0.87}
    assert top.description == "share of rows on the top item rises by at most 10.00% points"
    assert checks["drift_top_user_share"].success
    assert compare("t", shares(1500, 0.12), shares(1480, 0.03), resolve_thresholds("raw"))[-1].success
    few = [c.name for c in compare("t", shares(50, 0.9), shares(1480, 0.03), resolve_thresholds("raw"))]
    assert "drift_top_item_share" not in few  # 50 rows: too few to judge a share
    recs = [c.name for c in compare("t", shares(1500, 0.9), shares(1480, 0.03), resolve_thresholds("recommendations"))]
    assert "drift_top_item_share" not in recs  # models differ in how often they recommend their top item


def test_a_first_gate_run_says_it_records_the_baseline(spark, tmp_path, capsys):
    lake = Lake(str(tmp_path / "lake"))
    tables.append(silver_events(spark, 300), lake.silver, partition_by=[C.EVENT_MONTH])
    options = GateOptions(reports_dir=str(tmp_path / "reports"))
    first = run_gate(spark, "silver", lake, fmt="movielens", options=options)
    assert first.success and first.previous_run_id is None
    assert ("no baseline: no earlier silver gate passed, so drift was not measured; this run's profiles are "
            "recorded as the baseline for the next run") in capsys.readouterr().out
    second = run_gate(spark, "silver", lake, fmt="movielens", options=options)
    assert second.previous_run_id == first.run_id
    assert f"drift measured against run {first.run_id[:8]}" in capsys.readouterr().out
    assert {"drift_top_user_share", "drift_top_item_share"} <= {c.name for c in second.checks}


# ---------------------------------------------------------------------------------------------- the nightly


@pytest.fixture
def lake_copy(published_lake, tmp_path) -> Lake:
    """An independent copy of the published lake (Delta tables hold relative paths, so a copy is a lake)."""
    copy = tmp_path / "lake"
    shutil.copytree(published_lake["lake"], copy)
    return Lake(str(copy))


def served(lake: Lake) -> tuple[str, dict]:
    root = Path(lake.snapshots)
    return snapshot.latest_version_dir(root).name, folder_digest(root)


def nightly_options(model_version: str, input: str | None = None) -> NightlyOptions:
    return NightlyOptions(input=input, fmt="movielens", train=TrainOptions(als=ALS, model_version=model_version),
                          score=ScoreOptions(n=N))


def lose_half_the_users(spark, lake: Lake) -> None:
    users = [r[0] for r in tables.read(spark, lake.silver).select(C.USER_ID).distinct().orderBy(C.USER_ID).collect()]
    DeltaTable.forPath(spark, lake.silver).delete(F.col(C.USER_ID).isin(users[::2]))


@pytest.mark.slow
def test_nightly_without_input_gates_the_silver_it_trains_from(spark, published_lake, lake_copy):
    """A clean run: the silver gate runs before build_training and training drift is measured against the last
    good run. Then half the users leave silver: jobs.nightly stops at the silver gate, exit 1, nothing published."""
    done = nightly(spark, lake_copy, nightly_options("v3"))
    gates = {stage: summary for step in done.values() for stage, summary in step["gates"].items()}
    assert set(gates) == {"silver", "training", "recommendations", "snapshot"}
    assert set(done["build_training"]["gates"]) == {"silver", "training"}
    assert gates["silver"]["previous_run_id"] is not None and gates["training"]["previous_run_id"] is not None
    assert snapshot.model_version_of(served(lake_copy)[0]) == "v3"

    lose_half_the_users(spark, lake_copy)
    before, training_version = served(lake_copy), tables.version(spark, lake_copy.training)
    cmd = [sys.executable, "-m", "jobs.nightly", "--lake", lake_copy.root, "--model-version", "v4", "--rank", "4",
           "--max-iter", "3", "--n", str(N), "--master", "local[1]", "--conf", "spark.ui.enabled=false"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "gate silver FAILED" in proc.stdout and "distinct users stays within >= 1x" in proc.stdout
    assert "!! nightly stopped: GateFailed" in proc.stderr
    assert served(lake_copy) == before  # nothing published: same LATEST, same bytes
    assert tables.version(spark, lake_copy.training) == training_version  # build_training never ran


def concentrated_logs(source: str, folder: Path, *, share: float = 0.9) -> str:
    """A generated ratings log (user,item,rating,ts lines) with the item of ``share`` of its lines replaced by
    one item; part files only (no checksum files, which would no longer match)."""
    folder.mkdir(parents=True)
    every = round(1 / (1 - share))
    for path in sorted(Path(source).iterdir()):
        if path.name.startswith((".", "_")):
            continue
        lines = path.read_text().splitlines()
        out = []
        for i, line in enumerate(lines):
            fields = line.split(",")
            if len(fields) == 4 and fields[0] != "userId" and i % every:
                fields[1] = "hot-item"
            out.append(",".join(fields))
        (folder / path.name).write_text("\n".join(out) + "\n")
    return str(folder)


@pytest.mark.slow
def test_a_batch_with_most_events_on_one_item_fails_the_raw_gate_and_is_taken_out(spark, published_lake, lake_copy,
                                                                                   tmp_path):
    logs = concentrated_logs(write_logs(spark, tmp_path / "plain", seed=5), tmp_path / "hot")
    rows_before, before = tables.read(spark, lake_copy.silver).count(), served(lake_copy)
    with pytest.raises(GateFailed) as failure:
        nightly(spark, lake_copy, nightly_options("v-hot", input=logs))
    result = failure.value.result
    assert result.stage == "raw"
    assert [c.name for c in result.failures] == ["drift_top_item_share"]
    assert result.failures[0].target == "batch_events" and result.failures[0].observed["now"] > 0.85
    assert result.actions[0].startswith("silver restored to v")
    assert tables.read(spark, lake_copy.silver).count() == rows_before  # the batch is out of silver again
    assert served(lake_copy) == before  # nothing published
