"""flow.publish on a small gold layer written with Delta: one folder per publish, LATEST replaced last, cleanup.

The fault-injection tests run publish in a separate process (tests/scoring/publish_killer.py) that dies with
os._exit right after each of its steps, and then read LATEST as a fresh lookup service would.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flow.maintain import MaintainOptions, maintain
from flow.publish import PUBLISH_STEPS, PublishOptions, publish
from lake import tables
from lake.registry import Lake
from serving import snapshot
from serving.lookup import load_snapshot
from tests.conftest import REPO_ROOT
from tests.scoring.publish_killer import KILLED
from tests.validation.helpers import folder_digest

USERS, N, POPULAR = 30, 3, 5


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory) -> Lake:
    """gold/user_recommendations, popular_items and similar_items of model version v1, written directly."""
    lake = Lake(str(tmp_path_factory.mktemp("publish") / "lake"))
    recs = spark.createDataFrame(
        [("v1", f"u{u}", r, f"i{(u + r) % 11}", 1.0 / r) for u in range(USERS) for r in range(1, N + 1)],
        "model_version string, user_id string, rank int, item_id string, score double")
    popular = spark.createDataFrame([("v1", r, f"i{r}", 10.0 - r) for r in range(1, POPULAR + 1)],
                                    "model_version string, rank int, item_id string, score double")
    similar = spark.createDataFrame([("v1", f"i{i}", 1, f"i{(i + 1) % 11}", 0.5) for i in range(11)],
                                    "model_version string, item_id string, rank int, similar_item_id string, "
                                    "score float")
    for df, path in ((recs, lake.user_recommendations), (popular, lake.popular_items), (similar, lake.similar_items)):
        tables.overwrite(df, path, partition_by=["model_version"])
    return lake


def root_of(lake: Lake) -> Path:
    return Path(lake.snapshots)


def served(lake: Lake) -> tuple[str, str]:
    """What a fresh service reads: LATEST's folder name and the model version of the snapshot it loads."""
    loaded = load_snapshot(root_of(lake))  # verify (manifest, checksums, rows, schemas) and build, as the service
    return snapshot.latest_version_dir(root_of(lake)).name, loaded.model_version


def test_each_publish_writes_its_own_folder_and_never_touches_the_served_one(spark, lake):
    first = publish(spark, lake, PublishOptions(model_version="v1"))
    served_folder = Path(first["path"])
    before = folder_digest(served_folder)
    again = publish(spark, lake, PublishOptions(model_version="v1", force=True))

    assert first["reused"] is False and again["reused"] is False
    assert first["rows"] == again["rows"] == {"user_recommendations": USERS, "popular_items": POPULAR,
                                              "similar_items": 11}
    assert snapshot.model_version_of(served_folder.name) == "v1" and again["path"] != first["path"]
    assert folder_digest(served_folder) == before  # the folder served until now: same files, same bytes
    assert served(lake) == (Path(again["path"]).name, "v1")
    assert publish(spark, lake, PublishOptions(model_version="v1"))["path"] == again["path"]  # reused, intact


def test_publish_removes_leftovers_older_than_a_day(spark, lake):
    root = root_of(lake)
    old = time.time() - 2 * 24 * 3600
    leftovers = [root / ".staging-v1-1234abcd", root / ".old-v1-1234abcd", root / "v1~20250101T000000Z-abcdef"]
    for folder in leftovers:
        (folder / "user_recommendations").mkdir(parents=True)
        os.utime(folder, (old, old))
    young = root / "v1~29990101T000000Z-abcdef"
    young.mkdir()

    summary = publish(spark, lake, PublishOptions(model_version="v1", force=True))
    assert set(summary["removed"]) >= {f.name for f in leftovers}
    assert not any(f.exists() for f in leftovers) and young.is_dir()  # a publish may be writing it
    young.rmdir()


@pytest.mark.slow
@pytest.mark.parametrize("step", PUBLISH_STEPS[:-1])  # after the last one, publish has finished
def test_a_publish_killed_after_any_step_leaves_latest_on_a_complete_snapshot(spark, lake, step):
    root = root_of(lake)
    if not (root / snapshot.LATEST_NAME).exists():
        publish(spark, lake, PublishOptions(model_version="v1"))  # what the kill is measured against
    before = snapshot.latest_version_dir(root).name
    digest = folder_digest(root / before)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.scoring.publish_killer", "--lake", lake.root, "--model-version", "v1",
         "--force", "--kill-after", step],
        cwd=REPO_ROOT, env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}, capture_output=True, text=True,
        timeout=900)
    assert proc.returncode == KILLED, proc.stderr[-3000:]

    latest, model_version = served(lake)  # complete and verified, whichever it is
    assert model_version == "v1"
    if PUBLISH_STEPS.index(step) < PUBLISH_STEPS.index("latest"):
        assert latest == before and folder_digest(root / before) == digest  # the old one, untouched
    else:
        assert latest != before  # the new one


def test_maintain_removes_what_killed_publishes_left(spark, lake):
    root = root_of(lake)
    dead = root / snapshot.new_version_name("v1")
    (dead / "popular_items").mkdir(parents=True)  # a publish that died before its manifest
    publish(spark, lake, PublishOptions(model_version="v1", force=True))  # the served one is now younger
    latest = snapshot.latest_version_dir(root).name
    old = time.time() - 2 * 24 * 3600
    for entry in root.iterdir():
        os.utime(entry, (old, old))

    report = maintain(spark, lake, MaintainOptions(tables=("gold/popular_items",), optimize=False, vacuum=False))
    assert dead.name in report["snapshots"]["removed"] and report["snapshots"]["not_removed"] == {}
    others = {p.name for p in root.iterdir()} - {snapshot.LATEST_NAME, latest}
    assert len(others) <= 1 and all(snapshot.verify_snapshot(root / n) for n in others)  # the previous one
    assert served(lake) == (latest, "v1")
