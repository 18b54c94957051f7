"""The session factory's flags and error messages (no JVM needed)."""
from __future__ import annotations

import pytest

from jobs import cli, spark_session


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


def test_snapshot_partitions_follow_the_cores_up_to_deltas_default():
    assert spark_session.snapshot_partitions(2) == 2
    assert spark_session.snapshot_partitions(0) == 1
    assert spark_session.snapshot_partitions(400) == spark_session.DELTA_DEFAULT_SNAPSHOT_PARTITIONS
