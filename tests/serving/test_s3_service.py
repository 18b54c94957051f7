"""The real service (seldon-core-microservice from the serving venv) on an ``s3://`` snapshot root: it serves a
snapshot published to S3 (the session's moto server), hot-reloads a newer one, and keeps it when the next one has a
file whose checksum does not match. The service gets the S3 settings as a pod would: AWS_* variables.

The stages share one service and run in file order.
"""
from __future__ import annotations

import dataclasses
import re

import pytest
import requests

from serving.serve import running_service
from serving.snapshot import set_latest
from tests.serving.conftest import grpc_calls, publish_spec_to_s3, s3_options, tamper, wait_for_log

PREDICT = "/api/v1.0/predictions"
PROCESSES = 2  # 1 gunicorn worker + 1 gRPC process, each polls and swaps on its own


@dataclasses.dataclass
class S3Service:
    service: object
    root: str
    options: object
    scratch: object
    cache: object


@pytest.fixture(scope="module")
def v2(snapshot_spec):
    users = dict(snapshot_spec.user_recommendations, **{"42": [("i8", 2.0), ("i7", 1.5), ("i6", 1.0)]})
    return dataclasses.replace(snapshot_spec, model_version="test-v2", user_recommendations=users)


@pytest.fixture(scope="module")
def s3_service(tmp_path_factory, s3_server, snapshot_spec, serving_venv_python):
    root = f"s3://{s3_server.make_bucket('serving')}/recsys/snapshots"
    options, scratch = s3_options(s3_server), tmp_path_factory.mktemp("s3-scratch")
    publish_spec_to_s3(root, snapshot_spec, scratch, options)
    work = tmp_path_factory.mktemp("s3-service")
    with running_service(root, log_path=work / "service.log", ready_timeout=60, workers=1, threads=2,
                         grpc_workers=1, cache_dir=work / "cache", poll_seconds=0.2, metrics_flush_seconds=0,
                         extra_env=s3_server.env()) as service:
        yield S3Service(service, root, options, scratch, work / "cache")


def lookup(service, user_id: str, k: int) -> dict:
    answer = requests.post(service.base_url + PREDICT, json={"jsonData": {"user_id": user_id, "k": k}}, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()["jsonData"]


def test_serves_a_snapshot_from_s3(s3_service, snapshot_spec, serving_venv_python):
    service = s3_service.service
    status = requests.get(service.base_url + "/health/status", timeout=5).json()["jsonData"]
    assert status["model_version"] == snapshot_spec.model_version
    assert status["reload"]["snapshot_root"] == s3_service.root
    assert lookup(service, "42", 3) == snapshot_spec.expected_user("42", 3)
    [grpc] = grpc_calls(service, serving_venv_python, [{"item_id": "i1", "k": 2}])
    assert grpc["ok"] == snapshot_spec.expected_similar("i1", 2)
    # the pod's cache holds the built arrays only: the download folder is gone
    folders = [p.name for p in s3_service.cache.iterdir() if p.is_dir()]
    assert len(folders) == 1 and re.fullmatch(rf"{snapshot_spec.model_version}\.[0-9a-f]{{16}}", folders[0]), folders


def test_hot_reloads_a_newer_version_published_to_s3(s3_service, v2):
    service = s3_service.service
    publish_spec_to_s3(s3_service.root, v2, s3_service.scratch, s3_service.options)
    wait_for_log(service, "model_version=test-v2 ", PROCESSES)
    for _ in range(4):
        assert lookup(service, "42", 3) == v2.expected_user("42", 3)


def test_a_bad_checksum_on_s3_is_refused_and_the_current_version_kept(s3_service, v2):
    service = s3_service.service
    bad = publish_spec_to_s3(s3_service.root, v2, s3_service.scratch, s3_service.options, publish=False,
                             model_version="test-v3")
    part = bad / "user_recommendations" / "part-00000.parquet"
    tamper(part)
    set_latest(s3_service.root, bad.name, s3=s3_service.options)
    wait_for_log(service, f"refused snapshot {bad}: SnapshotError: {part}: checksum", PROCESSES)
    assert "still serving test-v2" in service.log_text()
    for _ in range(4):
        assert lookup(service, "42", 3) == v2.expected_user("42", 3)
        status = requests.get(service.base_url + "/health/status", timeout=5)
        assert status.status_code == 200 and status.json()["jsonData"]["model_version"] == "test-v2"
        assert "refused snapshot" in status.json()["jsonData"]["reload"]["problem"]
    assert not [p for p in s3_service.cache.iterdir() if p.name.startswith(".download-")]
