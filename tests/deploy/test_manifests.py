"""SparkApplication manifests and the Kubeflow pipeline: they parse, match the CRD schemas, and their arguments
are accepted by each job's real parser; the compiled pipeline has the right parameters and step order."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import jsonschema
import pyspark
import pytest
import yaml

from deploy import manifests, spark_apps
from deploy.kubeflow import launcher
from crd_schemas import SCHEDULED_SPARK_APPLICATION, SPARK_APPLICATION

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
DEPLOY = REPO / "deploy"


def test_checked_in_manifests_are_what_the_generator_writes(tmp_path):
    written = manifests.render_all(tmp_path)
    relative = sorted(str(p.relative_to(tmp_path)) for p in written)
    checked_in = sorted(str(p.relative_to(DEPLOY)) for d in ("k8s", "seldon") for p in (DEPLOY / d).glob("*.yaml"))
    assert relative == checked_in
    for path in written:
        name = path.relative_to(tmp_path)
        assert (DEPLOY / name).read_text() == path.read_text(), f"{name} is stale: run `make manifests`"


@pytest.mark.parametrize("path", sorted(K8S.glob("sparkapp-*.yaml")), ids=lambda p: p.name)
def test_spark_applications_match_the_crd_schema(path):
    doc = yaml.safe_load(path.read_text())
    jsonschema.validate(doc, SPARK_APPLICATION)
    spec = doc["spec"]
    assert spec["restartPolicy"]["type"] == "OnFailure" and spec["restartPolicy"]["onFailureRetries"] >= 1
    assert spec["timeToLiveSeconds"] > 0
    assert "deps" not in spec  # every jar is in the image (the operator ignores deps.packages)
    for role, container in (("driver", "spark-kubernetes-driver"), ("executor", "spark-kubernetes-executor")):
        # the operator names the template's container so; Spark takes the one of that name as its own
        assert [c["name"] for c in spec[role]["template"]["spec"]["containers"]] == [container]


def test_scheduled_nightly_matches_the_crd_schema():
    doc = yaml.safe_load((K8S / "scheduled-nightly.yaml").read_text())
    jsonschema.validate(doc, SCHEDULED_SPARK_APPLICATION)
    assert doc["spec"]["concurrencyPolicy"] == "Forbid"


def test_a_misspelt_field_is_caught_by_the_schema():
    doc = spark_apps.spark_application(spark_apps.STEPS[0], {}, run_id="x")
    doc["spec"]["restartpolicy"] = doc["spec"].pop("restartPolicy")
    with pytest.raises(jsonschema.ValidationError, match="restartpolicy"):
        jsonschema.validate(doc, SPARK_APPLICATION)


def test_wait_app_completion_is_never_forced_to_true():
    texts = [p.read_text() for p in K8S.glob("*.yaml")]
    texts.append((DEPLOY / "kubeflow" / "nightly_pipeline.yaml").read_text())
    texts += [p.read_text() for p in DEPLOY.rglob("*.py")]
    for text in texts:  # the operator submits with it false; nothing here turns it on
        assert not re.search(r"waitAppCompletion['\"]?\s*[:=,]\s*['\"]?true", text, re.I)
    for step in spark_apps.STEPS + (spark_apps.NIGHTLY,):
        conf = spark_apps.spark_application_spec(step, {})["sparkConf"]
        assert conf.get("spark.kubernetes.submission.waitAppCompletion", "false") != "true"


def test_every_image_of_a_rendered_application_is_the_one_asked_for():
    image = "registry.test/recsys-batch:9.9.9-spark" + spark_apps.SPARK_VERSION
    for step in spark_apps.STEPS:
        doc = spark_apps.spark_application(step, {}, run_id="x", image=image)
        assert _images(doc) == {image}


def _images(node) -> set[str]:
    if isinstance(node, dict):
        found = {node["image"]} if isinstance(node.get("image"), str) else set()
        return found.union(*(_images(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_images(v) for v in node))
    return set()


def test_image_and_spark_version_are_pinned_together():
    assert spark_apps.SPARK_VERSION == pyspark.__version__
    for step in spark_apps.STEPS + (spark_apps.NIGHTLY,):
        spec = spark_apps.spark_application_spec(step, {})
        assert spec["sparkVersion"] in spec["image"].rsplit(":", 1)[1]


def test_drivers_and_executors_load_the_als_blas_library_the_image_builds():
    from models import als_blas

    assert als_blas.DEFAULT_LIBRARY == REPO / als_blas.LIBRARY_IN_REPO
    in_image = Path(spark_apps.CODE_DIR) / als_blas.LIBRARY_IN_REPO
    dockerfile = (REPO / "deploy" / "Dockerfile.batch").read_text()
    assert f"COPY --from=als-blas /out/{als_blas.LIBRARY_NAME} {als_blas.LIBRARY_IN_REPO}" in dockerfile
    assert f"{als_blas.LIBRARY_ENV}={in_image}" in dockerfile
    for step in spark_apps.STEPS + (spark_apps.NIGHTLY,):
        conf = spark_apps.spark_application_spec(step, {})["sparkConf"]
        for key in als_blas.JAVA_OPTION_KEYS:
            for option in als_blas.java_option(in_image).split():
                assert option in conf[key].split()


@pytest.mark.parametrize("step", spark_apps.STEPS + (spark_apps.NIGHTLY,), ids=lambda s: s.name)
def test_step_arguments_are_accepted_by_the_jobs_own_parser(step):
    module = importlib.import_module(f"jobs.{step.job}")
    args = spark_apps.render_args(step, {})
    parsed = module.build_parser().parse_args(args)  # SystemExit on an unknown or missing flag
    assert parsed.lake == spark_apps.DEFAULT_VALUES["lake"]
    assert (REPO / "jobs" / f"{step.job}.py").is_file()


def test_names_stay_under_63_characters_and_long_ones_are_refused():
    assert spark_apps.app_name("build-training", "0123abcd-ef012") == "recsys-build-training-0123abcd-ef012"
    with pytest.raises(ValueError, match="63"):
        spark_apps.app_name("build-training", "x" * 50)


@pytest.mark.parametrize("state, in_state, total, expected", [
    ("COMPLETED", 0, 10, "succeeded"),
    ("FAILED", 0, 10, "failed"),              # also when the driver pod never existed (spark-operator#2302)
    ("SUBMISSION_FAILED", 0, 10, "failed"),
    ("RUNNING", 5000, 5000, "wait"),          # long running is fine until the overall timeout
    ("RUNNING", 20000, 20000, "failed"),      # overall timeout
    ("PENDING_RERUN", 100, 200, "wait"),
    ("PENDING_RERUN", 1000, 1200, "failed"),  # stuck (spark-operator#1191)
    ("", 700, 700, "failed"),                 # the operator never picked it up
    ("SUBMITTED", 60, 60, "wait"),
])
def test_launcher_turns_every_bad_end_into_a_failure(state, in_state, total, expected):
    decision = launcher.decide(state, seconds_in_state=in_state, seconds_total=total, timeout_s=14400)
    assert decision.action == expected
    if expected == "failed":
        assert decision.reason


def test_pipeline_compiles_with_parameters_and_step_order(tmp_path):
    from deploy.kubeflow.pipeline import SPARK_STEPS, compile_pipeline

    doc = yaml.safe_load(compile_pipeline(tmp_path / "p.yaml").read_text())
    params = doc["root"]["inputDefinitions"]["parameters"]
    for name in ("lake", "input_path", "input_format", "mode", "rank", "reg_param", "alpha", "max_iter", "n",
                 "snapshot_root", "namespace", "image", "seldon_deployment", "step_timeout_s"):
        assert name in params
    tasks = doc["root"]["dag"]["tasks"]
    steps = {t["inputs"]["parameters"]["step"]["runtimeValue"]["constant"]: name
             for name, t in tasks.items() if "step" in t.get("inputs", {}).get("parameters", {})}
    assert list(steps) == list(SPARK_STEPS) or sorted(steps) == sorted(SPARK_STEPS)
    order = ["choose-model-version"] + [steps[s] for s in SPARK_STEPS] + ["roll-lookup-service"]
    for before, after in zip(order, order[1:]):
        assert before in tasks[after]["dependentTasks"], f"{after} must run after {before}"
    for name in order:
        assert tasks[name].get("cachingOptions", {}).get("enableCache", False) is False
    for s in SPARK_STEPS:  # every Spark step gets the model version chosen up front
        mv = tasks[steps[s]]["inputs"]["parameters"]["model_version"]["taskOutputParameter"]
        assert mv["producerTask"] == "choose-model-version"


def test_the_pipelines_image_parameter_reaches_every_component(tmp_path):
    from deploy.kubeflow.pipeline import compile_pipeline

    doc = yaml.safe_load(compile_pipeline(tmp_path / "p.yaml").read_text())
    tasks = doc["root"]["dag"]["tasks"]
    executors = doc["deploymentSpec"]["executors"]
    assert len(tasks) == 12
    for name, task in tasks.items():
        parameters = task["inputs"]["parameters"]
        channel = next(k for k, v in parameters.items() if v == {"componentInputParameter": "image"} and
                       k.startswith("pipelinechannel--"))
        executor = doc["components"][task["componentRef"]["name"]]["executorLabel"]
        # the task's container runs the image parameter, not the compile-time base image
        assert executors[executor]["container"]["image"] == f"{{{{$.inputs.parameters['{channel}']}}}}", name
        if "step" in parameters:  # and every SparkApplication it creates is rendered with the same parameter
            assert parameters["image"] == {"componentInputParameter": "image"}, name


def test_checked_in_pipeline_is_up_to_date(tmp_path):
    from deploy.kubeflow.pipeline import compile_pipeline

    fresh = yaml.safe_load(compile_pipeline(tmp_path / "p.yaml").read_text())
    committed = yaml.safe_load((REPO / "deploy" / "kubeflow" / "nightly_pipeline.yaml").read_text())
    fresh.pop("sdkVersion", None), committed.pop("sdkVersion", None)
    assert fresh == committed, "deploy/kubeflow/nightly_pipeline.yaml is stale: run `make pipeline`"
