"""Keep the newest good snapshot loaded: a background thread per process polls LATEST and swaps atomically.

Each poll reads LATEST and the manifest it names (a few kilobytes). When they name a snapshot other than the one
served, it is loaded completely (verified and converted by serving.snapshot_cache, then memory-mapped) *before*
the reference the request threads read is replaced. A request reads that reference once and answers from that
object, so it sees the old snapshot or the new one, never a mix, and none is dropped: the old arrays stay alive
until the last request holding them finishes.

A snapshot that fails its checks is refused: the current one stays, an ERROR log line names the snapshot and the
reason, ``recommender_reloads_total{outcome="refused"}`` counts it, and it is not retried until LATEST or its
manifest changes. A build that could not finish (killed, timed out) counts as ``outcome="failed"`` and is retried
on the next poll.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from serving import service_metrics as sm
from serving.lookup import LoadedSnapshot, load_version
from serving.snapshot import SnapshotError, latest_version_dir
from serving.snapshot_cache import BuildFailed, SnapshotKey, load_cached, snapshot_key

logger = logging.getLogger(__name__)


class SnapshotReloader:
    """The snapshot a process serves, and the thread that replaces it when a newer good one is published."""

    def __init__(self, snapshot_root: str | Path, *, cache_root: str | Path | None, poll_seconds: float,
                 metrics: sm.ServiceMetrics, on_swap=None):
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
        self.snapshot_root = Path(snapshot_root)
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
        """Poll LATEST once: "unchanged", "waiting" (nothing published), "loaded", "refused" or "failed"."""
        self._last_check = time.time()
        try:
            version_dir = latest_version_dir(self.snapshot_root)
        except SnapshotError as exc:
            self._note_problem(f"waiting for a snapshot: {exc}")
            return "waiting"
        try:
            key = snapshot_key(version_dir)
        except SnapshotError as exc:
            return self._refuse(SnapshotKey(version_dir, "unreadable-manifest"), exc)
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
                snapshot = load_version(version_dir)
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
