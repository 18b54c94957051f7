"""The project's code for executors that do not have it installed: one zip of its packages, shipped with the job.

Start-up helper of the jobs (like jobs/cli.py and jobs/spark_session.py), not a job. On a cluster master the
session factory calls ``ship_project_code``: the zip (named by its content's hash, built once per content) is
added to the SparkContext's Python files, so every task's worker finds ``transforms``, ``models`` ... first on
its path, and runs the code the driver runs. Where the driver imports the packages from a zip already
(spark-submit --py-files), executors have that zip and nothing more is shipped.
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
import zipfile
from pathlib import Path

from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
PACKAGES = ("jobs", "flow", "lake", "transforms", "models", "validation", "serving")


def project_root() -> Path:
    """The folder holding the packages (the checkout, or site-packages for a plain install)."""
    return Path(__file__).resolve().parents[1]


def build_zip(out: Path, root: Path | None = None) -> Path:
    """Write the ``*.py`` files of PACKAGES under ``root`` to the zip ``out`` (its entries in a fixed order)."""
    root = root or project_root()
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in PACKAGES:
            for path in sorted((root / package).rglob("*.py")):
                zf.write(path, path.relative_to(root).as_posix())
    return out


def ship_project_code(spark: SparkSession) -> str | None:
    """Add a zip of the project's packages to the executors' Python path; returns the zip's path, or None when
    the driver imports them from a zip itself (spark-submit's --py-files, which executors get already)."""
    root = project_root()
    if not (root / "jobs").is_dir():
        return None
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    out = Path(tempfile.gettempdir()) / f"recsys-code-{digest.hexdigest()[:16]}.zip"
    if not out.is_file():
        tmp = out.with_suffix(f".{id(out)}.tmp")
        build_zip(tmp, root)
        tmp.replace(out)
    spark.sparkContext.addPyFile(str(out))
    log.info("shipped the project's code to the executors as %s", out)
    return str(out)
