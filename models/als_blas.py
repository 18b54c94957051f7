"""The BLAS and LAPACK that Spark ALS loads: our small dspr/daxpy/dppsv library in front of the system's OpenBLAS.

Spark's ALS (ALS.NormalEquation.add) makes one ``dspr`` and one ``daxpy`` call through dev.ludovic.netlib's
JNIBLAS for every rating of every half-iteration, with vectors of the model's rank. OpenBLAS computes a dspr of
size n < 100 as n separate axpy kernel calls, so at rank 32 that one call costs more than the JNI crossing and the
rest of the loop together. Then every user and every item solves its normal equations with LAPACK's ``dppsv``
(ALS.CholeskySolver, through JNILAPACK), which OpenBLAS runs as the reference LAPACK: one dtpsv and one ddot call
per column, about 8 us at rank 32. ``models/native/als_blas.c`` implements just these three routines as
vectorised loops (dppsv through JNI: 2.2x-2.4x faster at ranks 16-64) and links to ``libblas.so.3`` and ``liblapack.so.3``
for everything else; netlib loads it when the JVM is started with ``-Ddev.ludovic.netlib.blas.nativeLibPath=``
and ``-Ddev.ludovic.netlib.lapack.nativeLibPath=<library>``, which the session factory (jobs/spark_session.py)
adds to the driver's and the executors' Java options whenever the library is there.

Measured (bench/results/als_blas.json): one dspr + daxpy pair through JNI takes 374 instead of 555 ns at rank 32
on a 2-core AVX2 EPYC (200 instead of 455 ns on an AVX-512 one; the two JNI crossings are about 110 ns), and one
dppsv 4.5 instead of 9.7 us at rank 32, 121 instead of 189 us at rank 128. An ALS iteration at rank 32 runs
1.27x-1.42x faster at 1M-10M pairs (bench/results/training.json, ``tuned`` vs ``tuned-openblas``).

Where the library comes from:
* ``make als-blas`` (part of ``make setup``) compiles it to build/native/librecsys_als_blas.so with the
  machine's C compiler; it needs gcc and libblas.so.3 (Debian's libopenblas0-pthread, ``make blas``).
* The batch image compiles it in a build stage and sets $RECSYS_ALS_BLAS to its path (deploy/Dockerfile.batch);
  the SparkApplications pass the same Java option to drivers and executors (deploy/spark_apps.py).
* $RECSYS_ALS_BLAS=<path> names the library explicitly; $RECSYS_ALS_BLAS=system keeps netlib's own choice
  (libblas.so.3 as installed), for a comparison or if the library is suspected of anything, and so does the
  reference path of all speed tricks (models.speed, $RECSYS_REFERENCE_PATH=1).
Without it ALS still runs, on OpenBLAS alone (or netlib's Java BLAS), only slower.
"""
from __future__ import annotations

import os
import random
import struct
from pathlib import Path

from lake import jvm
from models import speed

LIBRARY_ENV = "RECSYS_ALS_BLAS"
SYSTEM = "system"
LIBRARY_NAME = "librecsys_als_blas.so"
LIBRARY_IN_REPO = Path("build") / "native" / LIBRARY_NAME  # where `make als-blas` and the batch image put it
DEFAULT_LIBRARY = Path(__file__).resolve().parents[1] / LIBRARY_IN_REPO
NETLIB_LIBRARY_PATH = "dev.ludovic.netlib.blas.nativeLibPath"
NETLIB_LAPACK_LIBRARY_PATH = "dev.ludovic.netlib.lapack.nativeLibPath"
# Either of these (nativeLib=... or nativeLibPath=...) in a JVM's options means the caller chose netlib's BLAS or
# LAPACK already: we leave the options alone, so a choice such as bench/training.py's OpenBLAS-alone variant holds.
NETLIB_BLAS_LIBRARY = "dev.ludovic.netlib.blas.nativeLib"
NETLIB_CHOICES = (NETLIB_BLAS_LIBRARY, "dev.ludovic.netlib.lapack.nativeLib")
JAVA_OPTION_KEYS = ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions")


class AlsBlasError(RuntimeError):
    """The configured ALS BLAS library is missing or computes wrong results; the message says which and why."""


def library_path(env: dict | None = None) -> Path | None:
    """The library the JVMs should load, or None to leave netlib's default (libblas.so.3) in place.

    The reference path (models.speed) means None. Otherwise $RECSYS_ALS_BLAS wins: ``system`` means None, a path
    must exist (AlsBlasError otherwise: a path someone set and mistyped should not silently cost half the training
    speed). Without it, the library built by ``make als-blas`` is used when present.
    """
    env = os.environ if env is None else env
    chosen = env.get(LIBRARY_ENV, "").strip()
    if chosen.lower() == SYSTEM or not speed.tricks_enabled(env):
        return None
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise AlsBlasError(f"${LIBRARY_ENV}={chosen!r}: no such file. Build it with `make als-blas`, point "
                               f"${LIBRARY_ENV} at the built {LIBRARY_NAME}, or set {LIBRARY_ENV}=system to run "
                               f"Spark ALS on the system BLAS alone.")
        return path.resolve()
    return DEFAULT_LIBRARY if DEFAULT_LIBRARY.is_file() else None


