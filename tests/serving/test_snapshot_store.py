"""The snapshot contract on object storage (serving.storage, serving.snapshot, serving.snapshot_cache) against a
real S3 endpoint (moto's server, the session fixture ``s3_server``), and the URI forms a root may take."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving import service_metrics as sm
from serving import snapshot, storage
from serving.reloader import SnapshotReloader
from serving.snapshot import SnapshotError
from serving.snapshot_cache import BuildFailed, SnapshotKey, load_cached, load_uncached, snapshot_key
from tests.serving.conftest import publish_spec, publish_spec_to_s3, s3_options, tamper


@pytest.fixture
def s3(s3_server):
    """A fresh bucket and the options that reach it: (root URI as Spark writes it, options)."""
    return f"s3a://{s3_server.make_bucket('snapshots')}/recsys/snapshots", s3_options(s3_server)


def _write_tables(folder: storage.Location) -> None:
    """The contract's two required tables, written with pyarrow straight to the store."""
    users = pa.table({"user_id": pa.array(["u1", "u2"]),
                      "item_ids": pa.array([["a", "b"], ["b"]], pa.list_(pa.string())),
                      "scores": pa.array([[0.9, 0.5], [0.7]], pa.list_(pa.float32()))})
    popular = pa.table({"rank": pa.array([1, 2], pa.int32()), "item_id": pa.array(["b", "a"]),
                        "score": pa.array([2.0, 1.0], pa.float64())})
    for name, table in (("user_recommendations", users), ("popular_items", popular)):
        for part in range(2):
            pq.write_table(table.slice(part, 1), (folder / name / f"part-{part:05d}.parquet").path,
                           filesystem=folder.fs)


def test_contract_round_trip_on_s3(s3):
    root, options = s3
    version = snapshot.new_version_name("v1")
    folder = storage.resolve(f"{root}/{version}", options)
    _write_tables(folder)

    written = snapshot.write_manifest(f"{root}/{version}", model_version="v1", n=2, s3=options)
    assert written.tables["user_recommendations"]["rows"] == 2 and len(written.tables["popular_items"]["files"]) == 2
    assert str(written.path) == f"{root}/{version}" and written.path.name == version
    with pytest.raises(SnapshotError, match="no LATEST file in s3a://"):
        snapshot.latest_version_dir(root, s3=options)
    snapshot.set_latest(root, version, s3=options)

    same = root.replace("s3a://", "s3://", 1)  # what Spark writes and what the service is given: one place
    latest = snapshot.latest_version_dir(same, s3=options)
    assert isinstance(latest, storage.Location) and latest.name == version and latest.scheme == "s3"
    assert storage.read_bytes(storage.resolve(f"{same}/LATEST", options)) == f"{version}\n".encode()
    verified = snapshot.verify_snapshot(latest)
    assert verified.model_version == "v1" and verified.tables == written.tables
    assert [f.name for f in snapshot.version_dirs(root, "v1", s3=options)] == [version]
    assert snapshot.published_dir(root, "v1", s3=options).name == version
    assert snapshot.intact_version(root, "v1", s3=options).path.name == version
    assert snapshot.intact_version(root, "v2", s3=options) is None


def test_latest_moves_only_to_a_folder_with_a_manifest(s3):
    root, options = s3
    folder = storage.resolve(root, options) / "v1~20260101T000000Z-aaaaaa"
    _write_tables(folder)
    with pytest.raises(SnapshotError, match="refusing to point LATEST at s3a://.*: it has no manifest.json"):
        snapshot.set_latest(root, folder.name, s3=options)
    assert not storage.is_file(storage.resolve(root, options) / snapshot.LATEST_NAME)


def test_a_tampered_file_on_s3_is_refused_naming_it(s3, snapshot_spec, tmp_path):
    root, options = s3
    folder = publish_spec_to_s3(root, snapshot_spec, tmp_path / "scratch", options)
    part = folder / "user_recommendations" / "part-00000.parquet"
    tamper(part)
    message = re.escape(f"{part}: checksum ")
    assert str(part).startswith("s3a://")
    with pytest.raises(SnapshotError, match=message):
        snapshot.verify_snapshot(root + "/" + folder.name, s3=options)
    with pytest.raises(SnapshotError, match=message):
        snapshot.download_version(folder, tmp_path / "copy")
    assert snapshot.intact_version(root, snapshot_spec.model_version, s3=options) is None


def test_the_cache_downloads_verifies_and_maps_an_s3_snapshot(s3, snapshot_spec, tmp_path):
    root, options = s3
    publish_spec_to_s3(root, snapshot_spec, tmp_path / "scratch", options)
    key = snapshot_key(snapshot.latest_version_dir(root, s3=options))
    cache = tmp_path / "cache"
    mapped = load_cached(key, cache)
    assert mapped.recommend("42", 3) == snapshot_spec.expected_user("42", 3)
    assert mapped.origin == str(cache / key.name)
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == [key.name]  # the download folder is gone
    assert load_uncached(key).similar_items("i1", 2) == snapshot_spec.expected_similar("i1", 2)


