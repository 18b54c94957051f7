"""Publish a scored model version as a serving snapshot for the lookup service.

    summary = publish(spark, Lake("./lake"), PublishOptions(model_version="20261123T010203Z"))

Writes <snapshot root>/<model_version>/ (parquet tables + manifest.json with row counts and checksums, see
serving/snapshot.py, the one contract between batch and serving), verifies it as the service will, and only then
points <snapshot root>/LATEST at it. A failure at any step leaves LATEST, and so what is served, unchanged.
Publishing a version that is already published and intact only re-points LATEST (``force`` rebuilds it). The
optional similar_items table is included when gold/similar_items has rows for the version.

The snapshot root is a local folder (in a cluster, a volume shared with the lookup service).
"""
from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from flow.model_runs import latest_model_version, version_predicate
from flow.score import SIMILAR_ITEM_ID
from lake import tables
from lake.registry import Lake, local_path
from serving import snapshot
from transforms import columns as C

USERS_PER_FILE = 500_000


class PublishError(RuntimeError):
    """The snapshot could not be published; LATEST still names the previous one."""


@dataclass(frozen=True, kw_only=True)
class PublishOptions:
    model_version: str | None = None  # scored model version to publish (None: the latest trained)
    snapshot_root: str | None = None  # local folder of snapshots (None: the lake's snapshots folder)
    force: bool = False  # rebuild the snapshot even if this version is published


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


def publish(spark: SparkSession, lake: Lake, options: PublishOptions) -> dict:
    """Write, verify and point LATEST at the version's snapshot; returns the summary (path, rows per table,
    ``reused``: True when an intact published copy was only re-pointed at)."""
    started = time.time()
    model_version = options.model_version or latest_model_version(spark, lake)
    where = version_predicate(model_version)
    root = local_path(options.snapshot_root or lake.snapshots)
    root.mkdir(parents=True, exist_ok=True)
    final = root / model_version
    if final.exists() and not options.force:
        try:
            manifest = snapshot.verify_snapshot(final)
        except snapshot.SnapshotError as exc:
            raise PublishError(f"{final} exists but is broken ({exc}); re-run with --force to rebuild it") from exc
        snapshot.set_latest(root, model_version)
        return {"model_version": model_version, "path": str(final), "rows": _rows(manifest), "reused": True}

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
        manifest = _write_snapshot(spark, lake, root, model_version, where, lists=lists, users=users, n=int(n))
    finally:
        lists.unpersist()
    snapshot.set_latest(root, model_version)
    return {"model_version": model_version, "path": str(final), "rows": _rows(manifest), "n": int(n),
            "reused": False, "seconds": round(time.time() - started, 1)}


def _write_snapshot(spark: SparkSession, lake: Lake, root: Path, model_version: str, where: str, *,
                    lists: DataFrame, users: int, n: int) -> snapshot.Manifest:
    """Write the snapshot in a staging folder, verify it and move it to root/model_version; returns its manifest.
    The staging folder is removed on any failure."""
    staging = root / f".staging-{model_version}-{uuid.uuid4().hex[:8]}"
    popular = tables.read(spark, lake.popular_items).where(where)
    try:
        _write_parquet(lists.orderBy(C.USER_ID), staging / "user_recommendations", users // USERS_PER_FILE + 1)
        _write_parquet(popular.select(F.col(C.RANK).cast("int"), C.ITEM_ID, F.col(C.SCORE).cast("double"))
                       .orderBy(C.RANK), staging / "popular_items", 1)
        similar = _similar_items_of(spark, lake, where)
        if similar is not None:
            _write_parquet(ranked_lists(similar, C.ITEM_ID, SIMILAR_ITEM_ID).orderBy(C.ITEM_ID),
                           staging / "similar_items", 1)
        snapshot.write_manifest(staging, model_version=model_version, n=n)
        manifest = snapshot.verify_snapshot(staging)
        _swap_in(staging, root / model_version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _write_parquet(df: DataFrame, folder: Path, files: int) -> None:
    df.coalesce(max(1, files)).write.mode("errorifexists").parquet(folder.resolve().as_uri())
    for extra in folder.iterdir():  # keep only the data files the manifest lists
        if extra.suffix != ".parquet":
            extra.unlink()


def _similar_items_of(spark: SparkSession, lake: Lake, where: str) -> DataFrame | None:
    """This version's rows of gold/similar_items, or None when it has none (scored with similar="none")."""
    rows = tables.read_if_exists(spark, lake.similar_items)
    if rows is None:
        return None
    rows = rows.where(where)
    return rows if rows.limit(1).count() else None


def _rows(manifest: snapshot.Manifest) -> dict[str, int]:
    return {name: entry["rows"] for name, entry in manifest.tables.items()}


def _swap_in(staging: Path, final: Path) -> None:
    """Move the verified staging folder to its final name; a previous copy (force) is removed afterwards."""
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
        final.rename(old)
    staging.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
