"""The lookup service's SeldonDeployment (Seldon Core v1, seldon-core-operator 1.19), from deploy/values.yaml.

Snapshots come from object storage: jobs/publish.py writes <snapshots>/<version>/ and then LATEST; every process of
every replica polls LATEST (poll_seconds), downloads a new version into the pod-local cache (an emptyDir),
verifies every checksum and only then swaps to it; a snapshot that fails its checks is refused and the current one
kept. Readiness (/health/status) turns green only after the first good load; liveness (/health/ping) answers from
the start, so a slow first load never gets the pod killed.

Contract for the roll: the first component's ``metadata.annotations`` holds ``recsys/model-version``; the
pipeline's roll step (deploy/kubeflow/launcher.py ``roll_patch``) replaces it, which changes the pod template and
so rolls the pods. The operator overwrites the pod-level securityContext with its own default, so the hardening
is complete at the container level (deploy/pods.py).
"""
from __future__ import annotations

from deploy import pods
from deploy.settings import Settings

API_VERSION = "machinelearning.seldon.io/v1"
SERVING_UID = 8888  # deploy/Dockerfile.serving's USER
CONTAINER = "recommender"
CACHE_DIR = "/var/cache/recommender"
CACHE_SIZE = "4Gi"
MODEL_VERSION_ANNOTATION = "recsys/model-version"
INITIAL_MODEL_VERSION = "unrolled"  # until the pipeline first rolls the deployment
WORKER_ENV = {"GUNICORN_WORKERS": "2", "GUNICORN_THREADS": "2", "GRPC_WORKERS": "1", "GRPC_THREADS": "4"}
PORTS = (("http", 9000), ("grpc", 9500), ("metrics", 6000))


def parameters(settings: Settings) -> list[dict]:
    """The graph's parameters: RecommenderService.__init__ arguments, as Seldon types them."""
    return [
        {"name": "snapshot_root", "type": "STRING", "value": settings.storage.snapshots},
        {"name": "cache_dir", "type": "STRING", "value": CACHE_DIR},
        {"name": "poll_seconds", "type": "FLOAT", "value": "10"},
        {"name": "max_batch", "type": "INT", "value": "100"},
        {"name": "max_exclude", "type": "INT", "value": "500"},
        {"name": "metrics_flush_seconds", "type": "FLOAT", "value": "1"},
    ]


def container(settings: Settings) -> dict:
    env = [{"name": k, "value": v} for k, v in WORKER_ENV.items()]
    env += pods.credentials_env(settings) + pods.endpoint_env(settings)
    return {
        "name": CONTAINER,
        "image": settings.images.serving,
        "imagePullPolicy": "IfNotPresent",
        "env": env,
        "ports": [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in PORTS],
        "resources": {"requests": {"cpu": "2", "memory": "3Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
        "readinessProbe": {"httpGet": {"path": "/health/status", "port": "http"}, "periodSeconds": 5,
                           "timeoutSeconds": 2, "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/health/ping", "port": "http"}, "initialDelaySeconds": 15,
                          "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 6},
        "securityContext": pods.container_security_context(SERVING_UID),
        "volumeMounts": [{"name": "snapshot-cache", "mountPath": CACHE_DIR},
                         {"name": "tmp", "mountPath": pods.TMP_DIR}],
    }


def seldon_deployment(settings: Settings) -> dict:
    """The SeldonDeployment named ``seldon.deployment`` in ``namespace``; no service account token in its pods."""
    name = settings.seldon.deployment
    pod_spec = {
        "serviceAccountName": settings.service_accounts.serving,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 30,
        "containers": [container(settings)],
        "volumes": [pods.empty_dir("snapshot-cache", CACHE_SIZE), pods.empty_dir("tmp")],
    }
    graph = {"name": CONTAINER, "type": "MODEL",
             "endpoint": {"type": "REST", "httpPort": 9000, "grpcPort": 9500},
             "parameters": parameters(settings)}
    return {
        "apiVersion": API_VERSION,
        "kind": "SeldonDeployment",
        "metadata": {"name": name, "namespace": settings.namespace,
                     "labels": {"app": name, "app.kubernetes.io/part-of": "recsys"}},
        "spec": {
            "name": name,
            "protocol": "seldon",
            "predictors": [{
                "name": "default",
                "replicas": settings.seldon.replicas,
                "labels": {"version": "v1"},
                "componentSpecs": [{
                    "metadata": {"annotations": {MODEL_VERSION_ANNOTATION: INITIAL_MODEL_VERSION}},
                    "spec": pod_spec,
                }],
                "graph": graph,
            }],
        },
    }
