"""Hot reload through the real microservice: a new version is swapped in under load without losing a request or
mixing versions, a corrupt one is refused (log line, metric, health) while the current one keeps serving.
Also the answer size cap (gRPC's 4 MB message limit), with a small cap configured.

The stages share one service and run in file order.
"""
from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import requests

from tests.serving.conftest import grpc_calls, publish_spec, wait_for_log

PREDICT = "/api/v1.0/predictions"
PROCESSES = 3  # 2 gunicorn workers + 1 gRPC process, each swaps on its own


@pytest.fixture(scope="module")
def specs(snapshot_spec):
    """v1 as in conftest; v2 gives user 42 another list and drops u1, so answers tell the versions apart."""
    v2_users = dict(snapshot_spec.user_recommendations)
    v2_users["42"] = [("i8", 2.0), ("i7", 1.5), ("i6", 1.0)]
    del v2_users["u1"]
    return {
        "test-v1": snapshot_spec,
        "test-v2": dataclasses.replace(snapshot_spec, model_version="test-v2", user_recommendations=v2_users),
        "test-v4": dataclasses.replace(snapshot_spec, model_version="test-v4", similar_items={}),
    }


@pytest.fixture(scope="module")
def reload_service(tmp_path_factory, specs, serving_venv_python):
    from serving.serve import running_service

    root = tmp_path_factory.mktemp("reload-snapshots")
    publish_spec(root, specs["test-v1"])
    work = tmp_path_factory.mktemp("reload-service")
    # A small answer cap, to see it enforced over REST and gRPC (the default, 3.5 MB, needs a big snapshot to reach).
    with running_service(root, log_path=work / "service.log", ready_timeout=45, workers=2, threads=2,
                         cache_dir=work / "cache", poll_seconds=0.2, metrics_flush_seconds=0,
                         max_response_bytes=3000) as service:
        service.snapshot_root = root
        yield service


class Hammer:
    """Threads sending look-ups (single and batch) until stopped, recording every outcome."""

    BODIES = [{"user_id": "42", "k": 3}, {"user_id": "u1", "k": 3},
              {"requests": [{"user_id": "42", "k": 2}, {"user_id": "u1", "k": 2}, {"item_id": "i1", "k": 2}]}]

    def __init__(self, service, threads: int = 4):
        self.url = service.base_url + PREDICT
        self.stop = threading.Event()
        self.outcomes: list[tuple[dict, int, dict]] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, offset: int) -> None:
        session = requests.Session()
        i = offset
        while not self.stop.is_set():
            body = self.BODIES[i % len(self.BODIES)]
            i += 1
            try:
                response = session.post(self.url, json={"jsonData": body}, timeout=10)
                self.outcomes.append((body, response.status_code, response.json()))
            except Exception as exc:  # noqa: BLE001 - a lost request is what this test looks for
                self.outcomes.append((body, -1, {"exception": repr(exc)}))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def expected(spec, body: dict) -> dict:
    if "requests" in body:
        return {"results": [expected(spec, b) for b in body["requests"]], "model_version": spec.model_version}
    if "item_id" in body:
        return spec.expected_similar(body["item_id"], body["k"])
    return spec.expected_user(body["user_id"], body["k"])


def test_new_version_swaps_in_under_load_without_losing_a_request(reload_service, specs, serving_venv_python):
    service = reload_service
    with Hammer(service) as hammer:
        time.sleep(0.5)
        publish_spec(service.snapshot_root, specs["test-v2"])
        wait_for_log(service, "model_version=test-v2 ", PROCESSES)
        seen = len(hammer.outcomes)
        while len(hammer.outcomes) < seen + 40:
            time.sleep(0.05)
    outcomes = hammer.outcomes
    assert len(outcomes) > 100
    failed = [o for o in outcomes if o[1] != 200]
    assert not failed, failed[:3]
    versions = []
    for body, _, doc in outcomes:
        version = doc["jsonData"]["model_version"]
        assert doc["meta"]["tags"]["model_version"] == version
        assert doc["jsonData"] == expected(specs[version], body)  # right answers for the version it names
        versions.append(version)
    assert versions[0] == "test-v1" and versions[-1] == "test-v2" and set(versions) == {"test-v1", "test-v2"}
    assert versions[-30:] == ["test-v2"] * 30  # once every process swapped, only v2 answers

    [grpc] = grpc_calls(service, serving_venv_python, [{"user_id": "42", "k": 3}])
    assert grpc.get("ok") == specs["test-v2"].expected_user("42", 3), grpc
    metadata = requests.get(service.base_url + "/metadata", timeout=5).json()
    assert metadata["versions"] == ["test-v2"] and metadata["custom"]["model_version"] == "test-v2"


