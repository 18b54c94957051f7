"""Object storage for the lake: which URIs the product reads and writes, and what Spark needs for ``s3a://``.

Lake roots, inputs and snapshot roots are local paths, ``file:`` URIs or ``s3a://bucket/key`` (``s3://`` means the
same bucket and key; Spark reads it through the same connector). Any other scheme is refused by ``check_uri``
with the list of supported ones: nothing else is tested end to end.

The switch: Spark gets the S3A connector when a job's lake, input or snapshot root is on object storage
(``uses_object_store``), or when ``--conf spark.recsys.objectStore=s3a`` (or $RECSYS_OBJECT_STORE=s3a) asks for it.
Started by this process, the JVM then fetches (Ivy, cached under ~/.ivy2*) hadoop-aws of the Hadoop version that
pyspark ships and Spark's cloud committers (``s3a_packages``); under spark-submit or in the batch image they must
be on the classpath already, and ``require_s3a`` says how to put them there when they are not. ``s3a_settings``
holds what S3A needs beside the jars:

* the magic committer for every file Spark writes outside Delta (models, snapshots): tasks write straight to
  their final keys as pending multipart uploads, completed at job commit, instead of renaming (copying) a
  ``_temporary`` folder. Delta's own writes never rename and do not use it.
* an endpoint, path-style addressing and SSL from $AWS_ENDPOINT_URL when set (an S3-compatible store such as
  MinIO or a test emulator), and credentials from $AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY /
  $AWS_SESSION_TOKEN when set, passed as Hadoop settings so that executors on other machines get them too
  (Spark redacts them in its UI and logs). Without them S3A's default chain applies (an instance or pod role).
  Any ``spark.hadoop.fs.s3a.*`` the user gives wins over these.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from lake import jvm

SWITCH_CONF = "spark.recsys.objectStore"
SWITCH_ENV = "RECSYS_OBJECT_STORE"
S3A = "s3a"
OBJECT_STORE_SCHEMES = ("s3a", "s3")
SUPPORTED_SCHEMES = ("", "file") + OBJECT_STORE_SCHEMES
S3A_CLASS = "org.apache.hadoop.fs.s3a.S3AFileSystem"
COMMIT_PROTOCOL_CLASS = "org.apache.spark.internal.io.cloud.PathOutputCommitProtocol"
# Spark's cloud committers (spark-hadoop-cloud) for Spark 4.1: Maven Central has no later 4.1 release of it
SPARK_HADOOP_CLOUD = "org.apache.spark:spark-hadoop-cloud_2.13:4.1.2"
# spark-hadoop-cloud also depends on the Azure, GCS, Huawei and Tencent connectors and on libraries Spark ships:
# none of them is needed for S3
PACKAGE_EXCLUDES = (
    "org.apache.hadoop:hadoop-azure", "org.apache.hadoop:hadoop-azure-datalake", "org.apache.hadoop:hadoop-cos",
    "org.apache.hadoop:hadoop-huaweicloud", "org.apache.hadoop:hadoop-cloud-storage",
    "org.apache.hadoop:hadoop-client-runtime", "org.apache.hadoop:hadoop-client-api",
    "com.google.cloud.bigdataoss:gcs-connector", "com.fasterxml.jackson.core:jackson-databind",
    "com.fasterxml.jackson.core:jackson-annotations", "com.fasterxml.jackson.dataformat:jackson-dataformat-cbor",
    "org.eclipse.jetty:jetty-util", "org.eclipse.jetty:jetty-util-ajax", "com.squareup.okhttp3:okhttp",
    "com.squareup.okio:okio", "joda-time:joda-time", "org.apache.httpcomponents:httpclient",
    "org.apache.httpcomponents:httpcore",
)
COMMITTER_SETTINGS = {
    "spark.hadoop.fs.s3a.committer.name": "magic",
    "spark.hadoop.fs.s3a.committer.magic.enabled": "true",
    "spark.hadoop.mapreduce.outputcommitter.factory.scheme.s3a": "org.apache.hadoop.fs.s3a.commit.S3ACommitterFactory",
    "spark.sql.sources.commitProtocolClass": COMMIT_PROTOCOL_CLASS,
    "spark.sql.parquet.output.committer.class": "org.apache.spark.internal.io.cloud.BindingParquetOutputCommitter",
    "spark.hadoop.fs.s3.impl": S3A_CLASS,  # s3:// URIs through the same connector
}
CREDENTIAL_ENV = {
    "AWS_ACCESS_KEY_ID": "spark.hadoop.fs.s3a.access.key",
    "AWS_SECRET_ACCESS_KEY": "spark.hadoop.fs.s3a.secret.key",
    "AWS_SESSION_TOKEN": "spark.hadoop.fs.s3a.session.token",
}


class UnsupportedUriError(ValueError):
    """A URI whose scheme the product cannot read or write."""


def scheme_of(uri: str) -> str:
    """The URI's scheme in lower case ('' for a plain path)."""
    return urlsplit(str(uri)).scheme.lower() if "://" in str(uri) or str(uri).startswith("file:") else ""


