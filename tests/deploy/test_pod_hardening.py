"""Every pod the deployment starts is hardened (deploy/pods.py's contract), walked over the generated manifests."""
from __future__ import annotations

import re

import pytest

from deploy import pods, seldon_deployment, spark_apps
from deploy_docs import DEPLOY, checked_in_documents, pod_specs

POD_SPECS = [(f"{name}:{role}", role, spec) for name, doc in checked_in_documents() for role, spec in pod_specs(doc)]
TOKEN = {"driver": True, "executor": False, "seldon": False}  # only the Spark driver talks to the API server


def test_every_kind_of_pod_is_walked():
    roles = {role for _, role, _ in POD_SPECS}
    assert roles == {"driver", "executor", "seldon"}
    assert len(POD_SPECS) == 2 * (len(spark_apps.STEPS) + 1) + 1


@pytest.mark.parametrize("where, role, spec", POD_SPECS, ids=[p[0] for p in POD_SPECS])
def test_pod_is_hardened(where, role, spec):
    assert spec["automountServiceAccountToken"] is TOKEN[role]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert all(set(v) == {"name", "emptyDir"} for v in volumes.values()), "only emptyDirs: pods share no disk"
    containers = spec.get("initContainers", []) + spec["containers"]
    for container in containers:
        context = container["securityContext"]  # complete per container (Seldon overwrites the pod's context)
        assert context["runAsNonRoot"] is True and context["runAsUser"] > 0
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert context.get("privileged", False) is False
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes
    main = spec["containers"][0]
    assert pods.TMP_DIR in {m["mountPath"] for m in main["volumeMounts"]}  # the root is read-only
    if "securityContext" in spec:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_users_are_the_images_users():
    batch = (DEPLOY / "Dockerfile.batch").read_text()
    serving = (DEPLOY / "Dockerfile.serving").read_text()
    assert re.search(rf"^USER {spark_apps.SPARK_UID}$", batch, re.M)
    assert re.search(rf"^USER {seldon_deployment.SERVING_UID}$", serving, re.M)


def test_spark_pods_get_a_writable_numba_cache_seeded_from_the_image():
    batch = (DEPLOY / "Dockerfile.batch").read_text()
    assert f"NUMBA_CACHE_DIR={spark_apps.IMAGE_NUMBA_CACHE}" in batch
    for where, role, spec in POD_SPECS:
        if role == "seldon":
            continue
        main = spec["containers"][0]
        env = {e["name"]: e.get("value") for e in main["env"]}
        assert env["NUMBA_CACHE_DIR"] == spark_apps.NUMBA_CACHE
        assert spark_apps.NUMBA_CACHE in {m["mountPath"] for m in main["volumeMounts"]}
        (seed,) = spec["initContainers"]
        assert seed["command"][-2:] == [f"{spark_apps.IMAGE_NUMBA_CACHE}/.", f"{spark_apps.NUMBA_CACHE}/"]


def test_the_service_cache_is_a_mounted_empty_dir():
    doc = next(d for _, d in checked_in_documents() if d["kind"] == "SeldonDeployment")
    predictor = doc["spec"]["predictors"][0]
    parameters = {p["name"]: p["value"] for p in predictor["graph"]["parameters"]}
    spec = predictor["componentSpecs"][0]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts[parameters["cache_dir"]]]
