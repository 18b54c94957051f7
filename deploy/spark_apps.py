"""SparkApplication manifests for every job, from the step table below and the names in deploy/values.yaml.

    python -m deploy.manifests          (or: make manifests; writes these and the other manifests)

Each step names its job module and the flags it gets; tests parse those flags with the job's own parser, so a
manifest cannot drift from the code. The Kubeflow pipeline (deploy/kubeflow/pipeline.py) renders the same
manifests at run time with the run's values; the checked-in YAML under deploy/k8s/ uses DEFAULT_VALUES and is
what `kubectl apply -f` takes for a one-off run. Pods are hardened as deploy/pods.py states, through Spark pod
templates; lake and snapshots are on object storage, so no volume is shared between pods.

Conventions (PITFALLS, spark-operator): the image and sparkVersion are pinned together; every jar (Delta) is in
the image, nothing is resolved at run time (`deps.packages` is ignored by the operator); `restartPolicy:
OnFailure` with bounded retries; `timeToLiveSeconds` cleans finished applications; names stay under 63 characters
and are unique per run.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

import yaml

from deploy import pods
from deploy import settings as settings_module
from deploy.settings import Settings
from models import als_blas

SPARK_VERSION = "4.1.4"  # = the pinned pyspark; the image is built from the same requirements/batch.lock
SETTINGS = settings_module.load()
DEFAULT_IMAGE = SETTINGS.images.batch
CODE_DIR = "/opt/recsys"  # where Dockerfile.batch puts the project
SPARK_UID = 185  # the image's USER
API_VERSION = "sparkoperator.k8s.io/v1beta2"
MAX_NAME = 63
TTL_SECONDS = 3 * 24 * 3600

# Per-run values of the job flags; the storage locations come from deploy/values.yaml.
DEFAULT_VALUES = {
    "lake": SETTINGS.storage.lake,
    "input": SETTINGS.storage.input,
    "format": "movielens",
    "mode": "implicit",
    "rank": "64",
    "reg_param": "0.1",
    "alpha": "10.0",
    "max_iter": "15",
    "n": "100",
    "model_version": "manual",
    "snapshot_root": SETTINGS.storage.snapshots,
}


@dataclass(frozen=True)
class Step:
    name: str
    job: str  # module under jobs/
    args: tuple[str, ...]  # flags with {placeholders} from the values
    executors: int = 2
    executor_memory: str = "4g"
    driver_memory: str = "2g"


STEPS: tuple[Step, ...] = (
    # incremental: files already ingested (same path, size, modification time) are skipped, as the nightly does
    Step("ingest", "ingest", ("--lake", "{lake}", "--input", "{input}", "--format", "{format}", "--incremental")),
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
                                "--snapshot-root", "{snapshot_root}"), executors=1),
    Step("validate-snapshot", "validate", ("--lake", "{lake}", "--stage", "snapshot", "--model-version",
                                           "{model_version}", "--snapshot-root", "{snapshot_root}"),
         executors=1),
)
NIGHTLY = Step("nightly", "nightly", ("--lake", "{lake}", "--input", "{input}", "--format", "{format}",
                                      "--mode", "{mode}", "--rank", "{rank}", "--reg-param", "{reg_param}",
                                      "--alpha", "{alpha}", "--max-iter", "{max_iter}", "--n", "{n}",
                                      "--snapshot-root", "{snapshot_root}"),
               executor_memory="6g")
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
}
# The numba kernels compiled into the image (deploy/Dockerfile.batch: NUMBA_CACHE_DIR) sit on the read-only root;
# numba refuses a cache folder it cannot write, so an init container copies them into an emptyDir first.
IMAGE_NUMBA_CACHE = "/opt/numba-cache"
NUMBA_CACHE = "/var/cache/numba"
CONTAINER_NAMES = {"driver": "spark-kubernetes-driver", "executor": "spark-kubernetes-executor"}


def app_name(step: str, run_id: str) -> str:
    """A DNS-1123 name under 63 characters, unique per run: recsys-<step>-<run id>."""
    name = re.sub(r"[^a-z0-9-]", "-", f"recsys-{step}-{run_id}".lower()).strip("-")
    if len(name) > MAX_NAME:
        raise ValueError(f"SparkApplication name {name!r} is {len(name)} characters; the limit is {MAX_NAME}")
    return name


def default_values(settings: Settings) -> dict[str, str]:
    """DEFAULT_VALUES with the lake, input and snapshot locations of ``settings``."""
    storage = settings.storage
    return {**DEFAULT_VALUES, "lake": storage.lake, "input": storage.input, "snapshot_root": storage.snapshots}


def render_args(step: Step, values: dict[str, str], settings: Settings | None = None) -> list[str]:
    """The step's flags: ``values`` over the defaults (storage locations from ``settings``, default: the file's)."""
    merged = {**default_values(settings or SETTINGS), **{k: str(v) for k, v in values.items()}}
    try:
        return [a.format(**merged) for a in step.args]
    except KeyError as exc:
        raise KeyError(f"step {step.name!r} needs a value for {exc.args[0]!r}") from None


def spark_conf(settings: Settings) -> dict[str, str]:
    """Spark settings: Delta, the ALS BLAS options, and S3A's (endpoint and path-style only for a custom endpoint).

    spark.kubernetes.submission.waitAppCompletion is left to the operator (it submits without waiting)."""
    conf = dict(SPARK_CONF)
    storage = settings.storage
    if storage.endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = storage.endpoint
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(storage.endpoint.startswith("https://")).lower()
    if storage.region:
        conf["spark.hadoop.fs.s3a.endpoint.region"] = storage.region
    if storage.credentials_provider:
        conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = storage.credentials_provider
    return conf


def pod_template(role: str, settings: Settings, image: str) -> dict:
    """The driver's or executors' pod template (Spark's pod template, passed on by the operator).

    Everything the pod needs is here rather than in the operator's webhook-applied fields (securityContext,
    env, volumes): the operator does not send pods that have a template through its webhook. Only the driver
    gets a service account token (it creates the executors)."""
    env = pods.credentials_env(settings) + pods.endpoint_env(settings) + [{"name": "NUMBA_CACHE_DIR",
                                                                         "value": NUMBA_CACHE}]
    mounts = [{"name": "tmp", "mountPath": pods.TMP_DIR}, {"name": "numba-cache", "mountPath": NUMBA_CACHE}]
    seed = {
        "name": "seed-numba-cache",
        "image": image,
        "command": ["cp", "-a", f"{IMAGE_NUMBA_CACHE}/.", f"{NUMBA_CACHE}/"],
        "securityContext": pods.container_security_context(SPARK_UID),
        "volumeMounts": [{"name": "numba-cache", "mountPath": NUMBA_CACHE}],
    }
    return {"spec": {
        "automountServiceAccountToken": role == "driver",
        "securityContext": pods.pod_security_context(SPARK_UID),
        "initContainers": [seed],
        "containers": [{"name": CONTAINER_NAMES[role], "env": env, "volumeMounts": mounts,
                        "securityContext": pods.container_security_context(SPARK_UID)}],
        "volumes": [pods.empty_dir("tmp"), pods.empty_dir("numba-cache", "1Gi")],
    }}


def spark_application_spec(step: Step, values: dict[str, str], *, image: str | None = None,
                           settings: Settings | None = None) -> dict:
    """The SparkApplication spec of ``step`` with the run's ``values`` (flags) and the deployment's names."""
    settings = settings or SETTINGS
    image = image or settings.images.batch
    labels = {"app.kubernetes.io/part-of": "recsys", "recsys/step": step.name}
    account = settings.service_accounts.spark
    return {
        "type": "Python",
        "pythonVersion": "3",
        "mode": "cluster",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "mainApplicationFile": f"local://{CODE_DIR}/jobs/{step.job}.py",
        "arguments": render_args(step, values, settings),
        "sparkVersion": SPARK_VERSION,
        "sparkConf": spark_conf(settings),
        "restartPolicy": {
            "type": "OnFailure",
            "onFailureRetries": 2,
            "onFailureRetryInterval": 60,
            "onSubmissionFailureRetries": 3,
            "onSubmissionFailureRetryInterval": 30,
        },
        "timeToLiveSeconds": TTL_SECONDS,
        "driver": {"cores": 1, "coreLimit": "1200m", "memory": step.driver_memory, "serviceAccount": account,
                   "labels": dict(labels), "template": pod_template("driver", settings, image)},
        "executor": {"instances": step.executors, "cores": 2, "memory": step.executor_memory,
                     "serviceAccount": account, "labels": dict(labels),
                     "template": pod_template("executor", settings, image)},
    }


def spark_application(step: Step, values: dict[str, str], *, run_id: str, namespace: str | None = None,
                      image: str | None = None, settings: Settings | None = None) -> dict:
    """A SparkApplication named recsys-<step>-<run id> in ``namespace`` (default: the values file's)."""
    settings = settings or SETTINGS
    return {
        "apiVersion": API_VERSION,
        "kind": "SparkApplication",
        "metadata": {"name": app_name(step.name, run_id), "namespace": namespace or settings.namespace,
                     "labels": {"app.kubernetes.io/part-of": "recsys", "recsys/run-id": run_id}},
        "spec": spark_application_spec(step, values, image=image, settings=settings),
    }


def scheduled_nightly(settings: Settings | None = None, values: dict[str, str] | None = None) -> dict:
    """ScheduledSparkApplication running jobs/nightly.py on the values file's schedule (Forbid: never two at once)."""
    settings = settings or SETTINGS
    return {
        "apiVersion": API_VERSION,
        "kind": "ScheduledSparkApplication",
        "metadata": {"name": "recsys-nightly", "namespace": settings.namespace,
                     "labels": {"app.kubernetes.io/part-of": "recsys"}},
        "spec": {
            "schedule": settings.schedules.nightly,
            "timeZone": "UTC",
            "concurrencyPolicy": "Forbid",
            "successfulRunHistoryLimit": 3,
            "failedRunHistoryLimit": 5,
            "template": spark_application_spec(NIGHTLY, values or {}, settings=settings),
        },
    }


def documents(settings: Settings | None = None) -> dict[str, dict]:
    """File name -> document for deploy/k8s/: one SparkApplication per step (run id "manual") and the nightly."""
    settings = settings or SETTINGS
    docs = {f"sparkapp-{step.name}.yaml": spark_application(step, {}, run_id="manual", settings=settings)
            for step in STEPS}
    docs["scheduled-nightly.yaml"] = scheduled_nightly(settings)
    return docs
