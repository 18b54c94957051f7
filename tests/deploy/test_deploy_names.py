"""One source of names: every generated manifest and the compiled pipeline use deploy/values.yaml's names, and
nothing else; credentials never appear in a manifest."""
from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from deploy import manifests, settings
from deploy.kubeflow.pipeline import compile_pipeline
from deploy_docs import DEPLOY, REPO, checked_in_documents, pod_specs, spark_specs

S = settings.load()


def _arg(arguments: list[str], flag: str) -> str | None:
    return arguments[arguments.index(flag) + 1] if flag in arguments else None


def _secret_names(pod_spec: dict) -> set[str]:
    return {e["valueFrom"]["secretKeyRef"]["name"] for c in pod_spec["containers"] for e in c.get("env", [])
            if "valueFrom" in e}


def test_spark_applications_use_the_values_names():
    docs = [d for _, d in checked_in_documents() if spark_specs(d)]
    assert len(docs) == 11
    for doc in docs:
        assert doc["metadata"]["namespace"] == S.namespace
        for spec in spark_specs(doc):
            assert spec["image"] == S.images.batch
            assert spec["driver"]["serviceAccount"] == spec["executor"]["serviceAccount"] == S.service_accounts.spark
            assert _arg(spec["arguments"], "--lake") == S.storage.lake
            assert _arg(spec["arguments"], "--input") in (None, S.storage.input)
            assert _arg(spec["arguments"], "--snapshot-root") in (None, S.storage.snapshots)
        for _, pod in pod_specs(doc):
            assert _secret_names(pod) == {S.storage.credentials_secret}
    nightly = next(d for d in docs if d["kind"] == "ScheduledSparkApplication")
    assert nightly["spec"]["schedule"] == S.schedules.nightly


def test_seldon_deployment_uses_the_values_names():
    doc = next(d for _, d in checked_in_documents() if d["kind"] == "SeldonDeployment")
    assert doc["metadata"]["name"] == doc["spec"]["name"] == S.seldon.deployment
    assert doc["metadata"]["namespace"] == S.namespace
    predictor = doc["spec"]["predictors"][0]
    assert predictor["replicas"] == S.seldon.replicas
    spec = predictor["componentSpecs"][0]["spec"]
    assert spec["serviceAccountName"] == S.service_accounts.serving
    assert spec["containers"][0]["image"] == S.images.serving
    assert {p["name"]: p["value"] for p in predictor["graph"]["parameters"]}["snapshot_root"] == S.storage.snapshots
    assert _secret_names(spec) == {S.storage.credentials_secret}


def test_rbac_uses_the_values_names():
    docs = [d for name, d in checked_in_documents() if name == "k8s/rbac.yaml"]
    accounts = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "ServiceAccount"}
    assert accounts == {(S.namespace, S.service_accounts.spark), (S.namespace, S.service_accounts.serving),
                        (S.kubeflow_namespace, S.service_accounts.pipeline)}
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):
        assert binding["metadata"]["namespace"] == S.namespace
        for subject in binding["subjects"]:
            assert (subject["namespace"], subject["name"]) in accounts


def test_the_compiled_pipeline_uses_the_values_names(tmp_path):
    for path in (DEPLOY / "kubeflow" / "nightly_pipeline.yaml", compile_pipeline(tmp_path / "p.yaml")):
        doc = yaml.safe_load(path.read_text())
        defaults = {k: v.get("defaultValue") for k, v in doc["root"]["inputDefinitions"]["parameters"].items()}
        assert defaults["namespace"] == S.namespace and defaults["image"] == S.images.batch
        assert defaults["seldon_deployment"] == S.seldon.deployment
        assert (defaults["lake"], defaults["input_path"], defaults["snapshot_root"]) == (
            S.storage.lake, S.storage.input, S.storage.snapshots)
        constants = {t["inputs"]["parameters"]["settings_json"]["runtimeValue"]["constant"]
                     for t in doc["root"]["dag"]["tasks"].values() if "settings_json" in t["inputs"]["parameters"]}
        assert [json.loads(c) for c in constants] == [S.as_dict()]


def test_old_and_stray_names_are_gone():
    texts = [p.read_text() for d in ("k8s", "seldon", "kubeflow") for p in (DEPLOY / d).glob("*.yaml")]
    for text in texts:
        for stray in ("recsys-snapshots", "recommender-snapshots", "persistentVolumeClaim", "claimName"):
            assert stray not in text


