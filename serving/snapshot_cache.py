"""The per-pod snapshot cache: verify and convert a published snapshot once, memory-map it in every process.

Every gunicorn worker and gRPC process of the service needs the same arrays. Building them in each process would
cost each one the parquet read (seconds for millions of users) and a private copy in memory. Instead::

    <cache_root>/<model_version>.<manifest sha256[:16]>/     *.npy arrays + info.json (written, then renamed in)
    <cache_root>/<model_version>.<manifest sha256[:16]>.refused    why that snapshot failed its checks
    <cache_root>/<model_version>.<manifest sha256[:16]>.lock       flock: one process builds, the others wait

The first process to want a version takes the lock and runs the builder as a separate, lower-priority process
(``python -m serving.snapshot_cache build ...``), so its parquet reading never competes for the serving process's
GIL or keeps its memory. The builder verifies the snapshot (manifest, checksums, row counts, schemas, then the
consistency checks of serving.lookup) and writes either the arrays or a ``.refused`` note. Every process then
memory-maps the arrays, so the pages are shared: the pod holds one copy per version, whatever the worker count.

A snapshot on S3 (serving.storage) is first downloaded into ``<cache_root>/.download-<key>/``, every file checked
against the manifest's checksum as it arrives, then built from there like a local one; the download folder is
removed when the build ends. A local snapshot is read in place. A file that differs from its checksum (or is
missing) refuses the snapshot; a store that cannot be read (network, permissions) fails the build, which the
next poll tries again.

The key includes the manifest's checksum, which covers every file's checksum: a re-published version with new
content gets a new key. The cache root must be local to the pod (an emptyDir), never shared between pods.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from serving import storage
from serving.lookup import LoadedSnapshot, load_version, open_arrays, save_arrays
from serving.snapshot import Folder, SnapshotError, Where, download_version, manifest_bytes

REPO_ROOT = Path(__file__).resolve().parents[1]
EXIT_REFUSED = 3
EXIT_CHANGED = 4
EXIT_STORE_ERROR = 5
KEEP_VERSIONS = 3
BUILDER_NICE = 19


class BuildFailed(RuntimeError):
    """The builder could not finish (crashed, killed, timed out, the store unreadable, the snapshot re-published
    while read): not a verdict on the snapshot; try again later."""


@dataclass(frozen=True)
class SnapshotKey:
    """Which published snapshot: the version folder (a Path, or a storage.Location on S3) and the checksum of its
    manifest."""

    version_dir: Folder
    manifest_sha256: str

    @property
    def name(self) -> str:
        return f"{self.version_dir.name}.{self.manifest_sha256[:16]}"


def snapshot_key(version_dir: Where, *, s3: storage.S3Options | None = None) -> SnapshotKey:
    """Cheap (reads manifest.json only): what the service compares on every poll. SnapshotError when the folder
    has no manifest; OSError when the store cannot be read (worth another try)."""
    folder = storage.resolve(version_dir, s3)
    return _key_of(folder, manifest_bytes(folder))


def _key_of(folder: storage.Location, manifest: bytes) -> SnapshotKey:
    return SnapshotKey(folder.local if folder.is_local else folder, hashlib.sha256(manifest).hexdigest())


def _download(key: SnapshotKey, into: Path) -> Path:
    """Download the S3 snapshot ``key`` names into the local folder ``into`` (replaced), checking every checksum
    as it arrives (storage errors: OSError; a bad file: SnapshotError); BuildFailed when its manifest is no
    longer the one ``key`` was made from."""
    data = manifest_bytes(key.version_dir)
    if _key_of(key.version_dir, data) != key:
        raise BuildFailed(f"{key.version_dir} was re-published since it was polled; will retry")
    shutil.rmtree(into, ignore_errors=True)  # a download a killed builder left
    return download_version(key.version_dir, into, data=data)


def load_uncached(key: SnapshotKey) -> LoadedSnapshot:
    """The snapshot ``key`` names, verified and built in this process (no cache): a local folder in place, an S3
    one from a temporary download, removed after. SnapshotError: refused; OSError or BuildFailed: try again."""
    if isinstance(key.version_dir, Path):
        return load_version(key.version_dir)
    with tempfile.TemporaryDirectory(prefix="snapshot-download-") as tmp:
        return load_version(_download(key, Path(tmp) / key.name))


def load_cached(key: SnapshotKey, cache_root: str | os.PathLike, *, timeout: float = 900.0) -> LoadedSnapshot:
    """The snapshot ``key`` names, memory-mapped from the cache, building it first if no process has yet.

    Raises SnapshotError when the snapshot fails its checks (now or in an earlier attempt by any process of the
    pod), BuildFailed when the builder could not finish.
    """
    root = Path(cache_root)
    root.mkdir(parents=True, exist_ok=True)
    entry, refused = root / key.name, root / f"{key.name}.refused"
    with open(root / f"{key.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if not entry.is_dir() and not refused.is_file():
            _run_builder(key, root, timeout)
    if refused.is_file():
        raise SnapshotError(json.loads(refused.read_text())["error"])
    if not entry.is_dir():
        raise BuildFailed(f"the builder finished but {entry} is missing")
    # open_arrays takes a local path; an S3 folder is named by its URI (informational: nothing is read there)
    return open_arrays(entry, key.version_dir if isinstance(key.version_dir, Path) else str(key.version_dir))


def _run_builder(key: SnapshotKey, root: Path, timeout: float) -> None:
    command = [sys.executable, "-m", "serving.snapshot_cache", "build", "--snapshot-dir", str(key.version_dir),
               "--cache-root", str(root), "--expect-manifest-sha256", key.manifest_sha256]
    env = dict(os.environ)
    if isinstance(key.version_dir, storage.Location) and key.version_dir.s3 is not None:
        env.update(key.version_dir.s3.to_env())  # the builder resolves the URI with the same S3 options
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    started = time.monotonic()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BuildFailed(f"building the cache for {key.version_dir} took over {timeout:g} s; gave up") from None
    if done.returncode == 0 or done.returncode == EXIT_REFUSED:
        return
    if done.returncode == EXIT_CHANGED:
        raise BuildFailed(f"{key.version_dir} changed while it was being read; will retry")
    tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
    raise BuildFailed(f"the cache builder for {key.version_dir} exited with {done.returncode} after "
                      f"{time.monotonic() - started:.1f} s: " + " | ".join(tail))


def build(version_dir: Where, cache_root: Path, expect_manifest_sha256: str | None = None, *,
          s3: storage.S3Options | None = None) -> int:
    """Verify ``version_dir`` (a local folder, or on S3: downloaded first into ``<cache_root>/.download-<key>``,
    removed after) and write its cache entry (exit 0) or its ``.refused`` note (exit 3); exit 4 when it changed
    since it was polled or while it was read, 5 when the store or the cache could not be read or written."""
    try:
        key = snapshot_key(version_dir, s3=s3)
    except OSError as exc:
        print(f"could not read the manifest of {version_dir}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_STORE_ERROR
    if expect_manifest_sha256 and key.manifest_sha256 != expect_manifest_sha256:
        print(f"the manifest of {version_dir} changed since it was polled", file=sys.stderr)
        return EXIT_CHANGED
    entry = cache_root / key.name
    tmp = cache_root / f".tmp-{key.name}-{uuid.uuid4().hex[:8]}"
    download = cache_root / f".download-{key.name}"
    try:
        snapshot = _load(key, download)
        save_arrays(snapshot, tmp)
        if not entry.is_dir():  # another builder may have finished first; either copy is the same
            os.rename(tmp, entry)
    except BuildFailed as exc:
        print(exc, file=sys.stderr)
        return EXIT_CHANGED
    except SnapshotError as exc:
        _write_note(cache_root / f"{key.name}.refused", exc)
        print(f"refused {version_dir}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as exc:  # local files that cannot be read are SnapshotErrors (load_version): the store or cache
        print(f"could not build {version_dir}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_STORE_ERROR
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(download, ignore_errors=True)
    print(json.dumps({"cache_entry": str(entry), "model_version": snapshot.model_version,
                      "users": snapshot.user_count, "similar_items": snapshot.similar_count,
                      "bytes": snapshot.nbytes(), "bytes_per_user": round(snapshot.bytes_per_user(), 1)}))
    prune(cache_root, keep=KEEP_VERSIONS)
    return 0


def _load(key: SnapshotKey, download: Path) -> LoadedSnapshot:
    """Verify and build ``key``'s snapshot: a local folder in place (BuildFailed if it is re-published while
    being read: what was read may be a mix), an S3 one from its download into ``download``."""
    if not isinstance(key.version_dir, Path):
        return load_version(_download(key, download))
    snapshot = load_version(key.version_dir)
    if snapshot_key(key.version_dir) != key:
        raise BuildFailed(f"{key.version_dir} was re-published while it was being read")
    return snapshot


def _write_note(note: Path, exc: SnapshotError) -> None:
    tmp = note.with_suffix(".refused.tmp")
    tmp.write_text(json.dumps({"error": str(exc)}))
    os.replace(tmp, note)


def prune(cache_root: Path, *, keep: int) -> None:
    """Remove all but the ``keep`` newest entries (and their notes). Processes that still map a removed entry
    keep reading it: on Linux, unlinked files live until their last mapping closes."""
    entries = sorted((p for p in cache_root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    notes = sorted(cache_root.glob("*.refused"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in notes[keep:]:
        old.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.snapshot_cache", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="verify a snapshot version and write its cache entry")
    build_cmd.add_argument("--snapshot-dir", required=True,
                           help="the version folder: a local path, or an s3:// / s3a:// URI (S3 options from AWS_*)")
    build_cmd.add_argument("--cache-root", required=True, type=Path)
    build_cmd.add_argument("--expect-manifest-sha256", default=None)
    args = parser.parse_args(argv)
    os.nice(BUILDER_NICE)  # the lowest priority: serving processes come first, the build uses what they leave
    args.cache_root.mkdir(parents=True, exist_ok=True)
    return build(args.snapshot_dir, args.cache_root, args.expect_manifest_sha256)


if __name__ == "__main__":
    sys.exit(main())
