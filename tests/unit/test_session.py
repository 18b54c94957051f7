"""The session factory's flags and error messages (no JVM needed)."""
from __future__ import annotations

import pytest

from jobs import cli, spark_session
from models import als_blas


def test_delta_coordinate_matches_installed_pyspark_and_delta():
    assert spark_session.delta_maven_coordinate() == "io.delta:delta-spark_4.1_2.13:4.4.0"


def test_empty_jars_dir_says_how_to_fill_it(tmp_path):
    with pytest.raises(spark_session.SparkSetupError, match="make delta-jars"):
        spark_session._jars_from_dir(str(tmp_path))


def test_conf_pairs_override_and_bad_pairs_are_named():
    assert cli.parse_conf(["spark.sql.shuffle.partitions=4", "a.b=x=y"]) == {"spark.sql.shuffle.partitions": "4", "a.b": "x=y"}
    with pytest.raises(SystemExit, match="'oops'"):
        cli.parse_conf(["oops"])


def test_session_has_delta_and_overrides(spark):
    assert spark.conf.get("spark.sql.extensions") == spark_session.DELTA_EXTENSION
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"  # the tests' override of the default 8
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    # Delta's log replay runs on the session's cores (local[2]), not on Delta's default of 50 tasks
    assert spark.conf.get(spark_session.DELTA_SNAPSHOT_PARTITIONS) == "2"


def test_locally_started_jvm_collects_garbage_with_the_throughput_collector(spark):
    """The session factory starts the JVM with LOCAL_GC_OPTION, beside the ALS library's options (merged)."""
    beans = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
    names = {bean.getName() for bean in beans}
    assert names == {"PS Scavenge", "PS MarkSweep"}, names  # Parallel's two collectors (G1's are "G1 ...")
    options = spark.sparkContext.getConf().get("spark.driver.extraJavaOptions").split()
    assert spark_session.LOCAL_GC_OPTION in options
    library = als_blas.library_path()
    if library is not None:  # built (make als-blas): its options are added to the collector's, not instead
        assert set(als_blas.java_option(library).split()) <= set(options)


def test_snapshot_partitions_follow_the_cores_up_to_deltas_default():
    assert spark_session.snapshot_partitions(2) == 2
    assert spark_session.snapshot_partitions(0) == 1
    assert spark_session.snapshot_partitions(400) == spark_session.DELTA_DEFAULT_SNAPSHOT_PARTITIONS


def test_python_workers_have_no_jars_on_their_path(spark):
    import pyarrow as pa

    def worker_state(batches):
        import sys

        for _ in batches:
            pass
        jars = [p for p in sys.path if p.lower().endswith(".jar") and "spark-core" not in p]
        yield pa.RecordBatch.from_pylist([{"jars": len(jars)}])

    rows = spark.range(0, 4, 1, 2).mapInArrow(worker_state, "jars long").collect()
    assert [tuple(r) for r in rows] == [(0,), (0,)]


