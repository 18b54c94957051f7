"""Benchmark each speed trick against its reference path: the whole job's wall time, with and without it.

    make bench-tricks                        # = .venv/bin/python bench/tricks.py
    .venv/bin/python bench/tricks.py --scoring 100000x20000 --training 32:1000000,128:200000

A trick stays only where it buys at least 10% of its job (models/speed.py lists the kept ones). Each variant runs
in a fresh process with a fresh JVM (local[2]), the variants of one job in turns, ``--rounds`` times; the fastest
run of each is compared (load only ever adds time on a shared machine), and every time is kept.

* scoring (models.topn.recommend_top_n over Parquet factors and seen pairs, as jobs.score runs it; data from
  bench/scoring.py): ``tricks`` (the default), ``reference`` (RECSYS_REFERENCE_PATH=1: every trick off) and
  ``through_spark`` (only the direct Parquet reads off).
* training (models.als.fit_als of ``--iterations`` on generated implicit pairs, data from bench/training.py) at
  each rank given: ``tricks`` (Spark ALS's BLAS library, models/als_blas.py), ``reference`` (netlib on the
  system's OpenBLAS, one thread per task as the session factory pins it) and ``reference_blas_threads`` (the same
  with OpenBLAS's own thread pool).

Writes bench/results/tricks.json: per job and setting, each variant's runs and best time, and each trick's gain:
1 - best(tricks) / best(without the trick).
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
RESULTS = ROOT / "bench" / "results" / "tricks.json"

# variant -> (recommend_top_n keywords, environment)
SCORING_VARIANTS = {
    "tricks": ({}, {}),
    "reference": ({}, {"RECSYS_REFERENCE_PATH": "1"}),
    "through_spark": ({"direct_read": False}, {}),
}
# reference: one OpenBLAS thread per task, as the session factory sets it; reference_blas_threads: the same with
# OpenBLAS's own thread pool (one thread per core), what the pin avoids
TRAINING_VARIANTS = {"tricks": {}, "reference": {"RECSYS_REFERENCE_PATH": "1"},
                     "reference_blas_threads": {"RECSYS_REFERENCE_PATH": "1",
                                                "OPENBLAS_NUM_THREADS": str(os.cpu_count() or 1)}}


def score_once(folder: Path, n: int, keywords: dict) -> dict:
    """Inside a fresh process: a warm-up on a toy problem, then the timed scoring job."""
    from bench import scoring

    from models.topn import recommend_top_n

    spark = scoring.spark_session()
    scoring.warm_engine(spark, folder / "toy")
    users, items, seen = (spark.read.parquet(str(folder / f"{name}.parquet")) for name in ("users", "items", "seen"))
    started = time.perf_counter()
    recommend_top_n(users, items, seen, n=n, **keywords).write.format("noop").mode("overwrite").save()
    seconds = time.perf_counter() - started
    spark.stop()
    return {"seconds": seconds}


def train_once(path: Path, rank: int, iterations: int) -> dict:
    """Inside a fresh process: the input cached, a 1-iteration warm-up fit, then the timed fit."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark import StorageLevel

    from jobs.spark_session import build_spark
    from models import als_blas
    from models.als import AlsParams, fit_als

    spark = build_spark("bench-tricks-training", master="local[2]", log_level="ERROR",
                        conf={"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2",
                              "spark.driver.memory": "8g"})
    data = spark.read.parquet(str(path)).repartition(2).persist(StorageLevel.MEMORY_AND_DISK)
    data.count()
    checkpoints = tempfile.mkdtemp(prefix="bench-tricks-ckpt-")
    fit_als(data, AlsParams(rank=rank, max_iter=1, implicit=True, seed=1), checkpoint_dir=checkpoints)
    started = time.perf_counter()
    fitted = fit_als(data, AlsParams(rank=rank, max_iter=iterations, reg_param=0.1, alpha=1.0, implicit=True, seed=1),
                     checkpoint_dir=checkpoints)
    fitted.user_factors.count()
    seconds = time.perf_counter() - started
    blas = als_blas.loaded_library(spark)
    spark.stop()
    return {"seconds": seconds, "blas": blas}


