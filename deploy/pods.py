"""What every pod the deployment starts shares: its hardening and how it gets object-storage credentials.

Contract, for every container (Spark driver, executors, their init container, the lookup service):
non-root with a fixed uid (the image's USER), read-only root filesystem, no privilege escalation, every Linux
capability dropped, the RuntimeDefault seccomp profile. Whatever a process writes goes to an emptyDir (/tmp and
the caches; Spark makes its own emptyDirs for its local dirs). Pods that need no Kubernetes API get no service
account token.

Credentials never appear in a manifest: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY come from the Secret named by
``storage.credentials_secret``, each marked optional, so a cluster that grants access through a cloud IAM role
(an annotated service account, or the node's role) needs no Secret at all.
"""
from __future__ import annotations

from deploy.settings import Settings

TMP_DIR = "/tmp"
CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
RUNTIME_DEFAULT = {"type": "RuntimeDefault"}


def container_security_context(uid: int) -> dict:
    """The container-level hardening (complete on its own: some operators overwrite the pod-level context)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": dict(RUNTIME_DEFAULT),
    }


def pod_security_context(uid: int) -> dict:
    """The pod-level context: the same user, fsGroup for the emptyDirs, RuntimeDefault seccomp."""
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
            "seccompProfile": dict(RUNTIME_DEFAULT)}


def empty_dir(name: str, size_limit: str | None = None) -> dict:
    return {"name": name, "emptyDir": {"sizeLimit": size_limit} if size_limit else {}}


def credentials_env(settings: Settings) -> list[dict]:
    """AWS key variables from the credentials Secret, optional (absent Secret or key: the variable is unset)."""
    secret = settings.storage.credentials_secret
    if not secret:
        return []
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
            for key in CREDENTIAL_KEYS]


def endpoint_env(settings: Settings) -> list[dict]:
    """AWS_ENDPOINT_URL (an S3-compatible store) and AWS_REGION, each only when the values file sets it."""
    env = []
    if settings.storage.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": settings.storage.endpoint})
    if settings.storage.region:
        env.append({"name": "AWS_REGION", "value": settings.storage.region})
    return env
