"""The session factory's settings, decided before any JVM starts: what depends on the master, on object storage
and on the user's own --conf."""
from __future__ import annotations

import pytest

from jobs import spark_session as ss
from lake import object_store
from models import als_blas

LIBRARY_OPTION = f"-D{als_blas.NETLIB_LIBRARY_PATH}="


@pytest.fixture
def built_library(tmp_path, monkeypatch):
    """A library file at the checkout's build path (as `make als-blas` leaves it), with no $RECSYS_ALS_BLAS."""
    library = tmp_path / als_blas.LIBRARY_NAME
    library.write_bytes(b"\x7fELF")
    monkeypatch.setattr(als_blas, "DEFAULT_LIBRARY", library)
    monkeypatch.delenv(als_blas.LIBRARY_ENV, raising=False)
    monkeypatch.delenv("RECSYS_REFERENCE_PATH", raising=False)
    return library


def settings(conf=None, *, local=True, uris=()):
    return ss._settings(dict(conf or {}), submitted=False, local=local, jars_dir=None, uris=uris)


@pytest.mark.parametrize("master,local", [("local", True), ("local[2]", True), ("local[*]", True),
                                          ("local[4,2]", True), ("spark://127.0.0.1:7077", False),
                                          ("k8s://https://api:6443", False), ("yarn", False)])
def test_local_masters_are_told_apart_from_clusters(master, local):
    assert ss.is_local_master(master) is local


def test_a_local_master_loads_the_built_library_in_driver_and_executors(built_library):
    got = settings(local=True)
    assert f"{LIBRARY_OPTION}{built_library}" in got["spark.driver.extraJavaOptions"]
    assert f"{LIBRARY_OPTION}{built_library}" in got["spark.executor.extraJavaOptions"]


def test_a_cluster_never_names_the_checkouts_library_to_executors_and_keeps_the_users_options(built_library):
    got = settings({"spark.executor.extraJavaOptions": "-Dfoo=bar"}, local=False)
    assert got["spark.executor.extraJavaOptions"] == "-Dfoo=bar"  # the user's option, nothing of the driver's disk
    assert f"{LIBRARY_OPTION}{built_library}" in got["spark.driver.extraJavaOptions"]  # the driver runs here


def test_a_cluster_gets_a_library_installed_on_every_node(built_library, monkeypatch):
    monkeypatch.setenv(als_blas.LIBRARY_ENV, str(built_library))
    got = settings({"spark.executor.extraJavaOptions": "-Dfoo=bar"}, local=False)
    assert got["spark.executor.extraJavaOptions"].startswith("-Dfoo=bar ")
    assert f"{LIBRARY_OPTION}{built_library}" in got["spark.executor.extraJavaOptions"]


def test_the_reference_path_names_no_library(built_library, monkeypatch):
    monkeypatch.setenv("RECSYS_REFERENCE_PATH", "1")
    got = settings(local=True)
    assert LIBRARY_OPTION not in got.get("spark.driver.extraJavaOptions", "")
    assert LIBRARY_OPTION not in got.get("spark.executor.extraJavaOptions", "")


def test_a_local_lake_adds_no_object_store_connector(monkeypatch):
    monkeypatch.delenv(object_store.SWITCH_ENV, raising=False)
    got = settings(uris=("/data/lake", None, "file:/data/in"))
    assert "spark.jars.packages" not in got and "spark.sql.sources.commitProtocolClass" not in got


def test_an_s3a_lake_adds_the_connector_the_committer_and_the_endpoint(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id")
    got = settings({"spark.hadoop.fs.s3a.path.style.access": "false"}, uris=("s3a://bucket/lake",))
    assert got["spark.jars.packages"].split(",") == object_store.s3a_packages()
    assert "org.apache.hadoop:hadoop-aws:" + object_store.hadoop_version() in got["spark.jars.packages"]
    assert got["spark.sql.sources.commitProtocolClass"] == object_store.COMMIT_PROTOCOL_CLASS
    assert got["spark.hadoop.fs.s3a.committer.name"] == "magic"
    assert got["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert got["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert got["spark.hadoop.fs.s3a.access.key"] == "key-id"
    assert got["spark.hadoop.fs.s3a.path.style.access"] == "false"  # the user's setting wins


def test_the_switch_adds_the_connector_without_an_s3a_path(monkeypatch):
    monkeypatch.setenv(object_store.SWITCH_ENV, "s3a")
    assert "hadoop-aws" in settings(uris=("/data/lake",))["spark.jars.packages"]


def test_jars_given_by_the_user_are_not_fetched_again():
    got = settings({"spark.jars": "/opt/jars/all.jar"}, uris=("s3a://bucket/lake",))
    assert "spark.jars.packages" not in got and got["spark.hadoop.fs.s3a.committer.name"] == "magic"


@pytest.mark.parametrize("uri", ["hdfs://nn:8020/lake", "gs://bucket/lake", "abfss://c@a.dfs.core.windows.net/x",
                                 "s3a:///no-bucket"])
def test_a_scheme_nothing_handles_is_refused_by_name(uri):
    with pytest.raises(object_store.UnsupportedUriError, match="not supported|names no bucket"):
        settings(uris=(uri,))
