"""What a failed gate undoes, so that what comes after it keeps reading the last good data.

A failed raw or silver gate for an ingest run restores silver to the version before that run (only if nothing
committed since; bronze and quarantine keep the rows). A failed snapshot gate points LATEST back at the last
snapshot that passed. Each function returns one sentence saying what it did (GateResult.actions).
"""
from __future__ import annotations

from lake import tables
from flow import snapshot_store
from lake.registry import Lake
from serving import snapshot
from transforms import columns as C
from validation.history import passed_snapshots


def restore_silver(spark, lake: Lake, run: dict) -> str:
    """Take an ingest run's rows back out of silver (Delta RESTORE to the version before its commit), but only
    if that commit is still silver's latest: a later writer's rows are never thrown away.

    ``run``: the run's meta/ingest_runs row as validation.stages.ingest_run returns it."""
    run_id, path = run[C.INGEST_RUN_ID], lake.silver
    version = (run["summary"].get("versions") or {}).get("silver")
    if version is None or not tables.exists(spark, path):
        return f"silver left as is: ingest run {run_id[:8]} committed nothing to it"
    latest = tables.history(spark, path, 1).select("version", "userMetadata").first()
    if latest["userMetadata"] != f"ingest:{run_id}" or latest["version"] != version:
        return (f"silver left at v{latest['version']}: its latest commit is not ingest run {run_id[:8]}'s "
                f"(v{version}); take the run's rows out by hand if needed")
    if version == 0:
        return f"silver left as is: ingest run {run_id[:8]} created it (v0), there is no earlier version to restore"
    tables.restore(spark, path, version - 1)
    return (f"silver restored to v{version - 1}, the version before ingest run {run_id[:8]}: its rows are out "
            "(bronze and quarantine keep them)")


def restore_latest(spark, lake: Lake, snapshot_root: str | None, failed_version: str | None) -> str:
    """Point LATEST back at the newest snapshot that passed its gate (an intact folder of that model version), if
    LATEST names a folder of the failed model version."""
    root = snapshot_store.snapshot_root(spark, lake, snapshot_root)
    try:
        current = snapshot.model_version_of(snapshot.latest_version_dir(root).name)
    except snapshot.SnapshotError:
        return "LATEST left as is: there is none"
    if current != failed_version:
        return f"LATEST left at {current} (the failed snapshot {failed_version} is not the one served)"
    for good in passed_snapshots(spark, lake, besides=failed_version):
        manifest = snapshot.intact_version(root, good)
        if manifest is None:
            continue
        snapshot.set_latest(root, manifest.path.name)
        return f"LATEST pointed back from {failed_version} to {good}, the last snapshot that passed its gate"
    return f"LATEST still names {failed_version}: no earlier snapshot passed its gate and still verifies"
