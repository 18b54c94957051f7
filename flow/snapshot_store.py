"""Where a lake's serving snapshots live, as code outside Spark reaches them.

    root = snapshot_root(spark, lake, options.snapshot_root)     # a serving.storage.Location
    df.write.parquet(spark_uri(root / folder / "popular_items"))  # the same place, as Spark writes it

A snapshot root is a local folder or an ``s3a://`` / ``s3://`` URI (lake.object_store.check_uri refuses any other
scheme). On S3 it is opened with the Spark session's own S3A settings (lake.object_store.store_options), so
publish, the snapshot gate, the rollback and maintenance reach the bucket exactly as Spark's writers do.
"""
from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from lake import object_store
from lake.registry import Lake, local_path
from serving import storage


def snapshot_root(spark: SparkSession, lake: Lake, root: str | None) -> storage.Location:
    """The snapshot root ``root`` names (default: the lake's snapshots folder)."""
    uri = object_store.check_uri(root or lake.snapshots, "snapshot root")
    if object_store.scheme_of(uri) not in object_store.OBJECT_STORE_SCHEMES:
        return storage.resolve(local_path(uri))
    return storage.resolve(uri, storage.S3Options(**object_store.store_options(spark)))


def spark_uri(location: storage.Location | Path) -> str:
    """``location`` (a Location, or a local Path as serving.snapshot returns for a local root) as a URI Spark's
    readers and writers take: file:/... or s3a://bucket/key."""
    location = storage.resolve(location)
    if location.is_local:
        return location.local.resolve().as_uri()
    return f"s3a://{location.path}"
