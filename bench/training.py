"""Benchmark ALS training: Spark ALS (as models.als.fit_als runs it) against the implicit library, per iteration.

    make bench-training                      # = .venv/bin/python bench/training.py
    .venv/bin/python bench/training.py --sizes 1000000,10000000 --rank 32

For each size (distinct user-item pairs), one synthetic implicit data set (Zipf-like item popularity, skewed
user activity, weights 1..5) is written once to Parquet and given to every method:

* ``implicit``: ``implicit.cpu.als.AlternatingLeastSquares`` (its defaults: conjugate gradient, 2 threads),
  on the same CSR user x item matrix, same rank.
* ``spark`` variants, each in a fresh process with a fresh JVM (local[2]): ``fit_als`` with the settings of
  the variant. ``defaults`` is Spark's own settings (10 user/item blocks, input not cached, Java serialiser)
  with the system's native BLAS (OpenBLAS through netlib's JNIBLAS); ``java-blas`` is the same with netlib's Java
  fallback forced (``-Ddev.ludovic.netlib.blas.nativeLib=none.so``; on Java 17 that is VectorBLAS, SIMD
  through jdk.incubator.vector); ``tuned`` is what the product runs: blocks = cores, input cached and
  materialised, Kryo serialisation, our dspr/daxpy/dppsv library in front of OpenBLAS (models/als_blas.py,
  built by ``make als-blas``) and the throughput garbage collector (jobs/spark_session.py); ``tuned-openblas`` is
  tuned on OpenBLAS alone (what the library saves); ``tuned-system-lapack`` is tuned with our dspr/daxpy but
  OpenBLAS's dppsv (what our dppsv saves); ``tuned-g1`` is tuned with Java's default collector, G1 (what the
  collector saves; these two are not in the default lists); ``tuned-java`` is tuned with the Java BLAS.

Per iteration time is the slope between two fits with different ``maxIter`` (so set-up, the first pass over the
data and the NaN check, the fixed cost of a fit, are excluded); ``fixed_s`` is the intercept. Each ``maxIter`` is
fitted ``--rounds`` times by Spark and ``--implicit-rounds`` times by implicit, in turns, and the fastest fit of
each is used (a slope from single fits moved 2x between runs on the shared 2-core machine); every time is kept in
``spark_times`` / ``implicit_times``. Each Spark process
first runs a 1-iteration warm-up fit (JIT, first jobs), which is not timed. The machine is
shared: the 1-minute load average before each measurement is recorded with it.

Writes bench/results/training.json: a list of records with interactions, rank, iterations, variant,
spark_s_per_iter, implicit_s_per_iter, ratio (spark / implicit), fixed_s, blas and the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "training.json"

from jobs.spark_session import LOCAL_GC_OPTION  # noqa: E402  (the session factory's collector)

# netlib's defaults: OpenBLAS alone (BLAS and LAPACK), without ours
SYSTEM_BLAS = "-Ddev.ludovic.netlib.blas.nativeLib=libblas.so.3 -Ddev.ludovic.netlib.lapack.nativeLib=liblapack.so.3"


def our_library_option() -> str:
    """The Java options that load our library as netlib's BLAS and LAPACK (what the session factory adds), if built."""
    from models import als_blas

    path = als_blas.library_path()
    return als_blas.java_option(path) if path else ""


def our_blas_only_option() -> str:
    """The Java option that loads our library as netlib's BLAS only (not its LAPACK), if it is built."""
    from models import als_blas

    path = als_blas.library_path()
    return f"-D{als_blas.NETLIB_LIBRARY_PATH}={path}" if path else ""


