"""The serving image and SeldonDeployment agree with the code, and the service runs the way the container runs it.

The container test starts ``seldon-core-microservice`` with exactly the image's CMD and environment plus what the
Seldon operator adds (ports, PREDICTIVE_UNIT_PARAMETERS from the manifest's graph parameters), on a snapshot that
fails its checks: the readiness probe's path must say 503 and why, the liveness probe's path 200, and publishing a
good snapshot must make it ready without a restart.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import time

import pytest
import requests
import yaml

from deploy import settings
from serving import serve
from serving.openapi import HEALTH_STATUS_PATHS, PREDICTION_PATHS
from serving.serve import REPO_ROOT, RunningService, free_port, serving_venv, stop_service, wait_until_ready
from tests.serving.conftest import publish_spec

DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile.serving"
MANIFEST = REPO_ROOT / "deploy" / "seldon" / "recommender.yaml"
SELDON_TYPES = {"STRING": str, "INT": int, "FLOAT": float, "DOUBLE": float, "BOOL": str}


def dockerfile_env() -> dict[str, str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(dict(pair.split("=", 1) for pair in shlex.split(line[4:])))
    return env


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


@pytest.fixture(scope="module")
def container(manifest) -> dict:
    return manifest["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]


def service_parameters() -> list[str]:
    """RecommenderService.__init__'s parameter names (read from the source: seldon is not in this venv)."""
    tree = ast.parse((REPO_ROOT / "serving" / "recommender_service.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "RecommenderService")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    return [a.arg for a in init.args.args[1:]]


def test_manifest_is_a_seldon_deployment_of_this_service(manifest, container):
    assert (manifest["apiVersion"], manifest["kind"]) == ("machinelearning.seldon.io/v1", "SeldonDeployment")
    predictor = manifest["spec"]["predictors"][0]
    assert predictor["replicas"] >= 2
    assert predictor["graph"]["name"] == container["name"] and predictor["graph"]["type"] == "MODEL"
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 9000, "grpc": 9500, "metrics": 6000}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/status", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/ping", "port": "http"}
    assert "/health/status" in HEALTH_STATUS_PATHS


def test_manifest_parameters_are_service_parameters(manifest):
    parameters = manifest["spec"]["predictors"][0]["graph"]["parameters"]
    known = service_parameters()
    assert "snapshot_root" in {p["name"] for p in parameters}
    for parameter in parameters:
        assert parameter["name"] in known, parameter
        SELDON_TYPES[parameter["type"]](parameter["value"])  # seldon parses it with this type
    mounts = {m["mountPath"] for m in manifest["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]
              ["volumeMounts"]}
    values = {p["name"]: p["value"] for p in parameters}
    # snapshots are read from object storage (no volume shared with the batch side) into the pod-local cache
    assert values["snapshot_root"] == settings.load().storage.snapshots and "://" in values["snapshot_root"]
    assert values["cache_dir"] in mounts


def test_image_settings_match_serve_defaults(container):
    env = dockerfile_env()
    assert env["MODEL_NAME"] == serve.INTERFACE and env["SERVICE_TYPE"] == "MODEL"
    assert (int(env["GUNICORN_WORKERS"]), int(env["GUNICORN_THREADS"])) == (serve.DEFAULT_WORKERS, serve.DEFAULT_THREADS)
    for name, value in serve.SERVICE_ENV.items():
        assert env[name] == value
    container_env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    for name in ("GUNICORN_WORKERS", "GUNICORN_THREADS", "GRPC_WORKERS", "GRPC_THREADS"):
        assert container_env[name] == env[name]
    text = DOCKERFILE.read_text()
    assert "COPY requirements/serving.lock" in text and (REPO_ROOT / "requirements" / "serving.lock").is_file()
    assert re.search(r'^CMD exec seldon-core-microservice "\$MODEL_NAME" --service-type "\$SERVICE_TYPE"$', text, re.M)
    assert "pyspark" not in (REPO_ROOT / "requirements" / "serving.lock").read_text()


def test_service_runs_as_the_container_runs_it(tmp_path, manifest, container, snapshot_spec, serving_venv_python):
    root = tmp_path / "snapshots"
    bad = publish_spec(root, snapshot_spec, model_version="broken-v0")
    part = sorted((bad / "user_recommendations").glob("*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:-1] + b"X")

    parameters = manifest["spec"]["predictors"][0]["graph"]["parameters"]
    local_paths = {"snapshot_root": str(root), "cache_dir": str(tmp_path / "cache")}
    parameters = [{**p, "value": local_paths.get(p["name"], p["value"])} for p in parameters]
    parameters = [p if p["name"] != "poll_seconds" else {**p, "value": "0.3"} for p in parameters]
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    env = {**os.environ, **dockerfile_env(), **{e["name"]: e["value"] for e in container["env"] if "value" in e}}
    env.update({  # what the Seldon operator sets, and the image's PYTHONPATH pointing at this checkout
        "PREDICTIVE_UNIT_PARAMETERS": json.dumps(parameters),
        "PREDICTIVE_UNIT_HTTP_SERVICE_PORT": str(http_port),
        "PREDICTIVE_UNIT_GRPC_SERVICE_PORT": str(grpc_port),
        "PREDICTIVE_UNIT_METRICS_SERVICE_PORT": str(metrics_port),
        "PYTHONPATH": str(REPO_ROOT),
        "XDG_RUNTIME_DIR": str(tmp_path),
    })
    command = [str(serving_venv() / "bin" / "seldon-core-microservice"), env["MODEL_NAME"], "--service-type",
               env["SERVICE_TYPE"]]
    log_path = tmp_path / "container.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    service = RunningService(process, log_path, http_port, grpc_port, metrics_port)
    readiness = service.base_url + container["readinessProbe"]["httpGet"]["path"]
    liveness = service.base_url + container["livenessProbe"]["httpGet"]["path"]
    try:
        deadline = time.monotonic() + 60
        while "refused snapshot" not in service.log_text() or service.log_text().count("refused snapshot") < 3:
            assert process.poll() is None, service.log_text()
            assert time.monotonic() < deadline, f"no refusal logged:\n{service.log_text()[-3000:]}"
            time.sleep(0.2)
        for _ in range(4):  # every worker: alive, not ready, and says why
            assert requests.get(liveness, timeout=5).status_code == 200
            not_ready = requests.get(readiness, timeout=5)
            assert not_ready.status_code == 503
            info = not_ready.json()["status"]["info"]
            assert info.startswith("not ready:") and "checksum" in info and part.name in info
        lookup = requests.post(service.base_url + PREDICTION_PATHS[0], json={"jsonData": {"user_id": "42"}}, timeout=5)
        assert lookup.status_code == 503 and "SnapshotError" in lookup.json()["status"]["info"]

        publish_spec(root, snapshot_spec)  # a good snapshot: ready without a restart
        wait_until_ready(service, 60)
        expected_processes = int(env["GUNICORN_WORKERS"]) + int(env["GRPC_WORKERS"])
        while service.log_text().count(f"model_version={snapshot_spec.model_version} ") < expected_processes:
            assert time.monotonic() < deadline + 60, service.log_text()[-3000:]
            time.sleep(0.2)
        for _ in range(4):
            assert requests.get(readiness, timeout=5).status_code == 200
            answer = requests.post(service.base_url + PREDICTION_PATHS[0],
                                   json={"jsonData": {"user_id": "42", "k": 2}}, timeout=5)
            assert answer.json()["jsonData"] == snapshot_spec.expected_user("42", 2)
        assert f"SnapshotError: {part}: checksum" in service.log_text()
    finally:
        stop_service(service)
