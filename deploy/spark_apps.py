"""SparkApplication manifests for every job, from one source: the step table below.

    python -m deploy.spark_apps --out deploy/k8s          (or: make manifests)

Each step names its job module and the flags it gets; tests parse those flags with the job's own parser, so a
manifest cannot drift from the code. The Kubeflow pipeline (deploy/kubeflow/pipeline.py) renders the same
manifests at run time with the run's values; the checked-in YAML under deploy/k8s/ uses DEFAULT_VALUES and is
what `kubectl apply -f` takes for a one-off run.

Conventions (PITFALLS, spark-operator): the image and sparkVersion are pinned together; every jar (Delta) is in
the image, nothing is resolved at run time (`deps.packages` is ignored by the operator); `restartPolicy:
OnFailure` with bounded retries; `timeToLiveSeconds` cleans finished applications; names stay under 63 characters
and are unique per run.
"""
from __future__ import annotations

import argparse
import copy
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from models import als_blas

SPARK_VERSION = "4.1.4"  # = the pinned pyspark; the image is built from the same requirements/batch.lock
IMAGE_TAG = f"0.1.0-spark{SPARK_VERSION}"
DEFAULT_IMAGE = f"ghcr.io/example/recsys-batch:{IMAGE_TAG}"
CODE_DIR = "/opt/recsys"  # where Dockerfile.batch puts the project
API_VERSION = "sparkoperator.k8s.io/v1beta2"
MAX_NAME = 63
TTL_SECONDS = 3 * 24 * 3600

DEFAULT_VALUES = {
    "lake": "s3a://recsys-lake/lake",
    "input": "s3a://recsys-lake/incoming/",
    "format": "movielens",
    "mode": "implicit",
    "rank": "64",
    "reg_param": "0.1",
    "alpha": "10.0",
    "max_iter": "15",
    "n": "100",
    "model_version": "manual",
    "snapshot_root": "/snapshots",
}


@dataclass(frozen=True)
class Step:
    name: str
    job: str  # module under jobs/
    args: tuple[str, ...]  # flags with {placeholders} from the values
    executors: int = 2
    executor_memory: str = "4g"
    driver_memory: str = "2g"
    needs_snapshot_volume: bool = False


STEPS: tuple[Step, ...] = (
    Step("ingest", "ingest", ("--lake", "{lake}", "--input", "{input}", "--format", "{format}")),
    # the data-quality gates (jobs.validate) between the steps, as jobs.nightly runs them; a failed gate exits 1
    Step("validate-raw", "validate", ("--lake", "{lake}", "--stage", "raw", "--ingest-run-id", "latest"),
         executors=1),
    Step("validate-silver", "validate", ("--lake", "{lake}", "--stage", "silver", "--ingest-run-id", "latest",
                                         "--format", "{format}"), executors=1),
    Step("build-training", "build_training", ("--lake", "{lake}", "--mode", "{mode}")),
    Step("validate-training", "validate", ("--lake", "{lake}", "--stage", "training", "--format", "{format}"),
         executors=1),
    Step("train", "train", ("--lake", "{lake}", "--rank", "{rank}", "--reg-param", "{reg_param}", "--alpha", "{alpha}",
                            "--max-iter", "{max_iter}", "--model-version", "{model_version}"), executor_memory="6g"),
    Step("score", "score", ("--lake", "{lake}", "--model-version", "{model_version}", "--n", "{n}"), executor_memory="6g"),
    Step("validate-recommendations", "validate", ("--lake", "{lake}", "--stage", "recommendations",
                                                  "--model-version", "{model_version}", "--n", "{n}"), executors=1),
    Step("publish", "publish", ("--lake", "{lake}", "--model-version", "{model_version}",
                                "--snapshot-root", "{snapshot_root}"), executors=1, needs_snapshot_volume=True),
    Step("validate-snapshot", "validate", ("--lake", "{lake}", "--stage", "snapshot", "--model-version",
                                           "{model_version}", "--snapshot-root", "{snapshot_root}"),
         executors=1, needs_snapshot_volume=True),
)
NIGHTLY = Step("nightly", "nightly", ("--lake", "{lake}", "--input", "{input}", "--format", "{format}",
                                      "--mode", "{mode}", "--rank", "{rank}", "--reg-param", "{reg_param}",
                                      "--alpha", "{alpha}", "--max-iter", "{max_iter}", "--n", "{n}",
                                      "--snapshot-root", "{snapshot_root}"),
               executor_memory="6g", needs_snapshot_volume=True)
STEP_BY_NAME = {s.name: s for s in STEPS + (NIGHTLY,)}