def test_corrupt_version_is_refused_and_the_current_one_kept(reload_service, specs, serving_venv_python):
    service = reload_service
    bad = publish_spec(service.snapshot_root, specs["test-v2"], model_version="test-v3")
    part = sorted((bad / "user_recommendations").glob("*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:-1] + b"X")
    with Hammer(service, threads=2) as hammer:
        wait_for_log(service, f"refused snapshot {bad}: SnapshotError: {part}: checksum", PROCESSES)
        time.sleep(0.5)  # several more polls: refused once per process, not again
    assert service.log_text().count(f"refused snapshot {bad}") == PROCESSES
    assert "still serving test-v2" in service.log_text()
    assert {o[1] for o in hammer.outcomes} == {200}
    assert {o[2]["jsonData"]["model_version"] for o in hammer.outcomes} == {"test-v2"}
    [grpc] = grpc_calls(service, serving_venv_python, [{"user_id": "42", "k": 3}])
    assert grpc["ok"]["model_version"] == "test-v2"

    for _ in range(6):  # health answers come from both workers; each reports the refusal and stays ready
        status = requests.get(service.base_url + "/health/status", timeout=5)
        assert status.status_code == 200 and status.json()["jsonData"]["model_version"] == "test-v2"
        assert "refused snapshot" in status.json()["jsonData"]["reload"]["problem"]

    metrics = requests.get(f"http://{service.host}:{service.metrics_port}/metrics", timeout=5).text
    refused = [line for line in metrics.splitlines()
               if line.startswith("recommender_reloads_total{") and 'outcome="refused"' in line]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in refused) >= 2  # both REST workers handed theirs over


def test_a_good_version_after_a_refused_one_is_served(reload_service, specs):
    service = reload_service
    publish_spec(service.snapshot_root, specs["test-v4"])
    wait_for_log(service, "model_version=test-v4 ", PROCESSES)
    for _ in range(6):
        answer = requests.post(service.base_url + PREDICT, json={"jsonData": {"item_id": "i1", "k": 2}}, timeout=5)
        assert answer.json()["jsonData"] == specs["test-v4"].expected_similar("i1", 2)  # no similar lists in v4
        status = requests.get(service.base_url + "/health/status", timeout=5).json()["jsonData"]
        assert status["model_version"] == "test-v4" and status["reload"]["problem"] is None


def test_answers_over_the_size_cap_are_refused_over_rest_and_grpc(reload_service, serving_venv_python):
    service = reload_service
    small = {"requests": [{"user_id": "42", "k": 5}] * 4}   # estimate 4 x (200 + 4 x 2 + 5 x 42) = 1,672 bytes
    large = {"requests": [{"user_id": "42", "k": 5}] * 10}  # 4,180 bytes: over the 3,000-byte cap
    assert requests.post(service.base_url + PREDICT, json={"jsonData": small}, timeout=5).status_code == 200
    refused = requests.post(service.base_url + PREDICT, json={"jsonData": large}, timeout=5)
    assert refused.status_code == 400
    assert refused.json()["status"]["info"].startswith(
        "the answer to this request could reach 4,180 bytes, over the 3,000 bytes limit that keeps answers under gRPC's")
    ok, too_big = grpc_calls(service, serving_venv_python, [small, large])
    assert len(ok["ok"]["results"]) == 4
    assert "send fewer look-ups or a smaller k" in too_big["error"]["message"]
