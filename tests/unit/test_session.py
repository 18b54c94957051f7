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


def test_python_workers_run_our_daemon_without_jars_on_their_path(spark):
    import pyarrow as pa

    def worker_state(batches):
        import sys
        import zipimport

        for _ in batches:
            pass
        lazy = zipimport.zipimporter.invalidate_caches.__module__ == "jobs.python_worker_daemon"
        jars = [p for p in sys.path if p.lower().endswith(".jar") and "spark-core" not in p]
        yield pa.RecordBatch.from_pylist([{"lazy": lazy, "jars": len(jars)}])

    rows = spark.range(0, 4, 1, 2).mapInArrow(worker_state, "lazy boolean, jars long").collect()
    assert spark.conf.get(spark_session.PYTHON_DAEMON_MODULE_CONF) == spark_session.PYTHON_WORKER_DAEMON
    assert [tuple(r) for r in rows] == [(True, 0), (True, 0)]


def test_lazy_zip_invalidation_rereads_only_a_changed_archive(tmp_path):
    import zipfile
    import zipimport

    from jobs import python_worker_daemon as daemon

    archive = tmp_path / "pkg.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("first.py", "X = 1\n")
    importer = zipimport.zipimporter(str(archive))
    daemon.invalidate_if_changed(importer)
    with zipfile.ZipFile(archive, "a") as zf:  # the archive grows: the next invalidation must see the new module
        zf.writestr("second.py", "X = 2\n")
    daemon.invalidate_if_changed(importer)
    assert importer.find_spec("second") is not None
    reads = []
    original = daemon._reread
    daemon._reread = lambda imp: reads.append(imp.archive)
    try:
        daemon.invalidate_if_changed(importer)  # unchanged archive: no re-read
    finally:
        daemon._reread = original
    assert reads == []


def test_worker_daemon_only_where_executors_can_import_it():
    use = spark_session.use_worker_daemon
    assert use("local[2]", env={}, version=(3, 12))
    assert use(None, env={}, version=(3, 12))  # no master given: the factory's default is local[*]
    assert not use("spark://10.0.0.1:7077", env={}, version=(3, 12))  # a cluster fed with --py-files
    assert use("k8s://https://api:6443", env={"RECSYS_WORKER_DAEMON": "1"}, version=(3, 12))  # our image
    assert not use("local[2]", env={"RECSYS_WORKER_DAEMON": "0"}, version=(3, 12))
    assert not use("local[2]", env={}, version=(3, 13))  # CPython fixed the zip re-read in 3.13
