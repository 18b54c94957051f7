"""Which folders of a snapshot root to keep, and removing the others (called by flow.publish and flow.maintain).

    result = clean_snapshots(Path("./lake/snapshots"))   # result.removed: the names removed
    result = clean_snapshots("s3a://bucket/snapshots", s3=options)   # or on S3 (serving.storage.S3Options)

The rule, over the entries of one snapshot root (layout: serving/snapshot.py):

- always kept: LATEST, the folder LATEST names, and the ``keep_previous`` (default 1) newest complete snapshots
  created before it (by their manifest's created_at): what a rollback can point LATEST back at;
- kept while young: any entry modified less than ``min_age_hours`` (default 24) ago, since a publish may still be
  writing it or a service loading it;
- removed: every other version folder, complete or not (superseded snapshots; the folders of publishes that died
  before writing their manifest), and the leftovers of earlier layouts and dead writers: ``.staging-*`` and
  ``.old-*`` folders, ``.LATEST.*.tmp`` and ``LATEST.tmp`` files;
- never touched: anything else (a folder without a manifest whose name is not a publish's, any other file), so a
  root given by mistake loses nothing. While LATEST names no complete snapshot (nothing published yet, or the
  dangling LATEST the older publish could leave), complete snapshots and ``.old-*`` folders stay too: one of
  them may be the only good copy.

A version folder is removed manifest first, so a folder half removed reads as incomplete, never as a snapshot.
Entries are listed and removed through serving.storage: on S3 a "folder" is a key prefix, and its age is that
of the newest object under it (a prefix has no time of its own); a local folder's is its own modification time,
and local symbolic links are never followed (one to a folder is left alone).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from serving import snapshot, storage

logger = logging.getLogger(__name__)

MIN_AGE_HOURS = 24.0
KEEP_PREVIOUS = 1


@dataclass(frozen=True)
class Entry:
    """One entry of a snapshot root: its name, whether it is a folder, and hours since it was last modified."""

    name: str
    is_dir: bool
    age_hours: float


@dataclass
class Cleanup:
    """What clean_snapshots did: names removed, names that could not be removed (name -> error)."""

    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def clean_snapshots(root: str | os.PathLike | storage.Location, *, min_age_hours: float = MIN_AGE_HOURS,
                    keep_previous: int = KEEP_PREVIOUS, now: float | None = None,
                    s3: storage.S3Options | None = None) -> Cleanup:
    """Remove what the module's rule says may go from ``root`` (a local folder, or an S3 URI or Location:
    serving.storage; ``s3`` for an S3 URI); an entry that cannot be removed is reported in Cleanup.failed and
    logged, never raised (the next run tries again)."""
    root = storage.resolve(root, s3)
    result = Cleanup()
    entries = _entries(root, time.time() if now is None else now)
    if not entries:
        return result
    latest = _latest_name(root)
    complete = {e.name: created for e in entries if e.is_dir and not e.name.startswith(".")
                and (created := _created_at(root / e.name)) is not None}
    served = latest in complete  # LATEST names a complete snapshot
    keep = {snapshot.LATEST_NAME, latest, *_previous(complete, latest, keep_previous)}
    for entry in entries:
        if entry.name in keep or entry.age_hours < min_age_hours or not _removable(entry, complete, served):
            continue
        try:
            _remove(root / entry.name, entry.is_dir)
            result.removed.append(entry.name)
        except OSError as exc:
            result.failed[entry.name] = f"{type(exc).__name__}: {exc}"
            logger.warning("could not remove %s: %s", root / entry.name, exc)
    return result


def _previous(complete: dict[str, str], latest: str | None, count: int) -> list[str]:
    """The ``count`` newest complete snapshots created before the one LATEST names (none without LATEST)."""
    if latest not in complete or count <= 0:
        return []
    older = sorted(((c, n) for n, c in complete.items() if (c, n) < (complete[latest], latest)), reverse=True)
    return [n for _, n in older[:count]]


def _removable(entry: Entry, complete: dict[str, str], served: bool) -> bool:
    """Whether the rule lets ``entry`` go (age and the kept names aside); ``served``: LATEST names a complete
    snapshot. Without one, complete snapshots and ``.old-*`` folders stay: one may be the only good copy."""
    name = entry.name
    if not entry.is_dir:
        return name == f"{snapshot.LATEST_NAME}.tmp" or (
            name.startswith(f".{snapshot.LATEST_NAME}.") and name.endswith(".tmp"))
    if name.startswith(".staging-"):
        return True
    if name.startswith(".old-") or name in complete:
        return served
    return not name.startswith(".") and snapshot.VERSION_SEPARATOR in name  # a publish that never wrote its manifest


def _created_at(version_dir: storage.Location) -> str | None:
    """The manifest's created_at (None: no readable manifest, the folder is incomplete)."""
    try:
        return snapshot.read_manifest(version_dir).created_at
    except (snapshot.SnapshotError, OSError):
        return None


def _entries(root: storage.Location, now: float) -> list[Entry]:
    """The root's entries; a symbolic link counts as a file (so one to a folder is never removed as a folder)."""
    entries = []
    for found in storage.list_dir(root):
        mtime = found.mtime if found.mtime is not None else storage.newest_mtime(root / found.name)
        age_hours = (now - mtime) / 3600 if mtime is not None else float("inf")  # an empty prefix: nothing there
        entries.append(Entry(found.name, found.is_dir and not found.is_link, age_hours))
    return entries


def _latest_name(root: storage.Location) -> str | None:
    try:
        return snapshot.latest_version_dir(root).name
    except snapshot.SnapshotError:
        return None


def _remove(location: storage.Location, is_dir: bool) -> None:
    if not is_dir:
        storage.delete_file(location)
        return
    storage.delete_file(location / snapshot.MANIFEST_NAME)
    storage.delete_dir(location)
