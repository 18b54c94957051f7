"""Benchmark the calls Spark ALS makes once per rating (dspr + daxpy through netlib's JNIBLAS) and once per user
and item (dppsv through JNILAPACK), with our library (models/native/als_blas.c) and with the system's
libblas.so.3 / liblapack.so.3 (OpenBLAS) alone.

    make bench-als-blas                 # = .venv/bin/python bench/als_blas.py
    .venv/bin/python bench/als_blas.py --ranks 16,32,64,128 --rounds 3

A small Java program (compiled here with javac against the netlib jar pyspark ships) calls
``BLAS.dspr("U", k, c, x, 1, ata)`` and ``BLAS.daxpy(k, b, x, 1, atb, 1)`` as ALS.NormalEquation.add does, 5M
times after a warm-up, in a fresh JVM per library (netlib picks its library once per JVM, from
``-Ddev.ludovic.netlib.blas.nativeLibPath``); a second one calls ``LAPACK.dppsv("U", k, 1, ata, atb, k, info)``
on a positive definite normal equation (a fresh copy each call, as ALS refills it), as CholeskySolver does, with
``-Ddev.ludovic.netlib.lapack.nativeLibPath``. The libraries take turns, ``--rounds`` times; the fastest round of
each is kept and every round recorded. Writes bench/results/als_blas.json: a list of records with rank,
``ours_ns``, ``openblas_ns`` (ns per dspr + daxpy pair), ``speedup``, ``dppsv_ours_ns``, ``dppsv_openblas_ns``
(ns per solve, the copy included), ``dppsv_speedup`` and the rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "als_blas.json"
SYSTEM_LIBRARY = "libblas.so.3"
SYSTEM_LAPACK = "liblapack.so.3"
CALLS = 5_000_000
SOLVE_WORK = 2e9  # dppsv calls per run: this over rank^3, between 20k and 500k (about a second each)

JAVA = """
import dev.ludovic.netlib.blas.NativeBLAS;
public class PairBench {
  public static void main(String[] args) {
    int k = Integer.parseInt(args[0]);
    int calls = Integer.parseInt(args[1]);
    NativeBLAS blas = NativeBLAS.getInstance();
    double[] x = new double[k], ata = new double[k * (k + 1) / 2], atb = new double[k];
    java.util.Random random = new java.util.Random(1);
    for (int i = 0; i < k; i++) x[i] = random.nextGaussian() * 1e-3;
    for (int i = 0; i < calls / 5; i++) { blas.dspr("U", k, 0.5, x, 1, ata); blas.daxpy(k, 0.7, x, 1, atb, 1); }
    long started = System.nanoTime();
    for (int i = 0; i < calls; i++) { blas.dspr("U", k, 0.5, x, 1, ata); blas.daxpy(k, 0.7, x, 1, atb, 1); }
    System.out.println((System.nanoTime() - started) / (double) calls + " " + blas.getClass().getName());
  }
}
"""

SOLVE_JAVA = """
import dev.ludovic.netlib.lapack.NativeLAPACK;
import org.netlib.util.intW;
public class SolveBench {
  public static void main(String[] args) {
    int k = Integer.parseInt(args[0]);
    int calls = Integer.parseInt(args[1]);
    NativeLAPACK lapack = NativeLAPACK.getInstance();
    int m = k * (k + 1) / 2;
    double[] gram = new double[m], rhs = new double[k], ata = new double[m], atb = new double[k];
    java.util.Random random = new java.util.Random(1);
    for (int v = 0; v < k + 3; v++) {  // a sum of x x' plus a ridge: positive definite, as ALS's normal equations
      double[] x = new double[k];
      for (int i = 0; i < k; i++) x[i] = random.nextGaussian();
      for (int j = 0, p = 0; j < k; j++) for (int i = 0; i <= j; i++, p++) gram[p] += x[i] * x[j];
    }
    for (int j = 0; j < k; j++) { gram[j * (j + 1) / 2 + j] += 0.1; rhs[j] = random.nextGaussian(); }
    intW info = new intW(0);
    for (int i = 0; i < calls / 5; i++) {
      System.arraycopy(gram, 0, ata, 0, m); System.arraycopy(rhs, 0, atb, 0, k); lapack.dppsv("U", k, 1, ata, atb, k, info);
    }
    long started = System.nanoTime();
    for (int i = 0; i < calls; i++) {
      System.arraycopy(gram, 0, ata, 0, m); System.arraycopy(rhs, 0, atb, 0, k); lapack.dppsv("U", k, 1, ata, atb, k, info);
    }
    if (info.val != 0) throw new IllegalStateException("dppsv info " + info.val);
    System.out.println((System.nanoTime() - started) / (double) calls + " " + lapack.getClass().getName());
  }
}
"""


def netlib_classpath() -> str:
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    found = (sorted(jars.glob("blas-*.jar")) + sorted(jars.glob("lapack-*.jar"))
             + sorted(jars.glob("arpack_combined_all-*.jar")))
    if len(found) < 3:
        raise SystemExit(f"netlib's blas, lapack and arpack_combined_all jars are not in {jars}")
    return os.pathsep.join(str(p) for p in found)


def compile_program(folder: Path, classpath: str) -> None:
    sources = []
    for name, source in (("PairBench", JAVA), ("SolveBench", SOLVE_JAVA)):
        (folder / f"{name}.java").write_text(source)
        sources.append(str(folder / f"{name}.java"))
    subprocess.run(["javac", "-cp", classpath, "-d", str(folder), *sources], check=True)


def time_pair(folder: Path, classpath: str, library: str, rank: int) -> float:
    return _time(folder, classpath, "PairBench", "blas", library, rank, CALLS, "JNIBLAS")


def time_solve(folder: Path, classpath: str, library: str, rank: int) -> float:
    calls = int(min(500_000, max(20_000, SOLVE_WORK / rank ** 3)))
    return _time(folder, classpath, "SolveBench", "lapack", library, rank, calls, "JNILAPACK")


def _time(folder: Path, classpath: str, program: str, which: str, library: str, rank: int, calls: int,
          expected: str) -> float:
    cmd = ["java", f"-Ddev.ludovic.netlib.{which}.nativeLibPath={library}", "-cp",
           f"{classpath}{os.pathsep}{folder}", program, str(rank), str(calls)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    if not out[1].endswith(expected):
        raise RuntimeError(f"{library} was not loaded (netlib answered with {out[1]})")
    return float(out[0])


def main(argv=None) -> int:
    from models.als_blas import DEFAULT_LIBRARY

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="16,32,64,128")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--library", default=str(DEFAULT_LIBRARY), help="our library (default: make als-blas's)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    if not Path(args.library).is_file():
        raise SystemExit(f"{args.library} is missing: run `make als-blas` first")
    classpath = netlib_classpath()
    records = []
    with tempfile.TemporaryDirectory(prefix="bench-als-blas-") as tmp:
        compile_program(Path(tmp), classpath)
        for rank in (int(r) for r in args.ranks.split(",")):
            ours, system, ours_solve, system_solve = [], [], [], []
            for _ in range(args.rounds):  # in turns, so that a noisy minute hits both
                ours.append(time_pair(Path(tmp), classpath, args.library, rank))
                system.append(time_pair(Path(tmp), classpath, SYSTEM_LIBRARY, rank))
                ours_solve.append(time_solve(Path(tmp), classpath, args.library, rank))
                system_solve.append(time_solve(Path(tmp), classpath, SYSTEM_LAPACK, rank))
            record = {"rank": rank, "ours_ns": min(ours), "openblas_ns": min(system),
                      "speedup": round(min(system) / min(ours), 2), "ours_rounds_ns": ours,
                      "openblas_rounds_ns": system, "calls": CALLS,
                      "dppsv_ours_ns": min(ours_solve), "dppsv_openblas_ns": min(system_solve),
                      "dppsv_speedup": round(min(system_solve) / min(ours_solve), 2),
                      "dppsv_ours_rounds_ns": ours_solve, "dppsv_openblas_rounds_ns": system_solve,
                      "system_library": os.path.realpath(f"/usr/lib/{platform.machine()}-linux-gnu/{SYSTEM_LIBRARY}"),
                      "load_avg_1m": os.getloadavg()[0]}
            records.append(record)
            print(f"rank {rank:4d}: ours {record['ours_ns']:7.1f} ns, OpenBLAS {record['openblas_ns']:7.1f} ns "
                  f"per dspr + daxpy -> {record['speedup']}x; dppsv ours {record['dppsv_ours_ns']:9.0f} ns, "
                  f"OpenBLAS {record['dppsv_openblas_ns']:9.0f} ns -> {record['dppsv_speedup']}x", flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(records, indent=2) + "\n")
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
