"""Progress for long runs: named steps with their time, and a heartbeat that reports Spark's active stages.

    with Progress(spark, "ingest", every_s=30) as progress:
        progress.step("parse")          # logs "ingest: parse ..." and, when it ends, how long it took
        ...

The heartbeat is a daemon thread that asks Spark's status tracker (no extra Spark work) every ``every_s`` seconds
and logs e.g. ``ingest: [bronze] stage 12: 37/120 tasks``; it stays silent on runs shorter than ``every_s``.
"""
from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("recsys.progress")


class Progress:
    def __init__(self, spark, job: str, *, every_s: float = 30.0):
        self.spark = spark
        self.job = job
        self.every_s = every_s
        self.timings: dict[str, float] = {}
        self._current: str | None = None
        self._started = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Progress":
        if self.every_s and self.every_s > 0:
            self._thread = threading.Thread(target=self._beat, name=f"{self.job}-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._finish_step()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def step(self, name: str) -> None:
        """Start step ``name`` (ending the previous one)."""
        self._finish_step()
        self._current, self._started = name, time.time()
        log.info("%s: %s ...", self.job, name)

    def _finish_step(self) -> None:
        if self._current is not None:
            seconds = time.time() - self._started
            self.timings[self._current] = round(self.timings.get(self._current, 0.0) + seconds, 2)
            log.info("%s: %s done in %.1f s", self.job, self._current, seconds)
            self._current = None

    def _beat(self) -> None:
        tracker = self.spark.sparkContext.statusTracker()
        while not self._stop.wait(self.every_s):
            try:
                stages = [tracker.getStageInfo(s) for s in tracker.getActiveStageIds()]
            except Exception:  # the context is stopping: nothing to report
                return
            busy = ", ".join(f"stage {s.stageId}: {s.numCompletedTasks}/{s.numTasks} tasks"
                             for s in stages if s is not None) or "no active stage"
            log.info("%s: [%s, %.0f s] %s", self.job, self._current or "-", time.time() - self._started, busy)