# Spark ALS's dspr/daxpy/dppsv library, built into the image (deploy/Dockerfile.batch, models/als_blas.py), as
# netlib's BLAS and LAPACK. Drivers are started by spark-submit before any Python runs, so the options have to be
# here, not only in the session factory.
ALS_BLAS_JAVA_OPTION = als_blas.java_option(PurePosixPath(CODE_DIR) / als_blas.LIBRARY_IN_REPO)
SPARK_CONF = {
    "spark.driver.extraJavaOptions": ALS_BLAS_JAVA_OPTION,
    "spark.executor.extraJavaOptions": ALS_BLAS_JAVA_OPTION,
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.adaptive.enabled": "true",
    "spark.kubernetes.submission.waitAppCompletion": "true",
}
SNAPSHOT_VOLUME = "snapshots"
SNAPSHOT_CLAIM = "recsys-snapshots"


def app_name(step: str, run_id: str) -> str:
    """A DNS-1123 name under 63 characters, unique per run: recsys-<step>-<run id>."""
    name = re.sub(r"[^a-z0-9-]", "-", f"recsys-{step}-{run_id}".lower()).strip("-")
    if len(name) > MAX_NAME:
        raise ValueError(f"SparkApplication name {name!r} is {len(name)} characters; the limit is {MAX_NAME}")
    return name


def render_args(step: Step, values: dict[str, str]) -> list[str]:
    merged = {**DEFAULT_VALUES, **{k: str(v) for k, v in values.items()}}
    try:
        return [a.format(**merged) for a in step.args]
    except KeyError as exc:
        raise KeyError(f"step {step.name!r} needs a value for {exc.args[0]!r}") from None


def spark_application_spec(step: Step, values: dict[str, str], *, image: str = DEFAULT_IMAGE,
                           service_account: str = "spark") -> dict:
    spec = {
        "type": "Python",
        "pythonVersion": "3",
        "mode": "cluster",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "mainApplicationFile": f"local://{CODE_DIR}/jobs/{step.job}.py",
        "arguments": render_args(step, values),
        "sparkVersion": SPARK_VERSION,
        "sparkConf": dict(SPARK_CONF),
        "restartPolicy": {
            "type": "OnFailure",
            "onFailureRetries": 2,
            "onFailureRetryInterval": 60,
            "onSubmissionFailureRetries": 3,
            "onSubmissionFailureRetryInterval": 30,
        },
        "timeToLiveSeconds": TTL_SECONDS,
        "driver": {
            "cores": 1,
            "coreLimit": "1200m",
            "memory": step.driver_memory,
            "serviceAccount": service_account,
            "labels": {"app.kubernetes.io/part-of": "recsys", "recsys/step": step.name},
        },
        "executor": {
            "instances": step.executors,
            "cores": 2,
            "memory": step.executor_memory,
            "labels": {"app.kubernetes.io/part-of": "recsys", "recsys/step": step.name},
        },
    }
    if step.needs_snapshot_volume:
        spec["volumes"] = [{"name": SNAPSHOT_VOLUME, "persistentVolumeClaim": {"claimName": SNAPSHOT_CLAIM}}]
        mount = [{"name": SNAPSHOT_VOLUME, "mountPath": values.get("snapshot_root", DEFAULT_VALUES["snapshot_root"])}]
        spec["driver"]["volumeMounts"] = copy.deepcopy(mount)  # the driver writes the manifest and LATEST,
        spec["executor"]["volumeMounts"] = copy.deepcopy(mount)  # executors the parquet files: a ReadWriteMany claim
    return spec


def spark_application(step: Step, values: dict[str, str], *, run_id: str, namespace: str = "recsys",
                      image: str = DEFAULT_IMAGE) -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": "SparkApplication",
        "metadata": {"name": app_name(step.name, run_id), "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "recsys", "recsys/run-id": run_id}},
        "spec": spark_application_spec(step, values, image=image),
    }


def scheduled_nightly(*, schedule: str = "0 2 * * *", namespace: str = "recsys", image: str = DEFAULT_IMAGE,
                      values: dict[str, str] | None = None) -> dict:
    """ScheduledSparkApplication running jobs/nightly.py every night (Forbid: never two runs at once)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ScheduledSparkApplication",
        "metadata": {"name": "recsys-nightly", "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "recsys"}},
        "spec": {
            "schedule": schedule,
            "timeZone": "UTC",
            "concurrencyPolicy": "Forbid",
            "successfulRunHistoryLimit": 3,
            "failedRunHistoryLimit": 5,
            "template": spark_application_spec(NIGHTLY, values or {}, image=image),
        },
    }


def render_all(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for step in STEPS:
        doc = spark_application(step, {}, run_id="manual")
        path = out_dir / f"sparkapp-{step.name}.yaml"
        path.write_text(HEADER + yaml.safe_dump(doc, sort_keys=False))
        written.append(path)
    path = out_dir / "scheduled-nightly.yaml"
    path.write_text(HEADER + yaml.safe_dump(scheduled_nightly(), sort_keys=False))
    written.append(path)
    return written


HEADER = "# Generated by `python -m deploy.spark_apps --out deploy/k8s` (make manifests); edit deploy/spark_apps.py instead.\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="deploy/k8s")
    args = parser.parse_args(argv)
    for path in render_all(Path(args.out)):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
