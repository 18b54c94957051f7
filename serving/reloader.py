"""Keep the newest good snapshot loaded: a background thread per process polls LATEST and swaps atomically.

Each poll reads LATEST and the manifest it names (a few kilobytes). When they name a snapshot other than the one
served, it is loaded completely (verified and converted by serving.snapshot_cache, then memory-mapped) *before*
the reference the request threads read is replaced. A request reads that reference once and answers from that
object, so it sees the old snapshot or the new one, never a mix, and none is dropped: the old arrays stay alive
until the last request holding them finishes.

The snapshot root is a local folder or an S3 URI (serving.storage; S3 options from the AWS environment
variables unless given). An S3 snapshot is downloaded into the pod (serving.snapshot_cache) before it is built.

A snapshot that fails its checks is refused: the current one stays, an ERROR log line names the snapshot and the
reason, ``recommender_reloads_total{outcome="refused"}`` counts it, and it is not retried until LATEST or its
manifest changes. A build that could not finish (killed, timed out, the store unreadable) counts as
``outcome="failed"`` and is retried on the next poll; so is a poll that cannot read LATEST or the manifest from
the store (not counted: no load was tried).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from serving import service_metrics as sm
from serving import storage
from serving.lookup import LoadedSnapshot
from serving.snapshot import SnapshotError, latest_version_dir
from serving.snapshot_cache import BuildFailed, SnapshotKey, load_cached, load_uncached, snapshot_key

logger = logging.getLogger(__name__)


class SnapshotReloader:
    """The snapshot a process serves, and the thread that replaces it when a newer good one is published."""

    def __init__(self, snapshot_root: str | os.PathLike | storage.Location, *, cache_root: str | Path | None,
                 poll_seconds: float, metrics: sm.ServiceMetrics, on_swap=None, s3: storage.S3Options | None = None):
        """``snapshot_root``: a local folder, an s3:// or s3a:// URI (``s3``: its options, default from the AWS
        environment variables) or a storage.Location; an unsupported scheme raises UnsupportedScheme here. The
        store is opened by the first poll, in the polling thread (after any fork)."""
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
        self.snapshot_root = snapshot_root
        self._s3 = s3 if s3 is not None or storage.is_local(snapshot_root) else storage.S3Options.from_env()
        self._root: storage.Location | None = None
        self.cache_root = Path(cache_root) if cache_root else None
        self.poll_seconds = poll_seconds
        self.metrics = metrics
        self.on_swap = on_swap
        self.current: LoadedSnapshot | None = None  # read by request threads; replaced whole, never mutated
        self._current_key: SnapshotKey | None = None
        self._refused_key: SnapshotKey | None = None
        self._problem: str | None = None  # why nothing (or not the newest) is served; None when all is well
        self._loading: str | None = None
        self._loaded_at: float | None = None
        self._last_check: float | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- the thread ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="snapshot-reloader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                self.check_once()
            except Exception:  # the thread must outlive any surprise; the next poll tries again
                logger.exception("snapshot poll failed unexpectedly (snapshot_root=%s)", self.snapshot_root)
            if self._stop.wait(self.poll_seconds):
                return

    # -- one poll -----------------------------------------------------------------------------------------------

    def check_once(self) -> str:
        """Poll LATEST once: "unchanged", "waiting" (nothing published), "loaded", "refused" or "failed" (the
        store could not be read or the build not finish: tried again on the next poll)."""
        self._last_check = time.time()
        try:
            if self._root is None:
                self._root = storage.resolve(self.snapshot_root, self._s3)
            version_dir = latest_version_dir(self._root)
        except SnapshotError as exc:
            self._note_problem(f"waiting for a snapshot: {exc}")
            return "waiting"
        except OSError as exc:
            self._note_problem(f"cannot read LATEST: {type(exc).__name__}: {exc}")
            return "failed"
        try:
            key = snapshot_key(version_dir)
        except SnapshotError as exc:
            return self._refuse(SnapshotKey(version_dir, "unreadable-manifest"), exc)
        except OSError as exc:
            self._note_problem(f"cannot read the manifest of {version_dir}: {type(exc).__name__}: {exc}")
            return "failed"
        if key == self._current_key:
            self._problem = None  # e.g. LATEST pointed back at the served snapshot after a refused one
            return "unchanged"
        if key == self._refused_key:
            return "unchanged"

        self._loading = str(version_dir)
        started = time.monotonic()
        try:
            if self.cache_root is not None:
                snapshot = load_cached(key, self.cache_root)
            else:
                snapshot = load_uncached(key)
        except SnapshotError as exc:
            return self._refuse(key, exc)
        except (BuildFailed, OSError) as exc:  # not a verdict on the snapshot (e.g. cache_dir not writable): retry
            self.metrics.count(sm.RELOADS, outcome="failed")
            self._note_problem(f"could not load {version_dir}: {type(exc).__name__}: {exc}", level=logging.WARNING)
            return "failed"
        finally:
            self._loading = None
        self._swap(key, snapshot, time.monotonic() - started)
        return "loaded"

    def _swap(self, key: SnapshotKey, snapshot: LoadedSnapshot, seconds: float) -> None:
        previous = self.current
        self.current = snapshot  # the atomic switch: one reference assignment
        self._current_key, self._refused_key = key, None
        self._problem, self._loaded_at = None, time.time()
        m = self.metrics
        m.count(sm.RELOADS, outcome="loaded")
        if previous is not None and previous.model_version != snapshot.model_version:
            m.gauge(sm.SNAPSHOT_INFO, 0, snapshot_version=previous.model_version)
        m.gauge(sm.SNAPSHOT_INFO, 1, snapshot_version=snapshot.model_version)
        m.gauge(sm.SNAPSHOT_USERS, snapshot.user_count)
        m.gauge(sm.SNAPSHOT_SIMILAR, snapshot.similar_count)
        logger.info(
            "serving snapshot %s: model_version=%s users=%d similar_items=%d items=%d n=%d bytes=%d "
            "(%.0f per user) from %s, loaded in %.2f s%s",
            key.version_dir, snapshot.model_version, snapshot.user_count, snapshot.similar_count,
            snapshot.item_vocab.size, snapshot.n, snapshot.nbytes(), snapshot.bytes_per_user(), snapshot.origin,
            seconds, f"; was {previous.model_version}" if previous is not None else "",
        )
        if self.on_swap is not None:
            self.on_swap(snapshot)

    def _refuse(self, key: SnapshotKey, exc: Exception) -> str:
        if key == self._refused_key:
            return "unchanged"
        self._refused_key = key
        self.metrics.count(sm.RELOADS, outcome="refused")
        serving = self.current.model_version if self.current is not None else "nothing (not ready)"
        message = f"refused snapshot {key.version_dir}: SnapshotError: {exc}; still serving {serving}"
        self._note_problem(message, level=logging.ERROR, force=True)
        return "refused"

    def _note_problem(self, message: str, *, level: int = logging.WARNING, force: bool = False) -> None:
        if force or message != self._problem:  # log a lasting condition once, not on every poll
            logger.log(level, "%s (snapshot_root=%s)", message, self.snapshot_root)
        self._problem = message

    # -- what health checks and errors report -------------------------------------------------------------------

    def not_ready_reason(self) -> str:
        if self._loading:
            return f"loading snapshot {self._loading}"
        return self._problem or "the first poll of LATEST has not finished"

    def status(self) -> dict:
        """Reload state for /health/status (JSON-friendly)."""
        return {
            "snapshot_root": str(self.snapshot_root),
            "loaded_at": self._loaded_at,
            "last_check": self._last_check,
            "poll_seconds": self.poll_seconds,
            "loading": self._loading,
            "problem": self._problem,
        }
