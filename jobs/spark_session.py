"""The one Spark session factory: Delta configured, ``local[*]`` by default, every setting overridable.

Run as ``python -m jobs.X`` the factory starts the JVM itself and lets Spark's Ivy fetch Delta's jars from
Maven Central on first use (cached under ~/.ivy2*). Under ``spark-submit`` (or a SparkApplication) the JVM is
already running: jars come from ``--packages``/``--jars`` or the image, and the factory only checks they are there.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from jobs import shipping
from lake import jvm, object_store
from models import als_blas

log = logging.getLogger(__name__)

SCALA_VERSION = "2.13"
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
JARS_DIR_ENV = "RECSYS_JARS_DIR"

# Defaults in one place; any of them can be overridden with --conf KEY=VALUE.
DEFAULT_CONF = {
    "spark.sql.extensions": DELTA_EXTENSION,
    "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.showConsoleProgress": "false",
    "spark.databricks.delta.optimizeWrite.enabled": "true",
    # one BLAS thread per task on cluster executors (see BLAS_THREADS)
    "spark.executorEnv.OPENBLAS_NUM_THREADS": "1",
}
# Each task has its core already: OpenBLAS's own thread pool inside a task (netlib under Spark ALS, numpy in the
# scorer's workers) only oversubscribes the executor (bench/README.md, "tricks").
# A local JVM inherits it from this process's environment, unless the variable is set already.
BLAS_THREADS = {"OPENBLAS_NUM_THREADS": "1"}
# Delta rebuilds a table's state from its log with this many tasks (Delta's default: 50). Every first read of a
# table in a session pays for them: on 2 cores, 7 s instead of 1.8 s for a one-row table. Unless set, it becomes
# the session's parallelism, capped at Delta's default.
DELTA_SNAPSHOT_PARTITIONS = "spark.databricks.delta.snapshotPartitions"
DELTA_DEFAULT_SNAPSHOT_PARTITIONS = 50
# The JVM this process starts (in local mode the driver is also the only executor) collects garbage with the
# throughput collector: nightly jobs are batch work, where G1's concurrent marking threads and costlier write barriers
# take CPU from the tasks on a small machine and its shorter pauses buy nothing. Measured at 100k x 20k scoring,
# fresh processes in turns: 7.9 s against 8.7 s with G1 (5 pairs, Parallel faster in 4). Cluster executors keep
# their own JVM options.
LOCAL_GC_OPTION = "-XX:+UseParallelGC"
# For the driver JVM when this process starts it (not under spark-submit), whatever the master.
DRIVER_CONF = {
    "spark.driver.memory": "4g",
    "spark.driver.extraJavaOptions": LOCAL_GC_OPTION,
    "spark.ui.enabled": "false",
}


class SparkSetupError(RuntimeError):
    """Spark or Delta could not be set up; the message says why and how to fix it."""


def delta_maven_coordinate() -> str:
    """The Delta artifact that matches the installed pyspark and delta-spark, e.g. io.delta:delta-spark_4.1_2.13:4.4.0."""
    from importlib.metadata import version

    import pyspark

    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_{SCALA_VERSION}:{version('delta-spark')}"


def launched_by_spark_submit() -> bool:
    """True when a JVM already runs for us (spark-submit, pyspark shell, SparkApplication driver)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def _jars_from_dir(jars_dir: str) -> str:
    path = Path(jars_dir)
    jars = sorted(str(p.resolve()) for p in path.glob("*.jar"))
    if not jars:
        raise SparkSetupError(f"--jars-dir {jars_dir!r} holds no .jar file; fetch them with `make delta-jars`.")
    return ",".join(jars)


def running_master(master: str | None, conf: dict[str, str] | None = None) -> str:
    """The master Spark runs (or will run) with: spark-submit's when it launched us, else ``master``, else
    ``spark.master`` in ``conf``, else local[*]."""
    if launched_by_spark_submit():
        return jvm.launcher_setting("spark.master", "local[*]")
    return master or (conf or {}).get("spark.master") or "local[*]"


