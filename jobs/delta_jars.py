"""Fetch Delta Lake's jars with Maven into a folder, for when Spark's Ivy cannot download them itself.

    python -m jobs.delta_jars --dest .jars      (or: make delta-jars)

Then run any job with --jars-dir .jars (or RECSYS_JARS_DIR=.jars); a container image copies the same jars into
$SPARK_HOME/jars. Only Delta and its runtime dependencies are fetched (with ``--object-store s3a`` also the S3A
connector and Spark's cloud committers, lake.object_store): Spark's own jars come with pyspark.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.recsys</groupId><artifactId>delta-jars</artifactId><version>1</version>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""
DEPENDENCY = ("    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId><version>{version}</version>"
              "<exclusions>{exclusions}</exclusions></dependency>")
EXCLUSION = "<exclusion><groupId>{group}</groupId><artifactId>{artifact}</artifactId></exclusion>"


def pom(coordinates: list[str], excludes: tuple[str, ...] = ()) -> str:
    """A POM whose runtime dependencies are ``coordinates`` (group:artifact:version), each without ``excludes``
    (group:artifact) and their own dependencies."""
    exclusions = "".join(EXCLUSION.format(group=g, artifact=a) for g, a in (e.split(":") for e in excludes))
    return POM.format(dependencies="\n".join(
        DEPENDENCY.format(group=g, artifact=a, version=v, exclusions=exclusions)
        for g, a, v in (c.split(":") for c in coordinates)))


def fetch(dest: Path, coordinates: list[str], excludes: tuple[str, ...] = ()) -> list[Path]:
    coordinate = ",".join(coordinates)
    if shutil.which("mvn") is None:
        raise SystemExit("mvn not found: install Maven (apt-get install maven) or let Spark's Ivy fetch "
                         f"{coordinate} (needs access to Maven Central)")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "pom.xml").write_text(pom(coordinates, excludes))
        cmd = ["mvn", "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={dest.resolve()}",
               "-DincludeScope=runtime"]
        result = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"Maven could not fetch {coordinate}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return sorted(dest.glob("*.jar"))


def artifact_name(jar: Path) -> str:
    """'jackson-core-2.13.5.jar' -> 'jackson-core' (the name without its version)."""
    return re.sub(r"-[0-9][0-9A-Za-z.\-]*$", "", jar.stem)


def drop_provided(jars: list[Path], provided_dir: Path) -> list[Path]:
    """Delete jars whose artifact Spark already ships (other versions of jackson, log4j, hadoop...): on one
    classpath two versions of a library conflict. Returns the jars kept."""
    provided = {artifact_name(p) for p in provided_dir.glob("*.jar")}
    kept = []
    for jar in jars:
        if artifact_name(jar) in provided:
            jar.unlink()
        else:
            kept.append(jar)
    return kept


def pyspark_jars_dir() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def main(argv=None) -> int:
    from jobs.spark_session import delta_maven_coordinate
    from lake import object_store

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", default=".jars", help="folder to copy the jars into")
    parser.add_argument("--coordinate", default=None, help="Maven coordinate (default: matches pyspark and delta-spark)")
    parser.add_argument("--object-store", choices=("none", "s3a"), default="none",
                        help="s3a: also fetch the S3A connector and Spark's cloud committers (lake.object_store)")
    parser.add_argument("--keep-provided", action="store_true",
                        help="keep jars Spark already ships (by default they are dropped to avoid version conflicts)")
    args = parser.parse_args(argv)
    coordinates = [args.coordinate or delta_maven_coordinate()]
    excludes: tuple[str, ...] = ()
    if args.object_store == "s3a":
        coordinates += object_store.s3a_packages()
        excludes = object_store.PACKAGE_EXCLUDES
    coordinate = ",".join(coordinates)
    jars = fetch(Path(args.dest), coordinates, excludes)
    if not args.keep_provided:
        jars = drop_provided(jars, pyspark_jars_dir())
    print(f"{coordinate}: {len(jars)} jars in {args.dest}: " + ", ".join(p.name for p in jars))
    print(f"run jobs with --jars-dir {args.dest} (or RECSYS_JARS_DIR={args.dest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