def check_uri(uri: str, what: str = "path") -> str:
    """``uri`` itself when its scheme is supported; UnsupportedUriError naming the scheme and the supported ones."""
    scheme = scheme_of(uri)
    if scheme not in SUPPORTED_SCHEMES:
        raise UnsupportedUriError(
            f"{what} {uri!r}: the scheme {scheme!r} is not supported; use a local path, file:/..., s3a://bucket/key "
            f"or s3://bucket/key")
    if scheme in OBJECT_STORE_SCHEMES and not urlsplit(uri).netloc:
        raise UnsupportedUriError(f"{what} {uri!r} names no bucket (expected {scheme}://bucket/key)")
    return uri


def uses_object_store(uris: Iterable[str | None]) -> bool:
    """Whether any of ``uris`` (None entries ignored) is on object storage; each is checked with check_uri."""
    return any(scheme_of(check_uri(u)) in OBJECT_STORE_SCHEMES for u in uris if u)


def requested(conf: Mapping[str, str], env: Mapping[str, str] | None = None) -> bool:
    """Whether the user asked for S3A explicitly (``spark.recsys.objectStore=s3a`` or $RECSYS_OBJECT_STORE=s3a)."""
    env = os.environ if env is None else env
    return (conf.get(SWITCH_CONF) or env.get(SWITCH_ENV, "")).strip().lower() == S3A


def hadoop_version(jars_dir: Path | None = None) -> str:
    """The Hadoop version pyspark ships (from its hadoop-client-api jar), which hadoop-aws must match exactly."""
    if jars_dir is None:
        import pyspark

        jars_dir = Path(pyspark.__file__).parent / "jars"
    for jar in sorted(jars_dir.glob("hadoop-client-api-*.jar")):
        match = re.fullmatch(r"hadoop-client-api-(\d+\.\d+\.\d+)\.jar", jar.name)
        if match:
            return match.group(1)
    raise FileNotFoundError(f"no hadoop-client-api-<version>.jar in {jars_dir}: cannot tell pyspark's Hadoop version")


def s3a_packages(version: str | None = None) -> list[str]:
    """The Maven coordinates that give Spark the S3A connector and its committers."""
    return [f"org.apache.hadoop:hadoop-aws:{version or hadoop_version()}", SPARK_HADOOP_CLOUD]


def s3a_settings(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Spark settings for S3A: the committer, plus endpoint and credentials from the AWS variables in ``env``."""
    env = os.environ if env is None else env
    settings = dict(COMMITTER_SETTINGS)
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        settings["spark.hadoop.fs.s3a.endpoint"] = endpoint
        settings["spark.hadoop.fs.s3a.path.style.access"] = "true"
        settings["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(urlsplit(endpoint).scheme == "https").lower()
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        settings["spark.hadoop.fs.s3a.endpoint.region"] = region
    for variable, key in CREDENTIAL_ENV.items():
        if env.get(variable):
            settings[key] = env[variable]
    return settings


def with_s3a(settings: dict[str, str], *, fetch_packages: bool) -> dict[str, str]:
    """``settings`` with S3A's defaults under them (the user's keys win) and, when ``fetch_packages``, the
    connector's packages added to ``spark.jars.packages`` (with their excludes)."""
    out = {**s3a_settings(), **settings}
    if fetch_packages:
        packages = [p for p in out.get("spark.jars.packages", "").split(",") if p]
        out["spark.jars.packages"] = ",".join(packages + [p for p in s3a_packages() if p not in packages])
        excludes = [e for e in out.get("spark.jars.excludes", "").split(",") if e]
        out["spark.jars.excludes"] = ",".join(excludes + [e for e in PACKAGE_EXCLUDES if e not in excludes])
    return out


def store_options(spark) -> dict:
    """The session's S3A settings (endpoint, region, keys, path style) as keyword arguments of
    serving.storage.S3Options, so code outside Spark (publish's manifest, LATEST) reaches the bucket the way Spark
    does. Unset ones are None (the AWS defaults then apply)."""
    conf = jvm.hadoop_configuration(spark)

    def setting(key: str) -> str | None:
        return (conf.get(key) or "").strip() or None

    endpoint = setting("fs.s3a.endpoint")
    if endpoint and "://" not in endpoint:
        secure = (setting("fs.s3a.connection.ssl.enabled") or "true").lower() == "true"
        endpoint = f"{'https' if secure else 'http'}://{endpoint}"
    path_style = (setting("fs.s3a.path.style.access") or "").lower()
    return {"endpoint_url": endpoint, "region": setting("fs.s3a.endpoint.region"),
            "access_key": setting("fs.s3a.access.key"), "secret_key": setting("fs.s3a.secret.key"),
            "session_token": setting("fs.s3a.session.token"), "path_style": True if path_style == "true" else None}


def missing_connector_message() -> str:
    """What to do when the S3A classes are not on Spark's classpath."""
    return (f"an s3a:// path needs the S3A connector, and {S3A_CLASS} is not on Spark's classpath. Under "
            f"spark-submit add --packages {','.join(s3a_packages())} (with --exclude-packages "
            f"{','.join(PACKAGE_EXCLUDES)}), or copy those jars into $SPARK_HOME/jars (the batch image does: "
            f"`python -m jobs.delta_jars --object-store s3a`).")