def is_local_master(master: str) -> bool:
    """Whether every executor is this process's JVM (local, local[N], local[*], local[N,F])."""
    return master == "local" or master.startswith("local[")


def build_spark(app_name: str, *, master: str | None = None, conf: dict[str, str] | None = None,
                jars_dir: str | None = None, log_level: str = "WARN", uris: tuple[str | None, ...] = ()) -> SparkSession:
    """Return the active session or build one with Delta configured.

    ``conf`` overrides every default; ``jars_dir`` (or $RECSYS_JARS_DIR) replaces the Ivy download with
    local jars. ``uris`` are the job's lake, input and snapshot locations: one on object storage adds the S3A
    connector (lake.object_store). What depends on where executors run is decided from the master Spark runs with
    (``running_master``). On a local master PYSPARK_PYTHON is pinned to this interpreter (unless set), so workers
    never start another Python. On a cluster the workers' Python is ``spark.pyspark.python`` (or
    $PYSPARK_PYTHON, else ``python3`` on their PATH), the project's packages are shipped to the executors
    (jobs.shipping) and Spark ALS's BLAS library is named to executors only at a path given by $RECSYS_ALS_BLAS
    (installed on every node), never at this checkout's build folder.
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    conf = dict(conf or {})
    submitted = launched_by_spark_submit()
    running = running_master(master, conf)
    if is_local_master(running):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if not submitted:
        for variable, value in BLAS_THREADS.items():
            os.environ.setdefault(variable, value)
    jars_dir = jars_dir or os.environ.get(JARS_DIR_ENV)
    settings = _settings(conf, submitted=submitted, local=is_local_master(running), jars_dir=jars_dir, uris=uris)
    builder = SparkSession.builder.appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    if submitted:
        if master and master != running:
            log.warning("--master %s ignored: under spark-submit the master comes from spark-submit (%s)", master,
                        running)
    else:
        builder = _with_jars(builder.master(running), settings, conf, jars_dir)
    spark = _start(builder)
    spark.sparkContext.setLogLevel(log_level)
    _check_classpath(spark, s3a=object_store.S3A_CLASS if _wants_s3a(conf, uris) else None)
    _keep_jars_off_python_path(spark)
    if not is_local_master(spark.sparkContext.master):
        shipping.ship_project_code(spark)
    if DELTA_SNAPSHOT_PARTITIONS not in settings and not spark.sparkContext.getConf().contains(DELTA_SNAPSHOT_PARTITIONS):
        spark.conf.set(DELTA_SNAPSHOT_PARTITIONS, str(snapshot_partitions(spark.sparkContext.defaultParallelism)))
    return spark


def _wants_s3a(conf: dict[str, str], uris) -> bool:
    return object_store.uses_object_store(uris) or object_store.requested(conf)


def _settings(conf: dict[str, str], *, submitted: bool, local: bool, jars_dir: str | None, uris) -> dict[str, str]:
    """The session's settings: defaults, then the driver's when this process starts the JVM, then S3A's when
    needed, then the user's ``conf`` (which wins over all of them), then the ALS BLAS Java options."""
    settings = dict(DEFAULT_CONF)
    if not submitted:
        settings.update(DRIVER_CONF)
    if _wants_s3a(conf, uris):
        fetch = not submitted and not jars_dir and "spark.jars" not in conf
        settings = object_store.with_s3a(settings, fetch_packages=fetch)
    settings.update(conf)
    return _with_als_blas(settings, submitted, local)


