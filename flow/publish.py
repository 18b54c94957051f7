"""Publish a scored model version as a serving snapshot for the lookup service.

    summary = publish(spark, Lake("./lake"), PublishOptions(model_version="20261123T010203Z"))

Every publish writes a folder of its own, <snapshot root>/<model_version>~<UTC stamp>-<hex>/ (parquet tables, then
manifest.json with row counts and checksums, see serving/snapshot.py, the one contract between batch and
serving), verifies it as the service will, and only then replaces <snapshot root>/LATEST (a small file written
to a temporary name and moved over it: the one atomic step, and the last). No folder is ever renamed, and the
folder LATEST names is never written to, so a publish that dies at any point leaves LATEST naming a complete,
verified snapshot (the previous one, or the new one once LATEST is replaced); what it wrote is a leftover that
flow.snapshot_retention removes once it is a day old. Publishing a version that has an intact published folder
only points LATEST at it (``force`` builds a new folder). The optional similar_items table is included when
gold/similar_items has rows for the version. After LATEST moves, the root is cleaned (flow.snapshot_retention).

The steps, in order (PUBLISH_STEPS; ``on_step`` is called after each, which is where the fault-injection test
kills the process): user_recommendations, popular_items, similar_items written; manifest written; verified;
latest replaced; cleaned.

The snapshot root is a local folder or an object-storage URI (``s3a://bucket/snapshots``; flow.snapshot_store):
Spark's executors write the tables there (through S3A's magic committer on S3), and the driver writes the
manifest and LATEST through serving.storage, with the session's S3A settings. On S3, LATEST is one PUT of a
small object: atomic, and the last write of a publish. The lookup service downloads and verifies a version before
it maps it, so no folder needs to be shared between batch and serving.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from flow.model_runs import checked_version, latest_model_version, version_predicate
from flow.score import SIMILAR_ITEM_ID
from flow.snapshot_retention import clean_snapshots
from flow.snapshot_store import snapshot_root, spark_uri
from lake import tables
from lake.registry import Lake
from serving import snapshot, storage
from serving.storage import Location
from transforms import columns as C

USERS_PER_FILE = 500_000
PUBLISH_STEPS = ("user_recommendations", "popular_items", "similar_items", "manifest", "verified", "latest",
                 "cleaned")

StepHook = Callable[[str], None]


class PublishError(RuntimeError):
    """The snapshot could not be published; LATEST still names the previous one."""


@dataclass(frozen=True, kw_only=True)
class PublishOptions:
    model_version: str | None = None  # scored model version to publish (None: the latest trained)
    snapshot_root: str | None = None  # folder or s3a:// URI of snapshots (None: the lake's snapshots folder)
    force: bool = False  # build a new snapshot folder even if this version has an intact one


def ranked_lists(rows: DataFrame, key: str, item: str) -> DataFrame:
    """One row per ``key``: ``item`` values and scores as lists in rank order (item_ids, scores)."""
    ranked = F.array_sort(F.collect_list(F.struct(C.RANK, F.col(item).alias("item"), C.SCORE)))
    return (
        rows.groupBy(key).agg(ranked.alias("ranked"))
        .select(
            key,
            F.transform("ranked", lambda r: r["item"]).alias("item_ids"),
            F.transform("ranked", lambda r: r[C.SCORE].cast("float")).alias("scores"),
        )
    )


def publish(spark: SparkSession, lake: Lake, options: PublishOptions, *, on_step: StepHook | None = None) -> dict:
    """Write and verify a new snapshot folder of the version, point LATEST at it, clean the root; returns the
    summary (path, rows per table, ``reused``: True when an intact published folder was only pointed at,
    ``removed``: entries the cleanup removed). ``on_step(name)`` is called after each of PUBLISH_STEPS."""
    started = time.time()
    step = on_step or (lambda name: None)
    model_version = checked_version(options.model_version or latest_model_version(spark, lake))
    root = snapshot_root(spark, lake, options.snapshot_root)
    if root.is_local:
        root.local.mkdir(parents=True, exist_ok=True)
    manifest = None if options.force else snapshot.intact_version(root, model_version)
    reused = manifest is not None
    if manifest is None:
        manifest = _build(spark, lake, root, model_version, step)
    snapshot.set_latest(root, manifest.path.name)
    step("latest")
    cleanup = clean_snapshots(root)
    step("cleaned")
    summary = {"model_version": model_version, "path": str(manifest.path), "rows": _rows(manifest),
               "n": manifest.n, "reused": reused, "removed": cleanup.removed}
    if cleanup.failed:
        summary["not_removed"] = cleanup.failed
    return {**summary, "seconds": round(time.time() - started, 1)}


def _build(spark: SparkSession, lake: Lake, root: Location, model_version: str, step: StepHook) -> snapshot.Manifest:
    """Write and verify a new folder of ``model_version`` under ``root``; returns its manifest."""
    where = version_predicate(model_version)
    recs = tables.read(spark, lake.user_recommendations).where(where)
    lists = ranked_lists(recs, C.USER_ID, C.ITEM_ID).cache()
    try:
        users = lists.count()
        n = recs.agg(F.max(C.RANK)).first()[0]
        if not users or n is None:
            raise PublishError(f"model version {model_version!r} has no rows in gold/user_recommendations: run jobs.score")
        popular = tables.read(spark, lake.popular_items).where(where)
        if popular.limit(1).count() == 0:
            raise PublishError(f"model version {model_version!r} has no rows in gold/popular_items: run jobs.score")
        folder = root / snapshot.new_version_name(model_version)
        return _write_snapshot(spark, lake, folder, model_version, where, lists=lists, users=users, n=int(n),
                               step=step)
    finally:
        lists.unpersist()


def _write_snapshot(spark: SparkSession, lake: Lake, folder: Location, model_version: str, where: str, *,
                    lists: DataFrame, users: int, n: int, step: StepHook) -> snapshot.Manifest:
    """Write the tables into the new ``folder``, then its manifest, and verify it; returns its manifest. The
    folder is removed on any failure (a process that dies leaves it, incomplete, to flow.snapshot_retention)."""
    popular = tables.read(spark, lake.popular_items).where(where)
    try:
        _write_parquet(lists.orderBy(C.USER_ID), folder / "user_recommendations", users // USERS_PER_FILE + 1)
        step("user_recommendations")
        _write_parquet(popular.select(F.col(C.RANK).cast("int"), C.ITEM_ID, F.col(C.SCORE).cast("double"))
                       .orderBy(C.RANK), folder / "popular_items", 1)
        step("popular_items")
        similar = _similar_items_of(spark, lake, where)
        if similar is not None:
            _write_parquet(ranked_lists(similar, C.ITEM_ID, SIMILAR_ITEM_ID).orderBy(C.ITEM_ID),
                           folder / "similar_items", 1)
        step("similar_items")
        snapshot.write_manifest(folder, model_version=model_version, n=n)
        step("manifest")
        manifest = snapshot.verify_snapshot(folder)
        step("verified")
    except BaseException:
        _remove_folder(folder)
        raise
    return manifest


def _write_parquet(df: DataFrame, folder: Location, files: int) -> None:
    df.coalesce(max(1, files)).write.mode("errorifexists").parquet(spark_uri(folder))
    for extra in storage.list_dir(folder):  # keep only the data files the manifest lists
        if not extra.name.endswith(".parquet"):
            (storage.delete_dir if extra.is_dir else storage.delete_file)(folder / extra.name)


def _remove_folder(folder: Location) -> None:
    """Remove a folder this publish wrote, manifest first (so it never reads as complete while half removed)."""
    try:
        storage.delete_file(folder / snapshot.MANIFEST_NAME)
        storage.delete_dir(folder)
    except OSError:
        pass  # a leftover: flow.snapshot_retention removes it once it is a day old


def _similar_items_of(spark: SparkSession, lake: Lake, where: str) -> DataFrame | None:
    """This version's rows of gold/similar_items, or None when it has none (scored with similar="none")."""
    rows = tables.read_if_exists(spark, lake.similar_items)
    if rows is None:
        return None
    rows = rows.where(where)
    return rows if rows.limit(1).count() else None


def _rows(manifest: snapshot.Manifest) -> dict[str, int]:
    return {name: entry["rows"] for name, entry in manifest.tables.items()}
