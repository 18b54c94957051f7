"""flow.snapshot_retention: what a cleanup of a snapshot root removes and what it keeps (real folders, and an S3
bucket on the test S3 server; no Spark)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from flow.snapshot_retention import clean_snapshots
from serving import snapshot, storage
from tests.support.serving import write_snapshot

DAY = 24 * 3600


def made(root: Path, name: str, *, created_at: str | None = None, age_days: float = 2.0,
         complete: bool = True) -> str:
    """A snapshot folder ``name`` under ``root`` (``complete``: with its manifest), last modified ``age_days`` ago."""
    scratch = root / ".scratch"
    folder = write_snapshot(scratch, model_version=snapshot.model_version_of(name), n=1, publish=False,
                            user_recommendations={"u1": [("a", 1.0)]}, popular_items=[("a", 1.0)])
    if created_at:
        manifest = folder / snapshot.MANIFEST_NAME
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "created_at": created_at}))
    if not complete:
        (folder / snapshot.MANIFEST_NAME).unlink()
    os.rename(folder, root / name)
    scratch.rmdir()
    age(root / name, age_days)
    return name


def age(path: Path, days: float) -> None:
    stamp = time.time() - days * DAY
    os.utime(path, (stamp, stamp))


def leftover(root: Path, name: str, *, folder: bool, age_days: float = 2.0) -> str:
    path = root / name
    if folder:
        (path / "user_recommendations").mkdir(parents=True)
        (path / "user_recommendations" / "part-00000.parquet").write_bytes(b"half")
    else:
        path.write_text("v1\n")
    age(path, age_days)
    return name


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "snapshots"


def test_superseded_snapshots_and_leftovers_older_than_a_day_go(root):
    root.mkdir()
    oldest = made(root, "v1~20260101T000000Z-aaaaaa", created_at="2026-01-01T00:00:00Z")
    previous = made(root, "v2~20260102T000000Z-bbbbbb", created_at="2026-01-02T00:00:00Z")
    legacy = made(root, "v0", created_at="2025-12-01T00:00:00Z")
    current = made(root, "v3~20260103T000000Z-cccccc", created_at="2026-01-03T00:00:00Z")
    never_served = made(root, "v4~20260104T000000Z-dddddd", created_at="2026-01-04T00:00:00Z")
    dead = made(root, "v5~20260105T000000Z-eeeeee", complete=False)
    gone = {oldest, legacy, never_served, dead,
            leftover(root, ".staging-v3-1234abcd", folder=True), leftover(root, ".old-v3-1234abcd", folder=True),
            leftover(root, ".LATEST.1234abcd.tmp", folder=False), leftover(root, "LATEST.tmp", folder=False)}
    young = {made(root, "v6~20260106T000000Z-ffffff", complete=False, age_days=0.5),
             leftover(root, ".staging-v6-9999", folder=True, age_days=0.5)}
    foreign = {leftover(root, "silver", folder=True), leftover(root, "notes.txt", folder=False),
               leftover(root, ".git", folder=True)}
    snapshot.set_latest(root, current)

    result = clean_snapshots(root)

    assert sorted(result.removed) == sorted(gone) and result.failed == {}
    assert {p.name for p in root.iterdir()} == {snapshot.LATEST_NAME, current, previous, *young, *foreign}
    assert snapshot.verify_snapshot(snapshot.latest_version_dir(root)).model_version == "v3"


def test_keep_previous_and_min_age_are_settings(root):
    root.mkdir()
    names = [made(root, f"v{i}~2026010{i}T000000Z-00000{i}", created_at=f"2026-01-0{i}T00:00:00Z") for i in (1, 2, 3)]
    snapshot.set_latest(root, names[2])
    assert clean_snapshots(root, min_age_hours=72).removed == []  # all are two days old
    assert clean_snapshots(root, keep_previous=2).removed == []
    assert sorted(clean_snapshots(root, keep_previous=0).removed) == names[:2]
    assert {p.name for p in root.iterdir()} == {snapshot.LATEST_NAME, names[2]}


def test_a_dangling_latest_keeps_every_copy_that_may_be_the_good_one(root):
    """The state the older publish could leave: LATEST names a folder that is gone, the good copy sits in .old-*."""
    root.mkdir()
    good = leftover(root, ".old-v1-1234abcd", folder=True)
    other = made(root, "v0~20250101T000000Z-aaaaaa")
    staging = leftover(root, ".staging-v1-5678", folder=True)
    (root / snapshot.LATEST_NAME).write_text("v1\n")

    assert clean_snapshots(root).removed == [staging]
    assert {p.name for p in root.iterdir()} == {snapshot.LATEST_NAME, good, other}


def test_a_folder_is_removed_manifest_first(root, monkeypatch):
    """A removal that dies half way leaves a folder without manifest: incomplete, never a broken snapshot."""
    root.mkdir()
    old = made(root, "v1~20260101T000000Z-aaaaaa", created_at="2026-01-01T00:00:00Z")
    made(root, "v2~20260102T000000Z-bbbbbb", created_at="2026-01-02T00:00:00Z")
    current = made(root, "v3~20260103T000000Z-cccccc", created_at="2026-01-03T00:00:00Z")
    snapshot.set_latest(root, current)

    def dies(path, *args, **kwargs):
        raise PermissionError(f"cannot remove {path}")

    monkeypatch.setattr("serving.storage.shutil.rmtree", dies)
    result = clean_snapshots(root)
    assert result.removed == [] and list(result.failed) == [old]
    assert not (root / old / snapshot.MANIFEST_NAME).exists() and (root / old / "popular_items").is_dir()
    monkeypatch.undo()
    assert clean_snapshots(root).removed == []  # removing the manifest modified the folder: young again
    age(root / old, 2)
    assert clean_snapshots(root).removed == [old]  # a later run finishes it


def test_the_same_rule_on_s3_where_folders_are_prefixes(root, s3_server):
    root.mkdir()
    oldest = made(root, "v1~20260101T000000Z-aaaaaa", created_at="2026-01-01T00:00:00Z")
    previous = made(root, "v2~20260102T000000Z-bbbbbb", created_at="2026-01-02T00:00:00Z")
    current = made(root, "v3~20260103T000000Z-cccccc", created_at="2026-01-03T00:00:00Z")
    dead = made(root, "v4~20260104T000000Z-dddddd", complete=False)
    leftovers = {leftover(root, ".staging-v3-1234abcd", folder=True),
                 leftover(root, ".LATEST.1234abcd.tmp", folder=False)}
    foreign = {leftover(root, "silver", folder=True), leftover(root, "notes.txt", folder=False)}
    options = storage.S3Options(endpoint_url=s3_server.endpoint_url, region=s3_server.region,
                                access_key=s3_server.access_key, secret_key=s3_server.secret_key)
    uri = f"s3a://{s3_server.make_bucket('retention')}/snapshots"
    bucket = storage.resolve(uri, options)
    pafs.copy_files(str(root), bucket.path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=bucket.fs)
    snapshot.set_latest(uri, current, s3=options)

    assert clean_snapshots(uri, s3=options).removed == []  # just uploaded: every object is young
    result = clean_snapshots(uri, s3=options, now=time.time() + 2 * DAY)

    assert sorted(result.removed) == sorted({oldest, dead, *leftovers}) and result.failed == {}
    assert {e.name for e in storage.list_dir(bucket)} == {snapshot.LATEST_NAME, current, previous, *foreign}
    assert snapshot.verify_snapshot(snapshot.latest_version_dir(bucket)).model_version == "v3"
    assert clean_snapshots(f"s3a://{s3_server.make_bucket('empty')}/snapshots", s3=options).removed == []


def test_a_missing_root_is_nothing_to_do(tmp_path):
    assert clean_snapshots(tmp_path / "nowhere").removed == []


def test_new_version_names_are_unique_and_name_their_model_version():
    names = {snapshot.new_version_name("20261123T010203Z") for _ in range(50)}
    assert len(names) == 50
    assert {snapshot.model_version_of(n) for n in names} == {"20261123T010203Z"}
    assert snapshot.model_version_of("v1") == "v1"  # a folder of the older layout
    with pytest.raises(snapshot.SnapshotError):
        snapshot.new_version_name("a~b")
