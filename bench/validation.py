"""Benchmark what the data-quality gates add to ingest, side by side in one Spark session.

    make bench-validation                     # = .venv/bin/python bench/validation.py (10M events)
    .venv/bin/python bench/validation.py --events 1000000 --repeats 2

1. Generates ``--events`` rating lines once (jobs.generate_logs; reused from ``--work-dir`` while the size and
   seed match), with the generator's default 1% malformed and 1% duplicate lines.
2. Warms the JVM and great-expectations up on a small input (not measured), so neither side pays for it.
3. Per repeat, into a fresh lake and as jobs.nightly runs them: jobs.ingest (bronze, quarantine, silver MERGE),
   then the gates that follow it, through the same call (jobs.validate.gate_step "after" "ingest"): raw (the
   run's accounting and its quarantined lines) and silver (the whole silver table). ``ingest_s`` is the ingest
   job; ``validation_s`` is the gates, everything included: reading, great-expectations, profiles and drift,
   the JSON report, the meta/validation_runs row and Data Docs.
4. ``overhead`` = validation_s / ingest_s (median over repeats); the goal is at most 0.20.
5. For reference, the raw gate run ahead of ingest on the input files (``--stage raw --input``, which parses
   them once more): ``pre_ingest_raw_gate_s``. It is not part of the nightly flow, so not of ``validation_s``.

Writes bench/results/validation.json: ``events``, ``ingest_s``, ``validation_s``, ``overhead`` and per-repeat and
per-gate figures, the Spark settings, and the machine's load average (the machine may be shared).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

RESULTS = ROOT / "bench" / "results" / "validation.json"
TARGET_OVERHEAD = 0.20


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="rating lines to ingest")
    parser.add_argument("--users", type=int, default=None, help="default: events / 50")
    parser.add_argument("--items", type=int, default=None, help="default: events / 500 (at least 500)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "recommender-bench-validation"),
                        help="generated input and lakes (the input is kept for the next run)")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--master", default="local[*]")
    return parser


def ensure_input(spark, folder: Path, *, events: int, users: int, items: int, seed: int) -> str:
    from jobs import generate_logs

    stamp = folder / "PARAMS.json"
    params = {"events": events, "users": users, "items": items, "seed": seed}
    if stamp.is_file() and json.loads(stamp.read_text()) == params:
        return str(folder / "lines")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    args = generate_logs.build_parser().parse_args(
        ["--output", str(folder / "lines"), "--ratings", str(events), "--users", str(users), "--items", str(items),
         "--seed", str(seed), "--files", "8", "--clusters", "20"])
    generate_logs.run(spark, args)
    stamp.write_text(json.dumps(params))
    return str(folder / "lines")


def one_round(spark, lines: str, lake: Path) -> dict:
    """ingest -> the gates after it, into a fresh lake (then the optional pre-ingest raw gate); seconds of each."""
    from jobs import ingest
    from jobs.cli import ingest_options_from_args
    from lake.registry import Lake
    from validation.gates import GateOptions, gates_after, run_gate

    shutil.rmtree(lake, ignore_errors=True)
    argv = ["--lake", str(lake), "--input", lines, "--format", "movielens"]
    started = time.perf_counter()
    args = ingest.build_parser().parse_args(argv)
    summary = ingest.run(spark, args)
    ingest_s = time.perf_counter() - started

    started = time.perf_counter()  # exactly what the nightly flow runs after ingest
    options = ingest_options_from_args(args)
    results = gates_after(spark, "ingest", Lake(str(lake)), ingest_summary=summary, ingest_options=options,
                          fmt="movielens")
    validation_s = time.perf_counter() - started

    started = time.perf_counter()
    run_gate(spark, "raw", Lake(str(lake)), input=lines, fmt="movielens", ingest_options=options,
             options=GateOptions(record=False, drift=False))
    pre_ingest_s = time.perf_counter() - started
    return {
        "ingest_s": round(ingest_s, 2), "validation_s": round(validation_s, 2),
        "overhead": round(validation_s / ingest_s, 4),
        # each gate's checks alone (great-expectations, profile, drift); the rest of validation_s is reading the
        # run history once, the JSON reports, the meta/validation_runs rows and Data Docs
        **{f"{r.stage}_checks_s": round(r.seconds, 2) for r in results},
        "pre_ingest_raw_gate_s": round(pre_ingest_s, 2),
        "lines_read": summary["read"], "silver_rows": summary["loaded"], "quarantined": summary["quarantined"],
        "load_average_after": list(os.getloadavg()),
    }


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from jobs.spark_session import DELTA_SNAPSHOT_PARTITIONS, build_spark

    users = args.users or max(100, args.events // 50)
    items = args.items or max(500, args.events // 500)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    spark = build_spark("bench-validation", master=args.master, conf={"spark.ui.enabled": "false"}, log_level="ERROR")
    try:
        load_before = list(os.getloadavg())
        lines = ensure_input(spark, work / f"input-{args.events}", events=args.events, users=users, items=items,
                             seed=args.seed)
        warm = ensure_input(spark, work / "input-warmup", events=20_000, users=500, items=500, seed=args.seed)
        one_round(spark, warm, work / "lake-warmup")  # JIT, class loading, great-expectations imports
        rounds = []
        for i in range(args.repeats):
            result = one_round(spark, lines, work / "lake")
            print(f"round {i + 1}: ingest {result['ingest_s']} s, gates {result['validation_s']} s "
                  f"(checks: raw {result['raw_checks_s']} s, silver {result['silver_checks_s']} s), "
                  f"overhead {result['overhead']:.1%}; raw gate ahead of ingest {result['pre_ingest_raw_gate_s']} s",
                  flush=True)
            rounds.append(result)
        settings = {k: spark.conf.get(k, None) for k in ("spark.master", "spark.driver.memory",
                                                          "spark.sql.shuffle.partitions", DELTA_SNAPSHOT_PARTITIONS)}
    finally:
        spark.stop()

    ingest_s = statistics.median(r["ingest_s"] for r in rounds)
    validation_s = statistics.median(r["validation_s"] for r in rounds)
    record = {
        "events": args.events, "users": users, "items": items,
        "ingest_s": ingest_s, "validation_s": validation_s, "overhead": round(validation_s / ingest_s, 4),
        "target_overhead": TARGET_OVERHEAD, "within_target": validation_s / ingest_s <= TARGET_OVERHEAD,
        "gates": ["raw (after ingest: the run's accounting and quarantined lines)", "silver (whole table)"],
        "pre_ingest_raw_gate_s": statistics.median(r["pre_ingest_raw_gate_s"] for r in rounds),
        "rounds": rounds,
        "spark": settings, "cpus": os.cpu_count(), "load_average_before": load_before,
        "python": platform.python_version(), "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"validation adds {record['overhead']:.1%} to ingest ({validation_s} s vs {ingest_s} s, "
          f"{args.events:,} events) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
