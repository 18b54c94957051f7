"""PySpark's Python worker daemon, without the per-task zip re-read of Python 3.12 and older.

Before every task a PySpark worker calls ``importlib.invalidate_caches()`` (``pyspark.worker_util.
setup_spark_files``). On Python 3.10-3.12 that makes every ``zipimporter`` on ``sys.path`` re-read its archive's
whole directory at once (CPython gh-103200, made lazy in 3.13), and a worker's path holds pyspark.zip (once per
sub-package), py4j's zip and spark-core's jar. Measured here: 0.7 s per task with Delta's jars also on the path,
0.25 s without them, against milliseconds for the task itself (a 4-task ``mapInArrow`` over 1,000 rows took 2 s).

This module starts PySpark's own daemon (``pyspark.daemon.manager``) after one change: a zipimporter re-reads
its archive only when the file changed (size or modification time), which is what invalidation is for. The
daemon forks every worker, so all of them inherit it. The session factory (``jobs.spark_session``) selects it
with ``spark.python.daemon.module``; executors need this package installed (our image has it). To run with
PySpark's plain daemon instead: ``--conf spark.python.daemon.module=pyspark.daemon``.
"""
from __future__ import annotations

import os
import zipimport

_stamps: dict[str, tuple[int, int] | None] = {}
_reread = zipimport.zipimporter.invalidate_caches


def _archive_stamp(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def invalidate_if_changed(importer: zipimport.zipimporter) -> None:
    """Re-read the archive's directory only if the archive changed since this process last read it."""
    stamp = _archive_stamp(importer.archive)
    if stamp is not None and _stamps.get(importer.archive) == stamp:
        return
    _stamps[importer.archive] = stamp
    _reread(importer)


def install() -> None:
    """Make zipimporter invalidation lazy in this process (and in the processes it forks). Idempotent."""
    zipimport.zipimporter.invalidate_caches = invalidate_if_changed


if __name__ == "__main__":
    from pyspark import daemon

    from jobs import python_worker_daemon  # this file under its own name (here it runs as __main__)

    python_worker_daemon.install()

    daemon.manager()
