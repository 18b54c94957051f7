"""Benchmark the call Spark ALS makes once per rating: dspr + daxpy through netlib's JNIBLAS, with our library
(models/native/als_blas.c) and with the system's libblas.so.3 (OpenBLAS) alone.

    make bench-als-blas                 # = .venv/bin/python bench/als_blas.py
    .venv/bin/python bench/als_blas.py --ranks 16,32,64,128 --rounds 3

A small Java program (compiled here with javac against the netlib jar pyspark ships) calls
``BLAS.dspr("U", k, c, x, 1, ata)`` and ``BLAS.daxpy(k, b, x, 1, atb, 1)`` as ALS.NormalEquation.add does, 5M
times after a warm-up, in a fresh JVM per library (netlib picks its library once per JVM, from
``-Ddev.ludovic.netlib.blas.nativeLibPath``). The libraries take turns, ``--rounds`` times; the fastest round of
each is kept and every round recorded. Writes bench/results/als_blas.json: a list of records with rank,
``ours_ns``, ``openblas_ns`` (ns per dspr + daxpy pair), ``speedup`` and the rounds.
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
CALLS = 5_000_000

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


def netlib_classpath() -> str:
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    found = sorted(jars.glob("blas-*.jar")) + sorted(jars.glob("arpack_combined_all-*.jar"))
    if len(found) < 2:
        raise SystemExit(f"netlib's blas and arpack_combined_all jars are not in {jars}")
    return os.pathsep.join(str(p) for p in found)


def compile_program(folder: Path, classpath: str) -> None:
    (folder / "PairBench.java").write_text(JAVA)
    subprocess.run(["javac", "-cp", classpath, "-d", str(folder), str(folder / "PairBench.java")], check=True)


def time_pair(folder: Path, classpath: str, library: str, rank: int) -> float:
    cmd = ["java", f"-Ddev.ludovic.netlib.blas.nativeLibPath={library}", "-cp", f"{classpath}{os.pathsep}{folder}",
           "PairBench", str(rank), str(CALLS)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    if not out[1].endswith("JNIBLAS"):
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
            ours, system = [], []
            for _ in range(args.rounds):  # in turns, so that a noisy minute hits both
                ours.append(time_pair(Path(tmp), classpath, args.library, rank))
                system.append(time_pair(Path(tmp), classpath, SYSTEM_LIBRARY, rank))
            record = {"rank": rank, "ours_ns": min(ours), "openblas_ns": min(system),
                      "speedup": round(min(system) / min(ours), 2), "ours_rounds_ns": ours,
                      "openblas_rounds_ns": system, "calls": CALLS,
                      "system_library": os.path.realpath(f"/usr/lib/{platform.machine()}-linux-gnu/{SYSTEM_LIBRARY}"),
                      "load_avg_1m": os.getloadavg()[0]}
            records.append(record)
            print(f"rank {rank:4d}: ours {record['ours_ns']:7.1f} ns, OpenBLAS {record['openblas_ns']:7.1f} ns "
                  f"per dspr + daxpy -> {record['speedup']}x", flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(records, indent=2) + "\n")
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
