"""Where every table lives: one registry of table addresses under a lake root.

A lake root is a local folder or any Hadoop URI (``s3a://bucket/lake``); each table is ``<root>/<layer>/<name>``.
Code names a table by its attribute (``lake.silver``, ``lake.training``); no layer or table literal appears
anywhere else.
"""
from __future__ import annotations

from pathlib import Path

# name -> (layer, table folder): the whole lake
TABLES = {
    "bronze": ("bronze", "interactions"),
    "silver": ("silver", "interactions"),
    "event_keys": ("silver", "event_keys"),  # key -> date index of silver's id-keyed events (flow.event_keys)
    "quarantine": ("quarantine", "interactions"),
    "user_ids": ("silver", "user_ids"),
    "item_ids": ("silver", "item_ids"),
    "training": ("gold", "training"),
    "user_recommendations": ("gold", "user_recommendations"),
    "similar_items": ("gold", "similar_items"),
    "popular_items": ("gold", "popular_items"),
    "popular_items_recent": ("gold", "popular_items_recent"),
    "ingested_files": ("meta", "ingested_files"),
    "ingest_runs": ("meta", "ingest_runs"),
    "model_runs": ("meta", "model_runs"),
    "tuning_results": ("meta", "tuning_results"),
    "validation_runs": ("meta", "validation_runs"),
    "maintenance_runs": ("meta", "maintenance_runs"),
}
LAYERS = ("bronze", "silver", "quarantine", "gold", "meta")


class Lake:
    """The addresses of one lake's tables and folders. ``Lake("./lake").silver == "./lake/silver/interactions"``."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")

    def __getattr__(self, name: str) -> str:
        if name in TABLES:
            layer, table = TABLES[name]
            return f"{self.root}/{layer}/{table}"
        raise AttributeError(f"{type(self).__name__} has no table {name!r}; tables: {', '.join(sorted(TABLES))}")

    def table(self, layer: str, name: str) -> str:
        """The address of ``layer/name`` (prefer the named attributes; this serves listings over layers)."""
        return f"{self.root}/{layer}/{name}"

    @property
    def checkpoints(self) -> str:
        return f"{self.root}/_checkpoints"

    @property
    def models(self) -> str:
        return f"{self.root}/models"

    @property
    def snapshots(self) -> str:
        return f"{self.root}/snapshots"


def local_path(uri: str) -> Path:
    """A filesystem path for a local lake URI (file:/... or plain path)."""
    return Path(uri[len("file:"):] if uri.startswith("file:") else uri)
