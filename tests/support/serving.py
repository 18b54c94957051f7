"""Write small snapshots with the contract's schemas (pyarrow only), for any test folder.

The batch venv (pytest) imports it; the service that reads these snapshots runs from the serving venv, started
by serving.serve.running_service.
"""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from serving.snapshot import set_latest, write_manifest


def _list_table(key_column: str, lists: dict[str, list[tuple[str, float]]]) -> pa.Table:
    keys = list(lists)
    return pa.table(
        {
            key_column: pa.array(keys, pa.string()),
            "item_ids": pa.array([[i for i, _ in lists[key]] for key in keys], pa.list_(pa.string())),
            "scores": pa.array([[s for _, s in lists[key]] for key in keys], pa.list_(pa.float32())),
        }
    )


def write_snapshot(
    root: str | os.PathLike,
    *,
    model_version: str,
    n: int,
    user_recommendations: dict[str, list[tuple[str, float]]],
    popular_items: list[tuple[str, float]],
    similar_items: dict[str, list[tuple[str, float]]] | None = None,
    files_per_table: int = 1,
    publish: bool = True,
) -> Path:
    """Write a snapshot version with the contract's schemas (rows split over ``files_per_table`` parquet files),
    its manifest, and (``publish``) point LATEST at it. ``similar_items`` (item -> similar items) is optional, as
    in the contract. Returns the version folder."""
    version_dir = Path(root) / model_version
    tables = {
        "user_recommendations": _list_table("user_id", user_recommendations),
        "popular_items": pa.table(
            {
                "rank": pa.array(range(1, len(popular_items) + 1), pa.int32()),
                "item_id": pa.array([i for i, _ in popular_items], pa.string()),
                "score": pa.array([s for _, s in popular_items], pa.float64()),
            }
        ),
    }
    if similar_items is not None:
        tables["similar_items"] = _list_table("item_id", similar_items)
    for name, table in tables.items():
        folder = version_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        step = max(1, -(-table.num_rows // files_per_table))
        for part, start in enumerate(range(0, max(table.num_rows, 1), step)):
            pq.write_table(table.slice(start, step), folder / f"part-{part:05d}.parquet")
    write_manifest(version_dir, model_version=model_version, n=n)
    if publish:
        set_latest(root, model_version)
    return version_dir