def installed_library_path(env: dict | None = None) -> Path | None:
    """The library to name to a cluster's executors: only one $RECSYS_ALS_BLAS names explicitly (installed at that
    path on every node, as in the batch image); never the build folder of the driver's checkout, which other
    machines do not have. None on the reference path or with $RECSYS_ALS_BLAS=system."""
    env = os.environ if env is None else env
    return library_path(env) if env.get(LIBRARY_ENV, "").strip() else None


def executor_option_path(spark) -> str | None:
    """The library path the session's executors were told to load (their Java options), or None."""
    options = spark.sparkContext.getConf().get("spark.executor.extraJavaOptions", "") or ""
    prefix = f"-D{NETLIB_LIBRARY_PATH}="
    return next((o[len(prefix):] for o in options.split() if o.startswith(prefix)), None)


def executor_libraries(spark, path: str | None) -> dict[str, dict]:
    """What the hosts of the session's executors have, per host name: ``library`` (``path`` when that file is
    there, else None) and ``libblas`` (whether libblas.so.3 loads). One small Python task per core, so every
    executor of a freshly started application is asked; netlib on a host without ``path`` runs on libblas.so.3,
    or on its Java BLAS without that too."""
    tasks = max(1, spark.sparkContext.defaultParallelism)

    def probe(_):
        import ctypes
        import os as _os
        import socket

        try:
            ctypes.CDLL("libblas.so.3")
            libblas = True
        except OSError:
            libblas = False
        yield socket.gethostname(), {"library": path if path and _os.path.isfile(path) else None, "libblas": libblas}

    return dict(spark.sparkContext.parallelize(range(tasks), tasks).mapPartitions(probe).collect())


def java_option(path: Path) -> str:
    """The Java options (one string, two options) that make netlib load ``path`` as its BLAS and its LAPACK."""
    return f"-D{NETLIB_LIBRARY_PATH}={path} -D{NETLIB_LAPACK_LIBRARY_PATH}={path}"


def add_java_options(settings: dict[str, str], path: Path | None, keys=JAVA_OPTION_KEYS) -> dict[str, str]:
    """Append the library's Java options to each of ``keys`` in ``settings`` (a copy is returned).

    A value that already picks netlib's BLAS or LAPACK (``-Ddev.ludovic.netlib.blas.nativeLib...``,
    ``-Ddev.ludovic.netlib.lapack.nativeLib...``) is kept as it is: an explicit choice, such as
    bench/training.py's Java-BLAS variants, wins.
    """
    out = dict(settings)
    if path is None:
        return out
    for key in keys:
        current = out.get(key, "").strip()
        if any(choice in current for choice in NETLIB_CHOICES):
            continue
        out[key] = f"{current} {java_option(path)}".strip()
    return out


def jvm_property(spark, name: str) -> str | None:
    """A system property of the driver JVM (None when unset)."""
    return jvm.system_property(spark, name)


def loaded_library(spark) -> str | None:
    """The BLAS library path the driver JVM was told to load (None: netlib's default, libblas.so.3)."""
    return jvm_property(spark, NETLIB_LIBRARY_PATH)


def loaded_lapack_library(spark) -> str | None:
    """The LAPACK library path the driver JVM was told to load (None: netlib's default, liblapack.so.3)."""
    return jvm_property(spark, NETLIB_LAPACK_LIBRARY_PATH)


class _JavaArrays:
    """Moves double arrays between Python lists and the driver JVM: one py4j call per array (big-endian bytes
    through a ByteBuffer), not one per element."""

    def __init__(self, spark):
        self.java_vm, self.gateway = jvm.handle(spark), jvm.gateway(spark)

    def to_java(self, values: list[float]):
        array = self.gateway.new_array(self.gateway.jvm.double, len(values))
        self.java_vm.java.nio.ByteBuffer.wrap(bytearray(struct.pack(f">{len(values)}d", *values))).asDoubleBuffer().get(array)
        return array

    def to_python(self, array) -> list[float]:
        buffer = self.java_vm.java.nio.ByteBuffer.allocate(8 * len(array))
        buffer.asDoubleBuffer().put(array)
        return list(struct.unpack(f">{len(array)}d", bytes(buffer.array())))


