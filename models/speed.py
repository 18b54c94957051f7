"""The one switch for the speed tricks: ``RECSYS_REFERENCE_PATH=1`` (a job's ``--reference-path``) turns them all off.

A speed trick is a shortcut that gives the same results as a plain path built only from supported APIs. Each one
asks ``tricks_enabled()`` and takes its reference path when it answers False:

* Spark ALS's BLAS library (models.als_blas): the session factory does not load it, so netlib's JNI uses the
  system's BLAS and LAPACK (OpenBLAS) as Spark ships it;
* direct Parquet reads (models.parquet_direct): the scorer collects its inputs through Spark instead of reading
  plain local Parquet files with pyarrow.

The switch is read when the session starts and when a scoring job is planned, on the driver only. The test suite
runs both paths (tests/integration/test_reference_path.py); bench/tricks.py measures what each trick buys.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

REFERENCE_PATH_ENV = "RECSYS_REFERENCE_PATH"
_ON = ("1", "true", "yes", "on")


def tricks_enabled(env: Mapping[str, str] | None = None) -> bool:
    """False when $RECSYS_REFERENCE_PATH asks for the reference path (1, true, yes or on), True otherwise."""
    env = os.environ if env is None else env
    return env.get(REFERENCE_PATH_ENV, "").strip().lower() not in _ON


def use_reference_path() -> None:
    """Turn the tricks off for this process and the processes it starts (what ``--reference-path`` does)."""
    os.environ[REFERENCE_PATH_ENV] = "1"
