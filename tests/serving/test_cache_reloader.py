"""The per-pod snapshot cache, the reloader and the service's counters, in process (no server).

The cache builder runs as its own process (``python -m serving.snapshot_cache build``) exactly as in the service.
"""
from __future__ import annotations

import json
import os
import threading

import pytest

from serving import service_metrics as sm
from serving.reloader import SnapshotReloader
from serving.snapshot import SnapshotError, set_latest
from serving.snapshot_cache import KEEP_VERSIONS, load_cached, prune, snapshot_key
from tests.serving.conftest import publish_spec


def _corrupt(version_dir):
    part = sorted((version_dir / "user_recommendations").glob("*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:-1] + b"X")
    return part


def test_cache_is_built_once_and_shared(tmp_path, snapshot_spec):
    version_dir = publish_spec(tmp_path / "snapshots", snapshot_spec)
    key = snapshot_key(version_dir)
    cache = tmp_path / "cache"
    first = load_cached(key, cache)
    entry = cache / key.name
    assert entry.is_dir() and first.origin == str(entry)
    built_at = (entry / "users_items.npy").stat().st_mtime_ns
    second = load_cached(key, cache)  # found, not rebuilt
    assert (entry / "users_items.npy").stat().st_mtime_ns == built_at
    assert second.recommend("42", 3) == first.recommend("42", 3) == snapshot_spec.expected_user("42", 3)
    assert json.loads((entry / "info.json").read_text())["model_version"] == snapshot_spec.model_version


def test_key_follows_the_manifest(tmp_path, snapshot_spec):
    root = tmp_path / "snapshots"
    version_dir = publish_spec(root, snapshot_spec)
    before = snapshot_key(version_dir)
    publish_spec(root, snapshot_spec, popular_items=snapshot_spec.popular_items[:-1])  # same name, new content
    after = snapshot_key(version_dir)
    assert before.version_dir == after.version_dir and before.manifest_sha256 != after.manifest_sha256
    assert before.name.startswith(snapshot_spec.model_version + ".")


def test_refused_snapshot_leaves_a_note_other_processes_read(tmp_path, snapshot_spec):
    version_dir = publish_spec(tmp_path / "snapshots", snapshot_spec)
    part = _corrupt(version_dir)
    key, cache = snapshot_key(version_dir), tmp_path / "cache"
    with pytest.raises(SnapshotError, match=f"{part.name}: checksum .* does not match"):
        load_cached(key, cache)
    note = cache / f"{key.name}.refused"
    assert note.is_file() and not (cache / key.name).exists()
    note.write_text(json.dumps({"error": "the note is read, the snapshot is not checked again"}))
    with pytest.raises(SnapshotError, match="the note is read"):
        load_cached(key, cache)


def test_concurrent_loads_build_once(tmp_path, snapshot_spec):
    version_dir = publish_spec(tmp_path / "snapshots", snapshot_spec)
    key, cache = snapshot_key(version_dir), tmp_path / "cache"
    results, errors = [], []

    def load():
        try:
            results.append(load_cached(key, cache).recommend("u1", 2))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(results) == 3 and all(r == results[0] for r in results)
    assert [p.name for p in cache.iterdir() if p.is_dir()] == [key.name]


def test_prune_keeps_the_newest_entries(tmp_path):
    for i in range(KEEP_VERSIONS + 2):
        (tmp_path / f"v{i}.abc").mkdir()
        os.utime(tmp_path / f"v{i}.abc", (1000 + i, 1000 + i))
    prune(tmp_path, keep=KEEP_VERSIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"v{i}.abc" for i in range(2, KEEP_VERSIONS + 2)]


# -- the reloader ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("use_cache", [False, True], ids=["in-process", "cache"])
def test_reloader_swaps_to_good_snapshots_and_refuses_bad_ones(tmp_path, snapshot_spec, use_cache, caplog):
    root = tmp_path / "snapshots"
    metrics = sm.ServiceMetrics(flush_seconds=0)
    swapped = []
    reloader = SnapshotReloader(root, cache_root=tmp_path / "cache" if use_cache else None, poll_seconds=60,
                                metrics=metrics, on_swap=swapped.append)

    assert reloader.check_once() == "waiting" and reloader.current is None
    assert "no LATEST file" in reloader.not_ready_reason()

    publish_spec(root, snapshot_spec)
    assert reloader.check_once() == "loaded"
    first = reloader.current
    assert first.model_version == "test-v1" and swapped == [first]
    assert reloader.check_once() == "unchanged" and reloader.current is first

    bad = publish_spec(root, snapshot_spec, model_version="test-v2")
    part = _corrupt(bad)
    caplog.set_level("ERROR", logger="serving.reloader")
    assert reloader.check_once() == "refused"
    assert reloader.current is first  # still serving v1
    assert f"refused snapshot {bad}: SnapshotError: {part}: checksum" in caplog.text
    assert "still serving test-v1" in caplog.text
    assert reloader.check_once() == "unchanged"  # refused once, not again on every poll
    assert metrics.total(sm.RELOADS, outcome="refused") == 1
    assert "refused snapshot" in reloader.status()["problem"]

    publish_spec(root, snapshot_spec, model_version="test-v3")
    assert reloader.check_once() == "loaded"
    assert reloader.current.model_version == "test-v3" and reloader.status()["problem"] is None
    assert metrics.total(sm.RELOADS, outcome="loaded") == 2

    set_latest(root, "test-v1")  # roll back
    assert reloader.check_once() == "loaded" and reloader.current.model_version == "test-v1"

    drained = {(m["key"], tuple(sorted(m["tags"].items()))): m["value"] for m in metrics.drain()}
    assert drained[(sm.RELOADS, (("outcome", "loaded"),))] == 3
    assert drained[(sm.RELOADS, (("outcome", "refused"),))] == 1
    assert drained[(sm.SNAPSHOT_INFO, (("snapshot_version", "test-v1"),))] == 1
    assert drained[(sm.SNAPSHOT_INFO, (("snapshot_version", "test-v3"),))] == 0
    assert metrics.drain() == []


def test_reloader_thread_loads_in_the_background(tmp_path, snapshot_spec):
    root = tmp_path / "snapshots"
    publish_spec(root, snapshot_spec)
    reloader = SnapshotReloader(root, cache_root=None, poll_seconds=0.05, metrics=sm.ServiceMetrics())
    loaded = threading.Event()
    reloader.on_swap = lambda snapshot: loaded.set()
    reloader.start()
    try:
        assert loaded.wait(30), reloader.not_ready_reason()
        publish_spec(root, snapshot_spec, model_version="test-v2")
        loaded.clear()
        assert loaded.wait(30) and reloader.current.model_version == "test-v2"
    finally:
        reloader.stop()


def test_unusable_cache_dir_is_a_failed_load_not_a_refusal(tmp_path, snapshot_spec):
    publish_spec(tmp_path / "snapshots", snapshot_spec)
    (tmp_path / "not-a-folder").write_text("")
    metrics = sm.ServiceMetrics()
    reloader = SnapshotReloader(tmp_path / "snapshots", cache_root=tmp_path / "not-a-folder", poll_seconds=60,
                                metrics=metrics)
    assert reloader.check_once() == "failed" and reloader.current is None
    assert "could not load" in reloader.not_ready_reason() and "not-a-folder" in reloader.not_ready_reason()
    assert metrics.total(sm.RELOADS, outcome="failed") == 1 and metrics.total(sm.RELOADS, outcome="refused") == 0


def test_reloader_rejects_a_bad_poll_interval(tmp_path):
    with pytest.raises(ValueError, match="poll_seconds must be > 0"):
        SnapshotReloader(tmp_path, cache_root=None, poll_seconds=0, metrics=sm.ServiceMetrics())


# -- counters ----------------------------------------------------------------------------------------------------------

def test_metrics_accumulate_and_hand_over_deltas():
    metrics = sm.ServiceMetrics(flush_seconds=3600)
    assert not metrics.due()  # nothing pending
    metrics.count(sm.LOOKUPS, kind="user", source="personal")
    metrics.count(sm.LOOKUPS, kind="user", source="personal")
    metrics.count(sm.ERRORS, reason="bad_request")
    metrics.gauge(sm.SNAPSHOT_USERS, 6)
    assert not metrics.due()  # pending, but flushed less than an hour ago
    drained = metrics.drain()
    assert {"type": "COUNTER", "key": sm.LOOKUPS, "value": 2, "tags": {"kind": "user", "source": "personal"}} in drained
    assert {"type": "COUNTER", "key": sm.ERRORS, "value": 1, "tags": {"reason": "bad_request"}} in drained
    assert {"type": "GAUGE", "key": sm.SNAPSHOT_USERS, "value": 6, "tags": {}} in drained
    metrics.count(sm.LOOKUPS, kind="user", source="personal")
    assert metrics.drain() == [{"type": "COUNTER", "key": sm.LOOKUPS, "value": 1,
                                "tags": {"kind": "user", "source": "personal"}}]
    assert metrics.total(sm.LOOKUPS) == 3 and metrics.total(sm.LOOKUPS, source="popular") == 0
    immediate = sm.ServiceMetrics(flush_seconds=0)
    immediate.count(sm.LOOKUPS, kind="user", source="popular")
    assert immediate.due()
