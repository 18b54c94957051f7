"""The BLAS that Spark ALS loads: our small dspr/daxpy library in front of the system's OpenBLAS.

Spark's ALS (ALS.NormalEquation.add) makes one ``dspr`` and one ``daxpy`` call through dev.ludovic.netlib's
JNIBLAS for every rating of every half-iteration, with vectors of the model's rank. OpenBLAS computes a dspr of
size n < 100 as n separate axpy kernel calls, so at rank 32 that one call costs more than the JNI crossing and the
rest of the loop together. ``models/native/als_blas.c`` implements just these two routines as vectorised loops and
links to ``libblas.so.3`` for everything else; netlib loads it when the JVM is started with
``-Ddev.ludovic.netlib.blas.nativeLibPath=<library>``, which the session factory (jobs/spark_session.py) adds to
the driver's and the executors' Java options whenever the library is there.

Measured on a 2-core AVX-512 EPYC: one dspr + daxpy pair through JNI takes 200 ns instead of 455 ns at rank 32
(1.5x-2.3x at ranks 16-128, bench/results/als_blas.json, of which the two JNI crossings are about 110 ns), and an
ALS iteration runs 1.27x-1.42x faster at 1M-10M pairs (bench/results/training.json, ``tuned`` vs ``tuned-openblas``).

Where the library comes from:
* ``make als-blas`` (part of ``make setup``) compiles it to build/native/librecsys_als_blas.so with the
  machine's C compiler; it needs gcc and libblas.so.3 (Debian's libopenblas0-pthread, ``make blas``).
* The batch image compiles it in a build stage and sets $RECSYS_ALS_BLAS to its path (deploy/Dockerfile.batch);
  the SparkApplications pass the same Java option to drivers and executors (deploy/spark_apps.py).
* $RECSYS_ALS_BLAS=<path> names the library explicitly; $RECSYS_ALS_BLAS=system keeps netlib's own choice
  (libblas.so.3 as installed), for a comparison or if the library is suspected of anything.
Without it ALS still runs, on OpenBLAS alone (or netlib's Java BLAS), only slower.
"""
from __future__ import annotations

import os
from pathlib import Path

LIBRARY_ENV = "RECSYS_ALS_BLAS"
SYSTEM = "system"
LIBRARY_NAME = "librecsys_als_blas.so"
LIBRARY_IN_REPO = Path("build") / "native" / LIBRARY_NAME  # where `make als-blas` and the batch image put it
DEFAULT_LIBRARY = Path(__file__).resolve().parents[1] / LIBRARY_IN_REPO
NETLIB_LIBRARY_PATH = "dev.ludovic.netlib.blas.nativeLibPath"
# Any of these in a JVM's options means the caller chose netlib's BLAS already: we leave it alone.
NETLIB_CHOICE = "dev.ludovic.netlib.blas.nativeLib"
JAVA_OPTION_KEYS = ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions")


class AlsBlasError(RuntimeError):
    """The configured ALS BLAS library is missing or computes wrong results; the message says which and why."""


def library_path(env: dict | None = None) -> Path | None:
    """The library the JVMs should load, or None to leave netlib's default (libblas.so.3) in place.

    $RECSYS_ALS_BLAS wins: ``system`` means None, a path must exist (AlsBlasError otherwise: a path someone set
    and mistyped should not silently cost half the training speed). Without it, the library built by
    ``make als-blas`` is used when present.
    """
    env = os.environ if env is None else env
    chosen = env.get(LIBRARY_ENV, "").strip()
    if chosen.lower() == SYSTEM:
        return None
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise AlsBlasError(f"${LIBRARY_ENV}={chosen!r}: no such file. Build it with `make als-blas`, point "
                               f"${LIBRARY_ENV} at the built {LIBRARY_NAME}, or set {LIBRARY_ENV}=system to run "
                               f"Spark ALS on the system BLAS alone.")
        return path.resolve()
    return DEFAULT_LIBRARY if DEFAULT_LIBRARY.is_file() else None


def java_option(path: Path) -> str:
    return f"-D{NETLIB_LIBRARY_PATH}={path}"


def add_java_options(settings: dict[str, str], path: Path | None, keys=JAVA_OPTION_KEYS) -> dict[str, str]:
    """Append the library's Java option to each of ``keys`` in ``settings`` (a copy is returned).

    A value that already picks netlib's BLAS (``-Ddev.ludovic.netlib.blas.nativeLib...``) is kept as it is: an
    explicit choice, such as bench/training.py's Java-BLAS variants, wins.
    """
    out = dict(settings)
    if path is None:
        return out
    for key in keys:
        current = out.get(key, "").strip()
        if NETLIB_CHOICE in current:
            continue
        out[key] = f"{current} {java_option(path)}".strip()
    return out


def jvm_property(spark, name: str) -> str | None:
    """A system property of the driver JVM (None when unset)."""
    return spark._jvm.java.lang.System.getProperty(name)  # noqa: SLF001 - py4j


def loaded_library(spark) -> str | None:
    """The library path the driver JVM was told to load (None: netlib's default, libblas.so.3)."""
    return jvm_property(spark, NETLIB_LIBRARY_PATH)


def check_against_java(spark, sizes=(1, 7, 32)) -> float:
    """Compare the driver JVM's native dspr and daxpy with netlib's Java BLAS on small random vectors.

    Returns the largest relative difference; raises AlsBlasError above 1e-12 (rounding differs only in the last
    bits: fused multiply-adds). Costs a few milliseconds of py4j calls; fit_als runs it once per session when our
    library is loaded, so a miscompiled library stops training instead of producing wrong factors.
    """
    import random

    jvm = spark._jvm  # noqa: SLF001 - py4j
    gateway = spark.sparkContext._gateway  # noqa: SLF001
    native = jvm.dev.ludovic.netlib.blas.NativeBLAS.getInstance()
    java = jvm.dev.ludovic.netlib.blas.JavaBLAS.getInstance()
    rng = random.Random(7)

    def jarray(values):
        array = gateway.new_array(gateway.jvm.double, len(values))
        for i, v in enumerate(values):
            array[i] = v
        return array

    worst = 0.0
    for n in sizes:
        x = [rng.uniform(-2, 2) for _ in range(n)]
        start = [rng.uniform(-1, 1) for _ in range(n * (n + 1) // 2)]
        for uplo in ("U", "L"):
            got, want = jarray(start), jarray(start)
            native.dspr(uplo, n, 0.75, jarray(x), 1, got)
            java.dspr(uplo, n, 0.75, jarray(x), 1, want)
            worst = max(worst, _relative_difference(list(got), list(want)))
        y = [rng.uniform(-1, 1) for _ in range(n)]
        got, want = jarray(y), jarray(y)
        native.daxpy(n, -1.25, jarray(x), 1, got, 1)
        java.daxpy(n, -1.25, jarray(x), 1, want, 1)
        worst = max(worst, _relative_difference(list(got), list(want)))
    if worst > 1e-12:
        raise AlsBlasError(f"the native BLAS ({loaded_library(spark) or 'libblas.so.3'}) disagrees with netlib's Java "
                           f"BLAS on dspr/daxpy (relative difference {worst:.3g}): ALS would train wrong factors. "
                           f"Rebuild it (`make als-blas`) or set {LIBRARY_ENV}=system.")
    return worst


def _relative_difference(got: list[float], want: list[float]) -> float:
    return max((abs(g - w) / max(1.0, abs(w)) for g, w in zip(got, want)), default=0.0)
