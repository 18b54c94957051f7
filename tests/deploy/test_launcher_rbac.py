"""The pipeline's RBAC grants exactly the Kubernetes calls the launcher makes (recorded through a fake client),
Spark's covers what its driver does, nothing is cluster-wide; the roll's JSON patch applies to the shipped
SeldonDeployment."""
from __future__ import annotations

import sys
import types

import jsonpatch
import pytest
import yaml

from deploy import rbac, spark_apps
from deploy.kubeflow import launcher
from deploy_docs import DEPLOY, checked_in_documents

RBAC_DOCS = [d for name, d in checked_in_documents() if name == "k8s/rbac.yaml"]
SELDON = yaml.safe_load((DEPLOY / "seldon" / "recommender.yaml").read_text())
PLURAL_GROUP = {"sparkapplications": "sparkoperator.k8s.io", "seldondeployments": "machinelearning.seldon.io"}


class Recorder:
    """Stands in for kubernetes.client's APIs: records (api group, resource, verb), answers with ``states``."""

    def __init__(self, states):
        self.calls, self.states = [], list(states)
        self.api_client = types.SimpleNamespace(set_default_header=lambda *a: None)

    def _status(self):
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"status": {"applicationState": {"state": state}, "driverInfo": {"podName": "driver-0"},
                           "state": state}}

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append((group, plural, "create"))

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append((group, plural, "get"))
        return self._status()

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append((group, plural, "delete"))

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self.calls.append((group, plural, "patch"))
        jsonpatch.apply_patch(SELDON, body)  # the patch sent applies to the shipped manifest

    def read_namespaced_pod_log(self, pod, namespace, tail_lines):
        self.calls.append(("", "pods/log", "get"))
        return "log"


@pytest.fixture
def fake_kubernetes(monkeypatch):
    def install(states):
        recorder = Recorder(states)
        config = types.SimpleNamespace(ConfigException=Exception, load_incluster_config=lambda: None,
                                       load_kube_config=lambda: None)
        client = types.SimpleNamespace(CustomObjectsApi=lambda: recorder, CoreV1Api=lambda: recorder)
        monkeypatch.setitem(sys.modules, "kubernetes", types.SimpleNamespace(client=client, config=config))
        monkeypatch.setattr(launcher.time, "sleep", lambda s: None)
        return recorder
    return install


def _launcher_calls(fake_kubernetes) -> set[tuple[str, str, str]]:
    manifest = spark_apps.spark_application(spark_apps.STEPS[0], {}, run_id="t")
    calls = set()
    for states, limits in ((["SUBMITTED", "RUNNING", "COMPLETED"], None), (["FAILED"], None),
                           (["PENDING_RERUN"], {"PENDING_RERUN": -1})):
        recorder = fake_kubernetes(states)
        try:
            launcher.run_spark_application(manifest, poll_s=0, stuck_limits=limits, log=lambda m: None)
        except launcher.SparkApplicationFailed:
            pass
        calls |= set(recorder.calls)
    recorder = fake_kubernetes(["Creating", "Available"])
    launcher.roll_seldon_deployment("recsys-lookup", "recsys", "v2", poll_s=0, log=lambda m: None)
    return calls | set(recorder.calls)


def _granted(rules) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def _role(name: str) -> dict:
    return next(d for d in RBAC_DOCS if d["kind"] == "Role" and d["metadata"]["name"] == name)


def test_the_pipeline_role_grants_exactly_what_the_launcher_calls(fake_kubernetes):
    used = _launcher_calls(fake_kubernetes)
    assert ("sparkoperator.k8s.io", "sparkapplications", "delete") in used  # a stuck application is removed
    assert ("machinelearning.seldon.io", "seldondeployments", "patch") in used
    granted = _granted(_role(spark_apps.SETTINGS.service_accounts.pipeline)["rules"])
    assert used == granted, f"unused grants: {granted - used}; missing: {used - granted}"


def test_the_spark_role_lets_the_driver_run_executors():
    granted = _granted(_role(spark_apps.SETTINGS.service_accounts.spark)["rules"])
    for resource in ("pods", "services", "configmaps", "persistentvolumeclaims"):
        for verb in ("create", "get", "list", "watch", "delete", "deletecollection"):
            assert ("", resource, verb) in granted
    assert not any(g != "" for g, _, _ in granted)  # nothing beyond core resources
    assert rbac.SPARK_RULES == _role(spark_apps.SETTINGS.service_accounts.spark)["rules"]


def test_nothing_is_cluster_wide_and_nothing_is_a_wildcard():
    kinds = {d["kind"] for d in RBAC_DOCS}
    assert kinds == {"ServiceAccount", "Role", "RoleBinding"}
    for doc in RBAC_DOCS:
        assert doc["metadata"].get("namespace")
        for rule in doc.get("rules", []):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
    for binding in (d for d in RBAC_DOCS if d["kind"] == "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        assert _role(binding["roleRef"]["name"])["metadata"]["namespace"] == binding["metadata"]["namespace"]


def test_only_the_pipeline_account_mounts_a_token_by_default():
    accounts = {d["metadata"]["name"]: d for d in RBAC_DOCS if d["kind"] == "ServiceAccount"}
    names = spark_apps.SETTINGS.service_accounts
    assert accounts[names.pipeline]["automountServiceAccountToken"] is True
    assert accounts[names.spark]["automountServiceAccountToken"] is False  # the driver's pod asks for its own
    assert accounts[names.serving]["automountServiceAccountToken"] is False


def test_the_roll_patch_applies_to_the_shipped_seldon_deployment():
    rolled = jsonpatch.apply_patch(SELDON, launcher.roll_patch("20261208T020000Z-1a2b3c4d"))
    again = jsonpatch.apply_patch(rolled, launcher.roll_patch("v3"))  # every later roll too
    annotations = again["spec"]["predictors"][0]["componentSpecs"][0]["metadata"]["annotations"]
    assert annotations["recsys/model-version"] == "v3"
    # only the annotation changes (Seldon copies component annotations onto the pod template: a rolling update)
    assert jsonpatch.make_patch(SELDON, again).patch == [
        {"op": "replace", "path": launcher.MODEL_VERSION_PATH, "value": "v3"}]
    assert SELDON["metadata"]["name"] == spark_apps.SETTINGS.seldon.deployment
