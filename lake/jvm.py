"""Every private handle into Spark's JVM (``_jdf``, ``_jvm``, ``_jsc``, ``_gateway``) in one place.

Each function wraps one py4j call that no public PySpark API offers. None of them raises for a missing JVM
(Spark Connect): they return None and the caller takes its public path.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession


def executed_plan(df: DataFrame):
    """The JVM ``SparkPlan`` Spark would execute for ``df``, or None when there is no JVM plan to ask."""
    try:
        return df._jdf.queryExecution().executedPlan()  # noqa: SLF001
    except Exception:  # noqa: BLE001 - Spark Connect or no JVM plan
        return None


def planned_size_bytes(df: DataFrame) -> int | None:
    """Spark's estimate of ``df``'s size in bytes (its optimized plan's statistics: the files' size for a table or
    file scan), or None when Spark has none (an RDD-based plan, where it says Long.MaxValue) or cannot be asked."""
    try:
        size = int(str(df._jdf.queryExecution().optimizedPlan().stats().sizeInBytes()))  # noqa: SLF001 - BigInt
    except Exception:  # noqa: BLE001 - no JVM plan to ask: the caller counts instead
        return None
    return size if 0 <= size < 1 << 62 else None


def handle(spark: SparkSession):
    """The py4j view of the driver JVM (``spark._jvm``): for the Hadoop FileSystem and netlib, which have no
    Python API."""
    return spark._jvm  # noqa: SLF001


def gateway(spark: SparkSession):
    """The py4j gateway (to allocate Java arrays)."""
    return spark.sparkContext._gateway  # noqa: SLF001


def hadoop_configuration(spark: SparkSession):
    """The session's Hadoop Configuration (credentials and filesystem settings for every URI scheme)."""
    return spark.sparkContext._jsc.hadoopConfiguration()  # noqa: SLF001


def launcher_setting(key: str, default: str | None = None) -> str | None:
    """A setting spark-submit started this process with, read before any session exists: PySpark's SparkConf only
    sees the launcher's settings (the JVM's system properties) once the gateway to that JVM is open, which
    SparkContext._ensure_initialized does without creating a context."""
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()  # noqa: SLF001
    return SparkConf().get(key, default)


def system_property(spark: SparkSession, name: str) -> str | None:
    """A system property of the driver JVM (None when unset)."""
    return handle(spark).java.lang.System.getProperty(name)


def has_class(spark: SparkSession, name: str) -> bool:
    """Whether the driver JVM can load class ``name`` (e.g. a jar is on the classpath)."""
    try:
        jvm_ = handle(spark)
        jvm_.java.lang.Class.forName(name, True, jvm_.Thread.currentThread().getContextClassLoader())
    except Exception:  # noqa: BLE001 - py4j wraps ClassNotFoundException
        return False
    return True


def drop_python_includes(spark: SparkSession, suffix: str) -> None:
    """Stop sending files ending in ``suffix`` to Python workers as Python includes (for functions created from
    now on). PySpark has no public setter for the list."""
    sc = spark.sparkContext
    includes = getattr(sc, "_python_includes", None)
    if includes:
        sc._python_includes = [name for name in includes if not name.lower().endswith(suffix)]  # noqa: SLF001
