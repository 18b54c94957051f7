"""Service accounts and least-privilege RBAC for the deployment, from deploy/values.yaml.

Everything is namespaced (Role + RoleBinding in ``namespace``); nothing is cluster-wide.

* Spark (``service_accounts.spark``): the driver creates, watches and deletes its executor pods and the
  services and config maps that go with them (the rules the spark-operator chart gives its Spark role);
  executors run under the same account for object-storage identity but get no token.
* The pipeline (``service_accounts.pipeline``, in ``kubeflow_namespace``): exactly what
  deploy/kubeflow/launcher.py calls: create, get and delete SparkApplications, read a failed driver's log,
  get and patch the SeldonDeployment (tests/deploy checks the calls against these rules).
* The lookup service (``service_accounts.serving``): an identity for object storage only, no rules.

``service_accounts.annotations`` (e.g. an IAM role for service accounts) goes on all three accounts.
"""
from __future__ import annotations

from deploy.settings import Settings

RBAC_API = "rbac.authorization.k8s.io/v1"
SPARK_RULES = [
    {"apiGroups": [""], "resources": ["pods", "services", "configmaps", "persistentvolumeclaims"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]},
]
PIPELINE_RULES = [
    {"apiGroups": ["sparkoperator.k8s.io"], "resources": ["sparkapplications"], "verbs": ["create", "get", "delete"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": ["machinelearning.seldon.io"], "resources": ["seldondeployments"], "verbs": ["get", "patch"]},
]


def service_account(name: str, namespace: str, settings: Settings, *, automount: bool) -> dict:
    metadata = {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "recsys"}}
    if settings.service_accounts.annotations:
        metadata["annotations"] = dict(settings.service_accounts.annotations)
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata,
            "automountServiceAccountToken": automount}


def role_with_binding(name: str, rules: list[dict], *, namespace: str, account: str,
                      account_namespace: str) -> list[dict]:
    """A Role in ``namespace`` and the RoleBinding that grants it to ``account_namespace``/``account``."""
    role = {"apiVersion": RBAC_API, "kind": "Role", "metadata": {"name": name, "namespace": namespace},
            "rules": [dict(r) for r in rules]}
    binding = {"apiVersion": RBAC_API, "kind": "RoleBinding", "metadata": {"name": name, "namespace": namespace},
               "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": account_namespace}],
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}}
    return [role, binding]


def documents(settings: Settings) -> list[dict]:
    """The service accounts, Roles and RoleBindings, in the order `kubectl apply` should see them."""
    ns, accounts = settings.namespace, settings.service_accounts
    docs = [
        service_account(accounts.spark, ns, settings, automount=False),
        service_account(accounts.pipeline, settings.kubeflow_namespace, settings, automount=True),
        service_account(accounts.serving, ns, settings, automount=False),
    ]
    docs += role_with_binding(accounts.spark, SPARK_RULES, namespace=ns, account=accounts.spark, account_namespace=ns)
    docs += role_with_binding(accounts.pipeline, PIPELINE_RULES, namespace=ns, account=accounts.pipeline,
                              account_namespace=settings.kubeflow_namespace)
    return docs