def _with_jars(builder, settings: dict[str, str], conf: dict[str, str], jars_dir: str | None):
    """Delta's jars (and any ``spark.jars.packages`` in ``settings``): from ``jars_dir``, or fetched by Ivy."""
    if jars_dir:
        return builder.config("spark.jars", _jars_from_dir(jars_dir))
    if "spark.jars.packages" in conf or "spark.jars" in conf:
        return builder
    from delta import configure_spark_with_delta_pip

    extra = [p for p in settings.get("spark.jars.packages", "").split(",") if p]
    extra += [p for p in settings.get("spark.extra.packages", "").split(",") if p]
    return configure_spark_with_delta_pip(builder, extra_packages=extra)


def _start(builder) -> SparkSession:
    try:
        return builder.getOrCreate()
    except Exception as exc:  # the JVM did not start: most often Ivy could not fetch Delta's jars
        raise SparkSetupError(
            f"Spark did not start ({type(exc).__name__}: {exc}).\n"
            f"If the log above shows 'unresolved dependency' or a download error, Spark's Ivy could not fetch "
            f"{delta_maven_coordinate()} from Maven Central. Fix: check network/proxy access to Maven Central, "
            f"or fetch the jars with Maven (`make delta-jars`, which writes .jars/) and run the job with "
            f"--jars-dir .jars (or {JARS_DIR_ENV}=.jars)."
        ) from exc


def snapshot_partitions(parallelism: int) -> int:
    """Tasks for Delta's log replay: the cores the session has, at most Delta's default."""
    return max(1, min(DELTA_DEFAULT_SNAPSHOT_PARTITIONS, int(parallelism)))


def _with_als_blas(settings: dict[str, str], submitted: bool, local: bool) -> dict[str, str]:
    """Add the Java option that loads Spark ALS's BLAS library to the JVMs this session starts.

    Run by this process, the session starts the driver JVM (local mode: the executors too), so both options are
    set. Under spark-submit the driver JVM runs already (its options are spark-submit's: the SparkApplications
    and ``--driver-java-options`` set them); only the executors, started later, can still get it, and their
    option is merged with what spark-submit was given. Executors of a cluster get it only at a path named by
    $RECSYS_ALS_BLAS (the same on every node, as in the batch image); models.als_blas.executor_libraries reports
    what each executor's host has.
    """
    path = als_blas.library_path()
    executor_path = path if local else als_blas.installed_library_path()
    keys = [key for key, chosen in (("spark.driver.extraJavaOptions", path and not submitted),
                                    ("spark.executor.extraJavaOptions", executor_path)) if chosen]
    out = dict(settings)
    for key in keys:
        base = {key: out.get(key) or (jvm.launcher_setting(key, "") if submitted else "")}
        out.update(als_blas.add_java_options(base, path if key.startswith("spark.driver") else executor_path,
                                             keys=(key,)))
    return out


def _keep_jars_off_python_path(spark: SparkSession) -> None:
    """Stop sending the jars of ``spark.jars.packages`` to Python workers as Python includes.

    spark-submit lists the jars it resolves (Delta and its dependencies, 33 files) among the Python files too, and
    every worker puts them on ``sys.path`` ahead of site-packages: each import then looks through every jar, and
    each worker reads all their directories. They hold JVM classes only (Delta's Python API is the delta-spark
    package), so they are dropped from the includes that functions created from now on carry to the workers.
    """
    jvm.drop_python_includes(spark, ".jar")


def _check_classpath(spark: SparkSession, *, s3a: str | None) -> None:
    """SparkSetupError when Delta's classes, or the S3A connector's (``s3a``: its class name), are missing."""
    if s3a and not jvm.has_class(spark, s3a):
        raise SparkSetupError(object_store.missing_connector_message())
    if not jvm.has_class(spark, "io.delta.tables.DeltaTable"):
        raise SparkSetupError(
            "Delta Lake classes are not on Spark's classpath. Under spark-submit pass "
            f"--packages {delta_maven_coordinate()} (or --jars with the jars from `make delta-jars`); "
            "in a container image, copy the Delta jars into $SPARK_HOME/jars."
        ) from None