# Each Spark variant: fit_als params and Spark settings (the JVM is fresh for each, so settings take effect).
# "java-blas" and "defaults" are Spark's own settings (G1 collector); the "tuned" ones run with the session
# factory's (jobs/spark_session.py: the throughput collector), and those that set Java options repeat it.
VARIANTS = {
    "java-blas": {"conf": {"spark.driver.extraJavaOptions": "-Ddev.ludovic.netlib.blas.nativeLib=none.so "
                                                            "-Ddev.ludovic.netlib.lapack.nativeLib=none.so"},
                  "params": {"num_blocks": 10}, "cache_input": False},
    "defaults": {"conf": {"spark.driver.extraJavaOptions": SYSTEM_BLAS}, "params": {"num_blocks": 10},
                 "cache_input": False},
    # what fit_als and the session factory do: our dspr/daxpy/dppsv library in front of OpenBLAS (models/als_blas.py)
    "tuned": {"conf": {"spark.serializer": "org.apache.spark.serializer.KryoSerializer"},
              "params": {"num_blocks": None, "intermediate_storage": "MEMORY_AND_DISK"}, "cache_input": True},
    # as tuned, but the solves on OpenBLAS's LAPACK (our dspr/daxpy only): what our dppsv saves
    "tuned-system-lapack": {"conf": {"spark.serializer": "org.apache.spark.serializer.KryoSerializer",
                                     "spark.driver.extraJavaOptions": f"{LOCAL_GC_OPTION} {our_blas_only_option()} "
                                                                      "-Ddev.ludovic.netlib.lapack.nativeLib=liblapack.so.3"},
                            "params": {"num_blocks": None, "intermediate_storage": "MEMORY_AND_DISK"},
                            "cache_input": True},
    # as tuned, but Java's default collector (G1) instead of the session factory's: what the collector saves
    "tuned-g1": {"conf": {"spark.serializer": "org.apache.spark.serializer.KryoSerializer",
                          "spark.driver.extraJavaOptions": our_library_option() or "-XX:+UseG1GC"},
                 "params": {"num_blocks": None, "intermediate_storage": "MEMORY_AND_DISK"}, "cache_input": True},
    # as tuned, but OpenBLAS alone (libblas.so.3, netlib's default): what our library saves
    "tuned-openblas": {"conf": {"spark.serializer": "org.apache.spark.serializer.KryoSerializer",
                                "spark.driver.extraJavaOptions": f"{LOCAL_GC_OPTION} {SYSTEM_BLAS}"},
                       "params": {"num_blocks": None, "intermediate_storage": "MEMORY_AND_DISK"}, "cache_input": True},
    # as tuned, but netlib's Java BLAS (VectorBLAS on Java 17+): Spark's NormalEquation makes one dspr and one
    # daxpy call per rating, and at small ranks the JNI crossing costs more than the arithmetic
    "tuned-java": {"conf": {"spark.serializer": "org.apache.spark.serializer.KryoSerializer",
                            "spark.driver.extraJavaOptions": f"{LOCAL_GC_OPTION} "
                                                             "-Ddev.ludovic.netlib.blas.nativeLib=none.so"},
                   "params": {"num_blocks": None, "intermediate_storage": "MEMORY_AND_DISK"}, "cache_input": True},
}


