"""The real seldon-core-microservice (serving venv) on a fixture snapshot, over REST and gRPC.

REST goes through requests from this (batch) venv; gRPC through ``python -m deploy.client`` run by the serving
venv's python, because seldon's protobuf stubs cannot load next to kfp's protobuf 6.
"""
from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from deploy.client import wait_ready
from deploy.testing import REPO_ROOT, start_service, stop_service, write_snapshot

PREDICT = "/api/v1.0/predictions"


def predict(service, body, **kwargs):
    return requests.post(service.base_url + PREDICT, json=body, timeout=10, **kwargs)


def grpc_lookup(service, python, user_id, k=None):
    command = [str(python), "-m", "deploy.client", "--protocol", "grpc", "--host", service.host,
               "--http-port", str(service.http_port), "--grpc-port", str(service.grpc_port), "--wait-ready", "20", "--user-id", user_id]
    if k is not None:
        command += ["--k", str(k)]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)


def error_info(response) -> str:
    return response.json()["status"]["info"]


def test_health_reports_the_loaded_version(service, snapshot_spec):
    response = requests.get(service.base_url + "/health/status", timeout=5)
    assert response.status_code == 200
    assert response.json()["jsonData"] == {
        "ready": True,
        "model_version": snapshot_spec.model_version,
        "users": len(snapshot_spec.user_recommendations),
        "n": snapshot_spec.n,
    }


@pytest.mark.parametrize("user_id", ["42", "u1", "u2", "zoë-7"])
def test_rest_known_users_get_their_list(service, snapshot_spec, user_id):
    response = predict(service, {"jsonData": {"user_id": user_id, "k": 3}})
    assert response.status_code == 200, response.text
    items, scores = snapshot_spec.personal(user_id, 3)
    assert response.json()["jsonData"] == {
        "user_id": user_id,
        "item_ids": items,
        "scores": scores,
        "source": "personal",
        "model_version": snapshot_spec.model_version,
    }
    assert response.json()["meta"]["tags"] == {"model_version": snapshot_spec.model_version}


def test_rest_default_k_is_capped_at_n(service, snapshot_spec):
    answer = predict(service, {"jsonData": {"user_id": "42"}}).json()["jsonData"]
    assert answer["item_ids"] == snapshot_spec.personal("42", snapshot_spec.n)[0]


@pytest.mark.parametrize("user_id", ["nobody", "4", "u-empty"])
def test_rest_unknown_user_gets_popular(service, snapshot_spec, user_id):
    answer = predict(service, {"jsonData": {"user_id": user_id, "k": 4}}).json()["jsonData"]
    items, scores = snapshot_spec.popular(4)
    assert (answer["item_ids"], answer["scores"], answer["source"]) == (items, scores, "popular")


@pytest.mark.parametrize("k", [0, 6, -3, 2.5, "3"])
def test_rest_bad_k_is_400_naming_k(service, k):
    response = predict(service, {"jsonData": {"user_id": "42", "k": k}})
    assert response.status_code == 400
    assert error_info(response).startswith("k must be")


@pytest.mark.parametrize("payload", [{"k": 3}, {"user_id": 42}, {"user_id": None}])
def test_rest_missing_or_mistyped_user_id_is_400(service, payload):
    response = predict(service, {"jsonData": payload})
    assert response.status_code == 400
    assert "user_id" in error_info(response)


@pytest.mark.parametrize(
    "data, headers",
    [
        (b"{not json", {"Content-Type": "application/json"}),
        (b"{not json", {"Content-Type": "text/plain"}),  # seldon 1.19 alone would answer 500 here
        (b"", {}),
        (b'{"jsonData": "42"}', {"Content-Type": "application/json"}),
        (b'{"foo": 1}', {"Content-Type": "application/json"}),
        (b"[1, 2]", {"Content-Type": "application/json"}),
        (b'{"data": {"ndarray": [[1, 2]]}}', {"Content-Type": "application/json"}),
    ],
)
def test_rest_garbage_is_4xx_not_500(service, data, headers):
    response = requests.post(service.base_url + PREDICT, data=data, headers=headers, timeout=10)
    assert 400 <= response.status_code < 500, response.text
    assert error_info(response)


