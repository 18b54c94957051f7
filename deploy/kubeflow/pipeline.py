"""The nightly Kubeflow pipeline (kfp 2.x): one SparkApplication per step and gate, then a roll of the lookup service.

    python -m deploy.kubeflow.pipeline --output deploy/kubeflow/nightly_pipeline.yaml     (or: make pipeline)

The pipeline only wires steps. Each step runs deploy.kubeflow.launcher in the batch image: it renders the step's
SparkApplication from deploy/spark_apps.py (the same source as the checked-in manifests), creates it, waits for
COMPLETED or turns FAILED / stuck / timed-out into a failed step with the driver log. KFP v2 has no ResourceOp
(kubeflow/pipelines#8570), hence this small launcher. The model version is chosen once, up front, and handed to
train, score and publish, so a retried step works on the same version. Side-effecting steps are never cached.
The data-quality gates (jobs.validate) run as their own steps after ingest, build-training, score and publish;
a failed gate fails the run before the next step, and the lookup service is only rolled after every gate passed.

Names come from deploy/values.yaml: the parameters' defaults (lake, input, snapshots, namespace, image, the
SeldonDeployment) and, compiled in as a constant, the rest (service accounts, credentials Secret, S3 endpoint),
so a run renders its SparkApplications with the names it was compiled with. The ``image`` parameter is the
image of every task and of every SparkApplication the steps create. Run it as ``service_accounts.pipeline``
(deploy/k8s/rbac.yaml grants that account what the launcher does).
"""

import argparse
import json
from pathlib import Path

from kfp import compiler, dsl

from deploy.spark_apps import DEFAULT_IMAGE, DEFAULT_VALUES, SETTINGS

SPARK_STEPS = ("ingest", "validate-raw", "validate-silver", "build-training", "validate-training", "train", "score",
               "validate-recommendations", "publish", "validate-snapshot")
STEP_TIMEOUT_S = 4 * 3600


@dsl.component(base_image=DEFAULT_IMAGE)
def choose_model_version(run_id: str) -> str:
    """A new model version: UTC time plus the start of the run id, e.g. 20261123T020000Z-1a2b3c4d."""
    import datetime

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{run_id.replace('-', '')[:8]}"


@dsl.component(base_image=DEFAULT_IMAGE)
def run_spark_step(step: str, run_id: str, namespace: str, image: str, lake: str, input_path: str,
                   input_format: str, mode: str, rank: int, reg_param: float, alpha: float, max_iter: int, n: int,
                   model_version: str, snapshot_root: str, timeout_s: int, settings_json: str) -> str:
    """Render the step's SparkApplication, run it to the end; returns the model version for the next step."""
    import json
    import uuid

    from deploy import settings, spark_apps
    from deploy.kubeflow.launcher import run_spark_application

    values = {"lake": lake, "input": input_path, "format": input_format, "mode": mode, "rank": rank,
              "reg_param": reg_param, "alpha": alpha, "max_iter": max_iter, "n": n,
              "model_version": model_version, "snapshot_root": snapshot_root}
    # unique per attempt: re-creating an existing name would silently do nothing (spark-operator#187)
    attempt = f"{run_id.replace('-', '')[:8]}-{uuid.uuid4().hex[:5]}"
    manifest = spark_apps.spark_application(spark_apps.STEP_BY_NAME[step], values, run_id=attempt,
                                            namespace=namespace, image=image,
                                            settings=settings.from_dict(json.loads(settings_json)))
    run_spark_application(manifest, timeout_s=timeout_s)
    return model_version


@dsl.component(base_image=DEFAULT_IMAGE)
def roll_lookup_service(deployment: str, namespace: str, model_version: str) -> str:
    """Roll the SeldonDeployment onto the newly published snapshot and wait until it is Available."""
    from deploy.kubeflow.launcher import roll_seldon_deployment

    roll_seldon_deployment(deployment, namespace, model_version)
    return model_version


@dsl.pipeline(name="recsys-nightly", description="ingest -> validate -> build training -> validate -> train -> score -> validate -> "
                                                   "publish -> validate -> roll the lookup service")
def nightly_pipeline(
    lake: str = DEFAULT_VALUES["lake"],
    input_path: str = DEFAULT_VALUES["input"],
    input_format: str = DEFAULT_VALUES["format"],
    mode: str = DEFAULT_VALUES["mode"],
    rank: int = int(DEFAULT_VALUES["rank"]),
    reg_param: float = float(DEFAULT_VALUES["reg_param"]),
    alpha: float = float(DEFAULT_VALUES["alpha"]),
    max_iter: int = int(DEFAULT_VALUES["max_iter"]),
    n: int = int(DEFAULT_VALUES["n"]),
    snapshot_root: str = DEFAULT_VALUES["snapshot_root"],
    namespace: str = SETTINGS.namespace,
    image: str = DEFAULT_IMAGE,
    seldon_deployment: str = SETTINGS.seldon.deployment,
    step_timeout_s: int = STEP_TIMEOUT_S,
):
    version = choose_model_version(run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
    version.set_caching_options(False).set_display_name("choose model version").set_container_image(image)
    previous = version
    for step in SPARK_STEPS:
        task = run_spark_step(
            step=step, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, namespace=namespace, image=image, lake=lake,
            input_path=input_path, input_format=input_format, mode=mode, rank=rank, reg_param=reg_param,
            alpha=alpha, max_iter=max_iter, n=n, model_version=version.output, snapshot_root=snapshot_root,
            timeout_s=step_timeout_s, settings_json=json.dumps(SETTINGS.as_dict(), sort_keys=True),
        )
        task.set_container_image(image).set_display_name(step).set_caching_options(False).set_retry(num_retries=1, backoff_duration="120s")
        task.after(previous)
        previous = task
    roll = roll_lookup_service(deployment=seldon_deployment, namespace=namespace, model_version=version.output)
    roll.set_display_name("roll lookup service").set_caching_options(False).set_container_image(image)
    roll.after(previous)


def compile_pipeline(output) -> Path:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(nightly_pipeline, package_path=str(output))
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="deploy/kubeflow/nightly_pipeline.yaml")
    args = parser.parse_args(argv)
    print(compile_pipeline(args.output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