def test_a_tampered_s3_file_is_a_refusal_a_store_error_a_retry(s3, snapshot_spec, tmp_path):
    root, options = s3
    bad = publish_spec_to_s3(root, snapshot_spec, tmp_path / "scratch", options, model_version="test-v2")
    part = bad / "popular_items" / "part-00000.parquet"
    tamper(part)
    key, cache = snapshot_key(bad), tmp_path / "cache"
    with pytest.raises(SnapshotError, match=re.escape(f"{part}: checksum ")):
        load_cached(key, cache)
    assert json.loads((cache / f"{key.name}.refused").read_text())["error"].startswith(str(part))
    assert [p.name for p in cache.iterdir() if p.is_dir()] == []

    unreachable = storage.S3Options(endpoint_url="http://127.0.0.1:9", region="us-east-1", access_key="x",
                                    secret_key="y")
    elsewhere = SnapshotKey(storage.resolve(str(bad), unreachable), key.manifest_sha256)
    reloader = SnapshotReloader(root, cache_root=cache, poll_seconds=60, metrics=sm.ServiceMetrics(),
                                s3=unreachable)
    assert reloader.check_once() == "failed" and "cannot read LATEST" in reloader.not_ready_reason()
    with pytest.raises(BuildFailed, match=f"exited with 5 .*could not read the manifest of {elsewhere.version_dir}"):
        load_cached(elsewhere, tmp_path / "cache-2")
    assert not (tmp_path / "cache-2" / f"{key.name}.refused").exists()


@pytest.mark.parametrize("use_cache", [False, True], ids=["in-process", "cache"])
def test_the_reloader_follows_latest_on_s3(s3, snapshot_spec, tmp_path, use_cache):
    root, options = s3
    reloader = SnapshotReloader(root.replace("s3a://", "s3://", 1), cache_root=tmp_path / "cache" if use_cache
                                else None, poll_seconds=60, metrics=sm.ServiceMetrics(), s3=options)
    assert reloader.check_once() == "waiting"
    publish_spec_to_s3(root, snapshot_spec, tmp_path / "scratch", options)
    assert reloader.check_once() == "loaded" and reloader.current.model_version == snapshot_spec.model_version
    assert reloader.check_once() == "unchanged"
    bad = publish_spec_to_s3(root, snapshot_spec, tmp_path / "scratch", options, model_version="test-v2")
    tamper(bad / "user_recommendations" / "part-00001.parquet")
    assert reloader.check_once() == "refused" and reloader.current.model_version == snapshot_spec.model_version
    assert "part-00001.parquet: checksum" in reloader.status()["problem"]


@pytest.mark.parametrize("uri", ["hdfs://namenode/snapshots", "gs://bucket/snapshots", "http://host/snapshots",
                                 "abfss://container@account.dfs.core.windows.net/snapshots"])
def test_unknown_schemes_are_refused_naming_the_scheme(uri):
    scheme = uri.split("://", 1)[0]
    expected = rf"the scheme '{scheme}://' is not supported; .* a local path, file://, s3:// or s3a://"
    for call in (lambda: storage.resolve(uri), lambda: snapshot.latest_version_dir(uri),
                 lambda: snapshot.verify_snapshot(uri + "/v1"),
                 lambda: SnapshotReloader(uri, cache_root=None, poll_seconds=1, metrics=sm.ServiceMetrics())):
        with pytest.raises(storage.UnsupportedScheme, match=expected):
            call()


def test_malformed_uris_are_refused():
    with pytest.raises(ValueError, match="names no bucket"):
        storage.resolve("s3:///snapshots")
    with pytest.raises(ValueError, match="must name this machine"):
        storage.resolve("file://otherhost/snapshots")
    with pytest.raises(ValueError, match="not an http:// or https:// URL"):
        storage.S3Options(endpoint_url="minio:9000")


def test_local_roots_as_paths_strings_and_file_uris_are_one_folder(tmp_path, snapshot_spec):
    root = tmp_path / "my snapshots"
    publish_spec(root, snapshot_spec)
    for given in (root, str(root), root.as_uri(), storage.resolve(root)):
        latest = snapshot.latest_version_dir(given)
        assert isinstance(latest, Path) and latest == root / snapshot_spec.model_version
    relative = os.path.relpath(root)
    assert snapshot.latest_version_dir(relative) == Path(relative) / snapshot_spec.model_version  # kept as given


def test_s3_options_come_from_the_aws_variables():
    env = {"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "the-secret", "AWS_SESSION_TOKEN": "t", "AWS_S3_ADDRESSING_STYLE": "virtual"}
    options = storage.S3Options.from_env(env)
    assert options == storage.S3Options("http://minio:9000", "eu-west-1", "k", "the-secret", "t", path_style=False)
    assert storage.S3Options.from_env({**env, "AWS_REGION": "us-west-2"}).region == "us-west-2"
    assert storage.S3Options.from_env(options.to_env()) == options  # what a child process reads back
    keyless = storage.S3Options.from_env({"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": ""})
    assert keyless.access_key is None and keyless.secret_key is None  # pyarrow's default chain (IAM role)
    assert "the-secret" not in repr(options)  # secrets stay out of logs
    with pytest.raises(ValueError, match="AWS_S3_ADDRESSING_STYLE"):
        storage.S3Options.from_env({"AWS_S3_ADDRESSING_STYLE": "sideways"})
