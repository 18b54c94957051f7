"""Publish a scored model version as a serving snapshot for the lookup service.

    python -m jobs.publish --lake ./lake [--model-version V] [--snapshot-root ./lake/snapshots]

Writes <snapshot-root>/<model_version>/ (parquet tables + manifest.json with row counts and checksums, see
deploy/snapshot.py), verifies it as the service will, and only then points <snapshot-root>/LATEST at it. A
failure at any step leaves LATEST, and so what is served, unchanged. Publishing a version that is already
published and intact only re-points LATEST (use --force to rebuild it). The optional similar_items table is
included when gold/similar_items has rows for the version (jobs.score --similar als|cooccurrence).

The snapshot root is a local folder (in a cluster, a volume shared with the lookup service).
"""
from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/publish.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from pyspark.sql import functions as F

from deploy import snapshot
from jobs import tables
from jobs.cli import Lake, add_lake_arg, base_parser, local_path, spark_from_args
from jobs.score import SIMILAR_ITEM_ID, version_predicate
from jobs.train import latest_model_version
from transforms import columns as C

USERS_PER_FILE = 500_000


class PublishError(RuntimeError):
    """The snapshot could not be published; LATEST still names the previous one."""


def build_parser():
    parser = base_parser(__doc__.split("\n\n")[0])
    add_lake_arg(parser)
    parser.add_argument("--model-version", default=None, help="scored model version to publish (default: the latest trained)")
    parser.add_argument("--snapshot-root", default=None, help="local folder of snapshots (default: <lake>/snapshots)")
    parser.add_argument("--force", action="store_true", help="rebuild the snapshot even if this version is published")
    return parser


def ranked_lists(rows, key: str, item: str):
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


def user_recommendation_lists(recs):
    """One row per user: item_ids and scores as lists in rank order (the snapshot's user_recommendations)."""
    return ranked_lists(recs, C.USER_ID, C.ITEM_ID)


def similar_item_lists(similar):
    """One row per item: similar item_ids and scores in rank order (the snapshot's optional similar_items)."""
    return ranked_lists(similar, C.ITEM_ID, SIMILAR_ITEM_ID)


def _write_parquet(df, folder: Path, files: int) -> None:
    df.coalesce(max(1, files)).write.mode("errorifexists").parquet(folder.resolve().as_uri())
    for extra in folder.iterdir():  # keep only the data files the manifest lists
        if extra.suffix != ".parquet":
            extra.unlink()


def run(spark, args) -> dict:
    started = time.time()
    lake = Lake(args.lake)
    model_version = args.model_version or latest_model_version(spark, lake)
    root = local_path(args.snapshot_root or lake.snapshots)
    root.mkdir(parents=True, exist_ok=True)
    final = root / model_version

    if final.exists() and not args.force:
        try:
            manifest = snapshot.verify_snapshot(final)
        except snapshot.SnapshotError as exc:
            raise PublishError(f"{final} exists but is broken ({exc}); re-run with --force to rebuild it") from exc
        snapshot.set_latest(root, model_version)
        print(f"publish {model_version}: already published and intact at {final}; LATEST points at it")
        return {"model_version": model_version, "path": str(final), "rows": _rows(manifest), "reused": True}

    where = version_predicate(model_version)
    recs = tables.read(spark, lake.table("gold", "user_recommendations")).where(where)
    popular = tables.read(spark, lake.table("gold", "popular_items")).where(where)
    lists = user_recommendation_lists(recs).cache()
    try:
        users = lists.count()
        n = recs.agg(F.max(C.RANK)).first()[0]
        if not users or n is None:
            raise PublishError(f"model version {model_version!r} has no rows in gold/user_recommendations: run jobs.score")
        if popular.limit(1).count() == 0:
            raise PublishError(f"model version {model_version!r} has no rows in gold/popular_items: run jobs.score")
        staging = root / f".staging-{model_version}-{uuid.uuid4().hex[:8]}"
        try:
            _write_parquet(lists.orderBy(C.USER_ID), staging / "user_recommendations", users // USERS_PER_FILE + 1)
            _write_parquet(popular.select(F.col(C.RANK).cast("int"), C.ITEM_ID, F.col(C.SCORE).cast("double"))
                           .orderBy(C.RANK), staging / "popular_items", 1)
            similar = _similar_items_of(spark, lake, where)
            if similar is not None:
                _write_parquet(similar_item_lists(similar).orderBy(C.ITEM_ID), staging / "similar_items", 1)
            snapshot.write_manifest(staging, model_version=model_version, n=int(n))
            manifest = snapshot.verify_snapshot(staging)
            _swap_in(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        lists.unpersist()
    snapshot.set_latest(root, model_version)
    summary = {"model_version": model_version, "path": str(final), "rows": _rows(manifest), "n": int(n),
               "reused": False, "seconds": round(time.time() - started, 1)}
    print(f"publish {model_version} -> {final}  ({summary['seconds']} s); LATEST points at it")
    for table, rows in summary["rows"].items():
        print(f"  {table:<22} {rows:>12,} rows")
    print(json.dumps(summary), file=sys.stderr)
    return summary


def _similar_items_of(spark, lake: Lake, where: str):
    """This version's rows of gold/similar_items, or None when it has none (jobs.score --similar none)."""
    rows = tables.read_if_exists(spark, lake.table("gold", "similar_items"))
    if rows is None:
        return None
    rows = rows.where(where)
    return rows if rows.limit(1).count() else None


def _rows(manifest: snapshot.Manifest) -> dict[str, int]:
    return {name: entry["rows"] for name, entry in manifest.tables.items()}


def _swap_in(staging: Path, final: Path) -> None:
    """Move the verified staging folder to its final name; a previous copy (--force) is removed afterwards."""
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
        final.rename(old)
    staging.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    spark = spark_from_args("recsys-publish", args)
    try:
        run(spark, args)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