def make_data(pairs: int, seed: int, path: Path) -> dict:
    """Distinct (user, item, weight) pairs with skewed users and items, as Parquet; returns the shape."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    users = max(1000, pairs // 100)
    items = max(500, pairs // 200)
    key = np.empty(0, np.int64)
    while len(key) < pairs:  # draw skewed pairs until there are enough distinct ones
        drawn = int((pairs - len(key)) * 1.3) + 1000
        u = (rng.pareto(1.5, drawn) * users / 20).astype(np.int64) % users
        i = (rng.zipf(1.3, drawn) - 1 + rng.integers(0, 3, drawn)) % items
        i = np.where(rng.random(drawn) < 0.6, rng.integers(0, items, drawn), i)
        key = np.unique(np.concatenate([key, u * items + i]))
    rng.shuffle(key)
    key = key[:pairs]
    table = pa.table({"user_idx": (key // items).astype(np.int32), "item_idx": (key % items).astype(np.int32),
                      "weight": rng.integers(1, 6, len(key)).astype(np.float32)})
    pq.write_table(table, path)
    return {"interactions": int(len(key)), "users": int(len(np.unique(table["user_idx"]))),
            "items": int(len(np.unique(table["item_idx"])))}


def slope(points: list[tuple[int, float]]) -> tuple[float, float]:
    (i1, t1), (i2, t2) = points
    per_iter = (t2 - t1) / (i2 - i1)
    return per_iter, t1 - per_iter * i1


def time_fits(fit, iters: tuple[int, int], rounds: int) -> tuple[list[tuple[int, float]], dict[int, list[float]]]:
    """Call ``fit(max_iter)`` ``rounds`` times for each of ``iters``, in turns; (points: each maxIter with its
    fastest fit, since on a shared machine the load only ever adds time; every time measured). What ``fit``
    returns, if not None, is called after its time is taken (clean-up that is not part of the fit)."""
    times: dict[int, list[float]] = {n: [] for n in iters}
    for _ in range(rounds):
        for n in iters:
            t0 = time.perf_counter()
            cleanup = fit(n)
            times[n].append(time.perf_counter() - t0)
            if cleanup is not None:
                cleanup()
    return [(n, min(ts)) for n, ts in times.items()], times


def time_implicit(path: Path, rank: int, iters: tuple[int, int], threads: int, rounds: int) -> dict:
    import numpy as np
    import pyarrow.parquet as pq
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_info, threadpool_limits

    t = pq.read_table(path)
    u, i, w = (t[c].to_numpy() for c in ("user_idx", "item_idx", "weight"))
    matrix = sp.csr_matrix((w, (u, i)), shape=(int(u.max()) + 1, int(i.max()) + 1), dtype=np.float32)

    def fit(n: int) -> None:
        AlternatingLeastSquares(factors=rank, iterations=n, regularization=0.1, alpha=1.0, num_threads=threads,
                                random_state=1).fit(matrix, show_progress=False)

    with threadpool_limits(1, "blas"):  # implicit parallelises itself; it asks for single-threaded BLAS
        points, times = time_fits(fit, iters, rounds)
    per_iter, fixed = slope(points)
    blas = [f"{x.get('internal_api')} {x.get('version')} {x.get('architecture')}" for x in threadpool_info()
            if x.get("user_api") == "blas"]
    return {"s_per_iter": per_iter, "fixed_s": fixed, "points": points, "times": times, "blas": blas}


def time_spark(path: str, rank: int, iters: tuple[int, int], variant: str, rounds: int) -> dict:
    """Runs inside a fresh process: one session, two fits of the same input."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark import StorageLevel

    from jobs.spark_session import build_spark
    from models.als import AlsParams, blas_implementation, fit_als

    spec = VARIANTS[variant]
    conf = {"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2", "spark.ui.enabled": "false",
            "spark.driver.memory": "8g", **spec["conf"]}
    spark = build_spark(f"bench-training-{variant}", master="local[2]", conf=conf, log_level="ERROR")
    data = spark.read.parquet(path)
    if spec["cache_input"]:
        data = data.repartition(2).persist(StorageLevel.MEMORY_AND_DISK)
        data.count()
    checkpoints = tempfile.mkdtemp(prefix="bench-als-ckpt-")
    # warm-up: the JVM's JIT and Spark's first jobs make a first fit slower than any later one
    warm = fit_als(data, AlsParams(rank=rank, max_iter=1, implicit=True, seed=1, **spec["params"]),
                   checkpoint_dir=checkpoints)
    warm.model.userFactors.unpersist()
    warm.model.itemFactors.unpersist()
    def fit(n: int):
        params = AlsParams(rank=rank, max_iter=n, reg_param=0.1, alpha=1.0, implicit=True, seed=1,
                           checkpoint_interval=max(iters) + 1, **spec["params"])
        model = fit_als(data, params, checkpoint_dir=checkpoints).model
        return lambda: (model.userFactors.unpersist(), model.itemFactors.unpersist())

    points, times = time_fits(fit, iters, rounds)
    per_iter, fixed = slope(points)
    from models.als_blas import loaded_lapack_library, loaded_library

    blas = blas_implementation(spark)
    if blas.endswith("JNIBLAS"):
        blas += f" ({loaded_library(spark) or 'libblas.so.3'}; LAPACK {loaded_lapack_library(spark) or 'liblapack.so.3'})"
    spark.stop()
    return {"s_per_iter": per_iter, "fixed_s": fixed, "points": points, "times": times, "blas": blas}