def _random_inputs(rng: random.Random, n: int) -> tuple[list[float], list[float], list[float], list[float]]:
    """(x, a packed n x n matrix, y, a packed normal equation as ALS builds it: a sum of x x' plus n on the
    diagonal, so positive definite, upper triangle by columns), drawn from ``rng`` in that order."""
    x = [rng.uniform(-2, 2) for _ in range(n)]
    start = [rng.uniform(-1, 1) for _ in range(n * (n + 1) // 2)]
    y = [rng.uniform(-1, 1) for _ in range(n)]
    vectors = [[rng.uniform(-1, 1) for _ in range(n)] for _ in range(n + 2)]
    gram = [sum(v[i] * v[j] for v in vectors) + (n if i == j else 0.0) for j in range(n) for i in range(j + 1)]
    return x, start, y, gram


def _blas_differences(arrays: _JavaArrays, native, java, n: int, x: list[float], start: list[float],
                      y: list[float]) -> list[float]:
    """The relative differences between ``native`` and ``java`` BLAS: dspr on ``start`` (upper, then lower), daxpy
    on ``y``."""
    differences = []
    for uplo in ("U", "L"):
        got, want = arrays.to_java(start), arrays.to_java(start)
        native.dspr(uplo, n, 0.75, arrays.to_java(x), 1, got)
        java.dspr(uplo, n, 0.75, arrays.to_java(x), 1, want)
        differences.append(_relative_difference(arrays.to_python(got), arrays.to_python(want)))
    got, want = arrays.to_java(y), arrays.to_java(y)
    native.daxpy(n, -1.25, arrays.to_java(x), 1, got, 1)
    java.daxpy(n, -1.25, arrays.to_java(x), 1, want, 1)
    differences.append(_relative_difference(arrays.to_python(got), arrays.to_python(want)))
    return differences


def _dppsv_differences(spark, arrays: _JavaArrays, native_lapack, java_lapack, n: int, gram: list[float],
                       y: list[float]) -> list[float]:
    """The relative differences between ``native_lapack`` and ``java_lapack`` dppsv solving ``gram`` x = ``y``
    (upper, then lower; the factor, then the solution); AlsBlasError when their info codes differ."""
    from py4j.java_gateway import get_field

    differences = []
    for uplo in ("U", "L"):
        packed = gram if uplo == "U" else [gram[i * (i + 1) // 2 + j] for j in range(n) for i in range(j, n)]
        results = []
        for lapack in (native_lapack, java_lapack):
            ap, b, info = arrays.to_java(packed), arrays.to_java(y), arrays.java_vm.org.netlib.util.intW(0)
            lapack.dppsv(uplo, n, 1, ap, b, n, info)
            results.append((get_field(info, "val"), arrays.to_python(ap), arrays.to_python(b)))
        (got_info, got_ap, got_b), (want_info, want_ap, want_b) = results
        if got_info != want_info:
            raise AlsBlasError(f"the native LAPACK ({loaded_lapack_library(spark) or 'liblapack.so.3'}) returned "
                               f"info {got_info} from dppsv where netlib's Java LAPACK returned {want_info}")
        differences += [_relative_difference(got_ap, want_ap), _relative_difference(got_b, want_b)]
    return differences


def check_against_java(spark, sizes=(1, 7, 32)) -> float:
    """Compare the driver JVM's native dspr, daxpy and dppsv with netlib's Java BLAS and LAPACK on small random
    inputs.

    Returns the largest relative difference; raises AlsBlasError above 1e-12 (rounding differs only in the last
    bits: fused multiply-adds, another order of the Cholesky updates). fit_als runs it once per session when our
    library is loaded, so a miscompiled library stops training instead of producing wrong factors.
    """
    arrays = _JavaArrays(spark)
    netlib = arrays.java_vm.dev.ludovic.netlib
    native, java = netlib.blas.NativeBLAS.getInstance(), netlib.blas.JavaBLAS.getInstance()
    native_lapack, java_lapack = netlib.lapack.NativeLAPACK.getInstance(), netlib.lapack.JavaLAPACK.getInstance()
    rng = random.Random(7)
    worst = 0.0
    for n in sizes:
        x, start, y, gram = _random_inputs(rng, n)
        worst = max(worst, *_blas_differences(arrays, native, java, n, x, start, y))
        worst = max(worst, *_dppsv_differences(spark, arrays, native_lapack, java_lapack, n, gram, y))
    if worst > 1e-12:
        raise AlsBlasError(f"the native BLAS/LAPACK ({loaded_library(spark) or 'libblas.so.3'}) disagrees with netlib's "
                           f"Java BLAS/LAPACK on dspr/daxpy/dppsv (relative difference {worst:.3g}): ALS would train "
                           f"wrong factors. Rebuild it (`make als-blas`) or set {LIBRARY_ENV}=system.")
    return worst


def _relative_difference(got: list[float], want: list[float]) -> float:
    return max((abs(g - w) / max(1.0, abs(w)) for g, w in zip(got, want)), default=0.0)
