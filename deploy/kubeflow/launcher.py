"""Run one SparkApplication to the end from a pipeline step: create it, watch it, turn its end into an exit code.

The decision logic (`decide`) is a pure function of what the operator reports, so it is tested on the states the
operator really produces, including the ones users trip over (PITFALLS, kubeflow/spark-operator#2302, #1191,
#2237): FAILED before the driver pod exists, stuck in PENDING_RERUN or SUBMITTED, or no progress at all. Every
non-COMPLETED end becomes a failed step within a bounded time, with the driver log attached; an application it
gives up on (stuck or timed out) is deleted, so it cannot run on after its step failed.

The Kubernetes calls made here are the pipeline's RBAC (deploy/rbac.py PIPELINE_RULES): create, get and delete
sparkapplications, get pods/log, get and patch seldondeployments, all in the deployment's namespace.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

GROUP, VERSION, PLURAL = "sparkoperator.k8s.io", "v1beta2", "sparkapplications"
SELDON_GROUP, SELDON_VERSION, SELDON_PLURAL = "machinelearning.seldon.io", "v1", "seldondeployments"
MODEL_VERSION_PATH = "/spec/predictors/0/componentSpecs/0/metadata/annotations/recsys~1model-version"
SUCCESS = {"COMPLETED"}
FAILURE = {"FAILED", "SUBMISSION_FAILED", "INVALIDATING", "UNKNOWN"}
# States an application may legitimately sit in for a while, with how long we tolerate it (seconds).
STUCK_LIMITS = {"": 600, "NEW": 600, "SUBMITTED": 900, "PENDING_RERUN": 900, "FAILING": 300, "SUCCEEDING": 300}


@dataclass(frozen=True)
class Decision:
    action: str  # "wait", "succeeded", "failed"
    reason: str = ""


def decide(state: str, *, seconds_in_state: float, seconds_total: float, timeout_s: float,
           stuck_limits: dict[str, float] | None = None) -> Decision:
    limits = STUCK_LIMITS if stuck_limits is None else stuck_limits
    if state in SUCCESS:
        return Decision("succeeded")
    if state in FAILURE:
        return Decision("failed", f"application ended in state {state}")
    if seconds_total > timeout_s:
        return Decision("failed", f"timed out after {seconds_total:.0f} s (limit {timeout_s:.0f} s) in state {state or 'NEW'}")
    limit = limits.get(state)
    if limit is not None and seconds_in_state > limit:
        return Decision("failed", f"stuck in state {state or 'NEW'} for {seconds_in_state:.0f} s (limit {limit:.0f} s)")
    return Decision("wait")


class SparkApplicationFailed(RuntimeError):
    """The application did not complete; the message carries the reason and the end of the driver log."""


def run_spark_application(manifest: dict, *, timeout_s: float = 4 * 3600, poll_s: float = 15.0,
                          stuck_limits: dict[str, float] | None = None, log=print) -> dict:
    """Create ``manifest`` in its namespace and wait for its end. Returns the final status; raises on failure."""
    from kubernetes import client, config  # the pipeline image has the kubernetes client (a kfp dependency)

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.CustomObjectsApi()
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    log(f"created SparkApplication {namespace}/{name}")
    started = last_change = time.monotonic()
    last_state = None
    while True:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        status = obj.get("status") or {}
        state = (status.get("applicationState") or {}).get("state", "")
        now = time.monotonic()
        if state != last_state:
            log(f"{name}: {last_state or 'NEW'} -> {state or 'NEW'}")
            last_state, last_change = state, now
        decision = decide(state, seconds_in_state=now - last_change, seconds_total=now - started,
                          timeout_s=timeout_s, stuck_limits=stuck_limits)
        if decision.action == "succeeded":
            return status
        if decision.action == "failed":
            driver_log = _driver_log(client, namespace, status)
            if state not in FAILURE:  # given up on it (stuck or timed out): it must not run on after the step
                api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
                log(f"deleted SparkApplication {namespace}/{name}")
            raise SparkApplicationFailed(f"{namespace}/{name}: {decision.reason}. "
                                         f"{(status.get('applicationState') or {}).get('errorMessage', '')}\n"
                                         f"--- driver log (end) ---\n{driver_log}")
        time.sleep(poll_s)


def _driver_log(client, namespace: str, status: dict, lines: int = 200) -> str:
    pod = (status.get("driverInfo") or {}).get("podName")
    if not pod:
        return "(no driver pod was created)"
    try:
        return client.CoreV1Api().read_namespaced_pod_log(pod, namespace, tail_lines=lines)
    except Exception as exc:  # the pod may be gone already; the failure itself must still be reported
        return f"(driver log of {pod} unavailable: {exc})"


def roll_patch(model_version: str) -> list[dict]:
    """The JSON patch (RFC 6902) that stamps the SeldonDeployment's first component with ``model_version``.

    It applies to the shipped manifest (deploy/seldon_deployment.py puts the annotation there); "add" on an
    existing member replaces its value, so the same patch works on every roll."""
    return [{"op": "add", "path": MODEL_VERSION_PATH, "value": model_version}]


def roll_seldon_deployment(name: str, namespace: str, model_version: str, *, timeout_s: float = 900,
                           poll_s: float = 10.0, log=print) -> None:
    """Stamp the SeldonDeployment's pod template with the model version (a rolling update) and wait until Available.

    The lookup service also hot-reloads LATEST by itself; the roll makes the switch explicit and visible in
    the deployment's history, and fails the pipeline if the new pods never become ready.
    """
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.CustomObjectsApi()
    api.api_client.set_default_header("Content-Type", "application/json-patch+json")
    api.patch_namespaced_custom_object(SELDON_GROUP, SELDON_VERSION, namespace, SELDON_PLURAL, name,
                                       roll_patch(model_version))
    log(f"SeldonDeployment {namespace}/{name} annotated with model version {model_version}")
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        obj = api.get_namespaced_custom_object(SELDON_GROUP, SELDON_VERSION, namespace, SELDON_PLURAL, name)
        state = (obj.get("status") or {}).get("state", "")
        if state == "Available":
            log(f"SeldonDeployment {namespace}/{name} Available on {model_version}")
            return
        if state == "Failed":
            raise SparkApplicationFailed(f"SeldonDeployment {namespace}/{name} Failed: {obj.get('status')}")
        time.sleep(poll_s)
    raise SparkApplicationFailed(f"SeldonDeployment {namespace}/{name} not Available after {timeout_s:.0f} s")