def test_another_values_file_changes_every_name(tmp_path):
    """Rendered from other values, no default name survives anywhere: nothing is hard-coded beside the file."""
    raw = S.as_dict()
    raw.update(namespace="shop", kubeflow_namespace="kf-shop")
    raw["service_accounts"].update(spark="sa-one", pipeline="sa-two", serving="sa-three")
    raw["images"].update(batch="registry.test/b:1-spark4.1.4", serving="registry.test/s:1")
    raw["storage"].update(lake="s3a://other/lake", input="s3a://other/in/", snapshots="s3://other/snaps",
                          credentials_secret="shop-keys")
    raw["seldon"].update(deployment="shop-lookup")
    raw["schedules"].update(nightly="30 3 * * *")
    text = "".join(p.read_text() for p in manifests.render_all(tmp_path, settings.from_dict(raw)))
    for old in (f"namespace: {S.namespace}\n", S.service_accounts.spark, S.service_accounts.pipeline, S.service_accounts.serving,
                S.images.batch, S.images.serving, S.storage.lake, S.storage.snapshots, S.storage.credentials_secret,
                S.seldon.deployment, S.schedules.nightly):
        assert old not in text, old
    for new in ("namespace: shop\n", "sa-one", "sa-two", "sa-three", "shop-keys", "shop-lookup", "s3://other/snaps"):
        assert new in text, new


def test_s3_endpoint_settings_only_when_an_endpoint_is_set(tmp_path):
    plain = "".join(p.read_text() for p in manifests.render_all(tmp_path / "a"))
    assert "fs.s3a.endpoint" not in plain and "AWS_ENDPOINT_URL" not in plain and "path.style" not in plain
    custom = dataclasses.replace(S, storage=dataclasses.replace(S.storage, endpoint="http://minio.minio:9000"))
    written = manifests.render_all(tmp_path / "b", custom)
    docs = [d for p in written for d in yaml.safe_load_all(p.read_text())]
    for doc in docs:
        for spec in spark_specs(doc):
            assert spec["sparkConf"]["spark.hadoop.fs.s3a.endpoint"] == "http://minio.minio:9000"
            assert spec["sparkConf"]["spark.hadoop.fs.s3a.path.style.access"] == "true"
        if doc["kind"] == "SeldonDeployment":
            env = doc["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]["env"]
            assert {"name": "AWS_ENDPOINT_URL", "value": "http://minio.minio:9000"} in env


def test_credentials_come_only_from_an_optional_secret():
    for name, doc in checked_in_documents():
        for _, pod in pod_specs(doc):
            for container in pod["containers"]:
                for env in container.get("env", []):
                    if env["name"] in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
                        assert "value" not in env, name
                        assert env["valueFrom"]["secretKeyRef"]["optional"] is True, name
    for path in list((DEPLOY / "k8s").glob("*.yaml")) + [DEPLOY / "seldon" / "recommender.yaml"]:
        text = path.read_text()
        assert "fs.s3a.access.key" not in text and "fs.s3a.secret.key" not in text and "kind: Secret" not in text


def test_readme_quotes_the_values_file():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("**Kubernetes"):]
    section = section[:section.index("\n## ")]
    assert "deploy/values.yaml" in section
    for name in (S.namespace, S.service_accounts.spark, S.service_accounts.pipeline, S.storage.credentials_secret,
                 S.seldon.deployment):
        assert f"`{name}`" in section, name


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(namespce="x"), "unknown"),
    (lambda r: r["storage"].update(snapshot="s3://x/y"), "unknown key"),
    (lambda r: r["storage"].update(lake="/local/lake"), "not a URI"),
    (lambda r: r.update(namespace="Recsys_NS"), "DNS-1123"),
    (lambda r: r["images"].update(batch="ghcr.io/example/recsys-batch"), "no tag"),
    (lambda r: r["storage"].update(endpoint="minio:9000"), "http"),
    (lambda r: r["schedules"].update(nightly="nightly"), "cron"),
])
def test_a_bad_values_file_is_refused_with_the_key(change, message):
    raw = S.as_dict()
    change(raw)
    with pytest.raises(settings.SettingsError, match=message):
        settings.from_dict(raw)