def run_child(args: list[str], env: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", **env})
    if out.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def in_turns(variants: dict, rounds: int, run) -> dict:
    """Run every variant ``rounds`` times in turns; {variant: {"runs": [...], "best": s}}."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, spec in variants.items():
            result = run(spec)
            times[name].append(round(result["seconds"], 2))
            print(f"    {name:<14} {result['seconds']:7.2f} s  (load {os.getloadavg()[0]:.1f})", flush=True)
    return {name: {"runs": runs, "best": min(runs)} for name, runs in times.items()}


def gains(record: dict, tricks: dict) -> dict:
    """Each trick's gain: 1 - best time with every trick / best time without this one."""
    best = record["tricks"]["best"]
    return {trick: round(1 - best / record[without]["best"], 3) for trick, without in tricks.items()}


def bench_scoring(size: str, rank: int, n: int, rounds: int, workdir: Path) -> dict:
    from bench import scoring

    users, items = (int(x) for x in size.lower().split("x"))
    folder = workdir / f"scoring-{size}"
    info = scoring.make_data(folder, users, items, rank, seed=42)
    print(f"== scoring {users:,} users x {items:,} items, rank {rank}, n {n} ({info['seen_pairs']:,} seen pairs)",
          flush=True)
    record = in_turns(SCORING_VARIANTS, rounds, lambda spec: run_child(
        ["--score-child", str(folder), "--n", str(n), "--keywords", json.dumps(spec[0])], spec[1]))
    return {"job": "scoring", "users": users, "items": items, "rank": rank, "n": n, **info, "variants": record,
            "gain": gains(record, {"all": "reference", "direct_read": "through_spark"})}


def bench_training(setting: str, iterations: int, rounds: int, workdir: Path) -> dict:
    from bench import training

    rank, pairs = (int(x) for x in setting.split(":"))
    path = workdir / f"pairs-{pairs}.parquet"
    shape = training.make_data(pairs, 7, path) if not path.exists() else {"interactions": pairs}
    print(f"== training rank {rank}, {pairs:,} pairs, {iterations} iterations", flush=True)
    record = in_turns(TRAINING_VARIANTS, rounds, lambda env: run_child(
        ["--train-child", str(path), "--rank", str(rank), "--iterations", str(iterations)], env))
    return {"job": "training", "rank": rank, "iterations": iterations, **shape, "variants": record,
            "gain": {**gains(record, {"als_blas": "reference"}),
                     "one_blas_thread": round(1 - record["reference"]["best"] / record["reference_blas_threads"]["best"], 3)}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scoring", default="100000x20000", help="USERSxITEMS sizes, comma separated ('' skips)")
    parser.add_argument("--scoring-rank", type=int, default=64)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--training", default="32:1000000,64:1000000,128:200000,200:100000",
                        help="RANK:PAIRS settings, comma separated ('' skips)")
    parser.add_argument("--iterations", type=int, default=10, help="ALS iterations of each timed fit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--score-child", help=argparse.SUPPRESS)
    parser.add_argument("--train-child", help=argparse.SUPPRESS)
    parser.add_argument("--keywords", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=32, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.score_child:
        print(json.dumps(score_once(Path(args.score_child), args.n, json.loads(args.keywords))))
        return 0
    if args.train_child:
        print(json.dumps(train_once(Path(args.train_child), args.rank, args.iterations)))
        return 0

    records = []
    with tempfile.TemporaryDirectory(prefix="bench-tricks-") as tmp:
        jobs = [(bench_scoring, (s, args.scoring_rank, args.n)) for s in args.scoring.split(",") if s]
        jobs += [(bench_training, (t, args.iterations)) for t in args.training.split(",") if t]
        for bench, params in jobs:
            record = bench(*params, args.rounds, Path(tmp))
            record["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                                 "python": platform.python_version(), "load_avg_1m_after": round(os.getloadavg()[0], 1)}
            records.append(record)
            print(f"   gain: {record['gain']}", flush=True)
            Path(args.output).write_text(json.dumps(records, indent=2) + "\n")  # keep what is done so far
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