def run_spark_variant(path: Path, rank: int, iters: tuple[int, int], variant: str, rounds: int) -> dict:
    cmd = [sys.executable, __file__, "--spark-child", str(path), "--rank", str(rank),
           "--iters", f"{iters[0]},{iters[1]}", "--variant", variant, "--rounds", str(rounds)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})
    if out.returncode != 0:
        raise RuntimeError(f"spark variant {variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="distinct pairs per data set, comma list")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--iters", default="2,6", help="the two maxIter values whose time difference is measured")
    parser.add_argument("--variants", default="java-blas,defaults,tuned-openblas,tuned,tuned-java",
                        help="Spark variants at the first size")
    parser.add_argument("--large-variants", default="tuned-openblas,tuned,tuned-java", help="Spark variants at the other sizes")
    parser.add_argument("--threads", type=int, default=2, help="implicit's threads (= Spark's local cores)")
    parser.add_argument("--rounds", type=int, default=2, help="fits of Spark per maxIter value (the fastest kept)")
    parser.add_argument("--implicit-rounds", type=int, default=3,
                        help="fits of implicit per maxIter value (the fastest kept)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--spark-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="tuned", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    iters = tuple(int(x) for x in args.iters.split(","))
    if args.spark_child:
        print(json.dumps(time_spark(args.spark_child, args.rank, iters, args.variant, args.rounds)))
        return 0

    records = []
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        for n, size in enumerate(int(s) for s in args.sizes.split(",")):
            path = Path(tmp) / f"pairs-{size}.parquet"
            shape = make_data(size, args.seed, path)
            print(f"data: {shape}", flush=True)
            variants = (args.variants if n == 0 else args.large_variants).split(",")
            for variant in variants:
                # implicit is timed right before each Spark variant: on a shared machine the load drifts, and a
                # ratio is only fair between measurements taken under the same load
                load = os.getloadavg()[0]
                ref = time_implicit(path, args.rank, iters, args.threads, args.implicit_rounds)
                print(f"  implicit   {ref['s_per_iter']:.3f} s/iter (fixed {ref['fixed_s']:.2f} s, load {load:.1f})",
                      flush=True)
                got = run_spark_variant(path, args.rank, iters, variant, args.rounds)
                load_after = os.getloadavg()[0]
                record = {**shape, "rank": args.rank, "iterations": list(iters), "variant": variant,
                          "spark_s_per_iter": round(got["s_per_iter"], 3),
                          "implicit_s_per_iter": round(ref["s_per_iter"], 3),
                          "ratio": round(got["s_per_iter"] / ref["s_per_iter"], 2),
                          "spark_fixed_s": round(got["fixed_s"], 2), "implicit_fixed_s": round(ref["fixed_s"], 2),
                          "spark_points": got["points"], "implicit_points": ref["points"],
                          "spark_times": got["times"], "implicit_times": ref["times"],
                          "spark_blas": got["blas"], "implicit_blas": ref["blas"],
                          "load_avg_1m_before": round(load, 1), "load_avg_1m_after": round(load_after, 1),
                          "cores": os.cpu_count(), "python": platform.python_version(),
                          "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")}
                records.append(record)
                print(f"  spark {variant:<10} {record['spark_s_per_iter']:.3f} s/iter  ratio {record['ratio']:.2f}  "
                      f"fixed {record['spark_fixed_s']:.1f} s  blas {got['blas']}  (load {load_after:.1f})", flush=True)
                # write as we go: a long run that is stopped still leaves its figures
                Path(args.output).parent.mkdir(parents=True, exist_ok=True)
                Path(args.output).write_text(json.dumps(records, indent=2) + "\n")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(records, indent=2) + "\n")
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