def test_rest_unknown_route_is_404(service):
    assert requests.get(service.base_url + "/no/such/route", timeout=5).status_code == 404


def test_metadata_names_the_model_version(service, snapshot_spec):
    doc = requests.get(service.base_url + "/metadata", timeout=5).json()
    assert doc["name"] == "recommender"
    assert doc["versions"] == [snapshot_spec.model_version]
    assert doc["custom"]["model_version"] == snapshot_spec.model_version
    assert doc["inputs"][0]["messagetype"] == "jsonData"


def test_rest_concurrent_lookups_all_correct(service, snapshot_spec):
    users = ["42", "u1", "u2", "nobody"] * 25
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda u: predict(service, {"jsonData": {"user_id": u, "k": 2}}).json(), users))
    for user_id, answer in zip(users, answers):
        expected = snapshot_spec.popular(2) if user_id == "nobody" else snapshot_spec.personal(user_id, 2)
        assert answer["jsonData"]["item_ids"] == expected[0]


def test_grpc_known_user(service, serving_venv_python, snapshot_spec):
    result = grpc_lookup(service, serving_venv_python, "42", 4)
    assert result.returncode == 0, result.stderr
    items, scores = snapshot_spec.personal("42", 4)
    assert json.loads(result.stdout) == {
        "user_id": "42",
        "item_ids": items,
        "scores": scores,
        "source": "personal",
        "model_version": snapshot_spec.model_version,
    }


def test_grpc_unknown_user_gets_popular(service, serving_venv_python, snapshot_spec):
    result = grpc_lookup(service, serving_venv_python, "nobody")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert (answer["item_ids"], answer["source"]) == (snapshot_spec.popular(snapshot_spec.n)[0], "popular")


def test_grpc_bad_k_is_refused_naming_k(service, serving_venv_python):
    result = grpc_lookup(service, serving_venv_python, "42", 99)
    assert result.returncode == 1
    error = json.loads(result.stderr)["error"]
    assert error["protocol"] == "grpc"
    assert "k must be between 1 and 5, got 99" in error["message"]


def test_corrupted_snapshot_never_becomes_ready(tmp_path, snapshot_spec, serving_venv_python):
    root = tmp_path / "snapshots"
    version_dir = write_snapshot(root, model_version="corrupt-v1", n=snapshot_spec.n,
                                 user_recommendations=snapshot_spec.user_recommendations,
                                 popular_items=snapshot_spec.popular_items)
    part = sorted((version_dir / "user_recommendations").glob("*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:-1] + b"X")

    service = start_service(root, log_path=tmp_path / "service.log")
    try:
        deadline = time.monotonic() + 30
        seen = []
        while time.monotonic() < deadline:
            assert service.process.poll() is None, service.log_text()
            try:
                seen.append(requests.get(service.base_url + "/health/status", timeout=2))
            except requests.ConnectionError:
                pass
            # A worker answers only after its load() ran, so once it answers the verdict is final; poll a bit more
            # to see that it stays unready and to let the gRPC process log too.
            if len(seen) >= 5 and service.log_text().count("SnapshotError") >= 2:
                break
            time.sleep(0.2)
        assert seen, f"the HTTP server never answered; log:\n{service.log_text()}"
        assert {r.status_code for r in seen} == {503}
        assert "checksum" in error_info(seen[-1]) and part.name in error_info(seen[-1])

        with pytest.raises(TimeoutError, match="HTTP 503: not ready.*SnapshotError"):
            wait_ready(service.host, service.http_port, 0.5)
        lookup = predict(service, {"jsonData": {"user_id": "42"}})
        assert lookup.status_code == 503 and "SnapshotError" in error_info(lookup)
        log = service.log_text()
        assert f"SnapshotError: {part}: checksum" in log
        assert "loaded snapshot" not in log
    finally:
        stop_service(service)
    assert service.process.returncode is not None
