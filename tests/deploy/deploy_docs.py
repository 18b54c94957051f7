"""Helpers for tests/deploy: the generated documents, by kind, and the pod specs inside them."""
from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def checked_in_documents() -> list[tuple[str, dict]]:
    """(file name relative to deploy/, document) for every checked-in manifest under deploy/k8s and deploy/seldon."""
    docs = []
    for folder in ("k8s", "seldon"):
        for path in sorted((DEPLOY / folder).glob("*.yaml")):
            docs += [(str(path.relative_to(DEPLOY)), d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def spark_specs(doc: dict) -> list[dict]:
    """The SparkApplication specs in a SparkApplication or ScheduledSparkApplication (else none)."""
    if doc["kind"] == "SparkApplication":
        return [doc["spec"]]
    if doc["kind"] == "ScheduledSparkApplication":
        return [doc["spec"]["template"]]
    return []


def pod_specs(doc: dict) -> list[tuple[str, dict]]:
    """(role, PodSpec) of every pod a document starts: Spark drivers and executors, the Seldon components."""
    pods = []
    for spec in spark_specs(doc):
        pods += [(role, spec[role]["template"]["spec"]) for role in ("driver", "executor")]
    if doc["kind"] == "SeldonDeployment":
        pods += [("seldon", c["spec"]) for p in doc["spec"]["predictors"] for c in p["componentSpecs"]]
    return pods
