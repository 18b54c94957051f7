"""Ingest benchmark: jobs.ingest end to end versus a plain Spark copy of the same files into Delta.

    python bench/ingest.py                        # 1M and 10M events (make bench-ingest)
    python bench/ingest.py --sizes 1000000,3000000 --out /tmp/ingest.json

For each size the generator (jobs.generate_logs --kind events, CSV, default fault rates plus bots and invalid
UTF-8 lines) writes the log once; then, in the same run, each phase runs in a fresh Spark driver process:

- plain copy: ``spark.read.csv`` (all columns as strings, no validation) written straight to a new Delta table;
- ingest: ``jobs.ingest`` into a new lake (bronze, quarantine, silver MERGE, meta tables, conservation check);
- floor: the least any ingest that delivers the issue's two full tables must do, with none of the cleaning: the raw
  lines with their file, offset and run id appended to a bronze table (no parse), then the CSV read again, typed
  (numbers, times) and appended to a silver table partitioned by event date (no validation, keys, duplicate search,
  quarantine or accounting). Both tables get jobs.ingest's own Delta settings (statistics on a few columns, no
  optimizeWrite, silver's sorted partitioned write), the cheapest this stack offers. ``floor_ratio`` (floor_s /
  plain_copy_s) is the lower bound of ``ratio`` for this design on this machine;
- next batch: ``jobs.ingest`` of a second delivery into the lake the ingest phase built: a new log of the same size
  over the next 14 days (another seed; its late events fall into the first log's days) and a tenth of the first
  log re-sent with every time moved 7 days later (the same user and event ids: all duplicates of silver rows in
  other date partitions). Its ``next_steps_s`` show the cost of one event identity across days: the key -> date
  index step (flow.event_keys: the index read, the batch's pairs appended) and the silver MERGE, which reads the
  batch's partitions plus those the re-sent keys live in (``next_partitions_read``).

Each phase first warms the JIT on a 50k-row copy (the same for both), then is timed from the first read to the
last commit (JVM start-up excluded). Besides wall time, the CPU seconds the driver JVM and Python used are
recorded: on a shared machine they measure the work done, where wall time also measures waiting for other
processes. Peak resident memory is the high-water mark (VmHWM) of the driver JVM plus the Python process.
Results go to ``--out`` as a list of records: events, lines, input_mb, ingest_s, plain_copy_s, ratio (ingest_s /
plain_copy_s), floor_s, floor_bronze_s, floor_silver_s, floor_ratio, floor_cpu_s, events_per_s, ingest_cpu_s,
plain_copy_cpu_s, cpu_ratio, peak_rss_mb, plain_copy_peak_rss_mb, ingest step times, the next batch's lines, time,
CPU, step times, loaded, duplicates already in silver and partitions read, and the machine's load average before
and after.
A benchmark, not a test: nothing here asserts.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GENERATOR = dict(users=200_000, items=50_000, clusters=16, days=14, start_date="2024-03-01", fault_rate=0.01,
                 duplicate_rate=0.01, near_duplicate_rate=0.01, bot_users=3, bot_events=20_000,
                 invalid_utf8_lines=100, late_rate=0.02)
CSV_SCHEMA = "user_id string, item_id string, event_type string, event_ts string, value string, event_id string"
BOT_LIMIT = 5_000
NEXT_LOG = dict(seed=8, start_date="2024-03-15")  # the next delivery's new events: the 14 days after the first log's
# a tenth of the first log again (same seed), 7 days later (the weekday pattern, so each event, is the same):
# the same user and event ids with every time moved a week
RESEND_LOG = dict(start_date="2024-03-08", duplicate_rate=0.0, near_duplicate_rate=0.0, bot_users=0,
                  invalid_utf8_lines=0)
RESEND_SHARE = 10


def peak_rss_mb(spark) -> float:
    """High-water resident memory of the driver JVM plus this Python process, in MB (Linux /proc)."""
    def hwm(pid: int) -> float:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())  # noqa: SLF001
    return round(hwm(jvm_pid) + hwm(os.getpid()), 1)


def cpu_seconds(spark) -> float:
    """User + system CPU seconds used so far by the driver JVM (where local-mode Spark does all its work) and by
    this Python process. On a shared machine this is steadier than wall time: it counts work, not waiting."""
    tick = os.sysconf("SC_CLK_TCK")

    def used(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())  # noqa: SLF001
    return used(jvm_pid) + used(os.getpid())


def warm_up(spark, input_dir: str) -> None:
    """Let the JIT compile the CSV reader and the Delta writer on a small slice first, the same for both phases."""
    sample = spark.read.schema(CSV_SCHEMA).csv(input_dir).limit(50_000)
    sample.write.format("delta").mode("overwrite").save(f"/tmp/bench-ingest-warmup-{os.getpid()}")
    shutil.rmtree(f"/tmp/bench-ingest-warmup-{os.getpid()}", ignore_errors=True)


def floor_copy(spark, work_dir: Path, input_dir: str) -> dict:
    """Bronze (raw lines, no parse) then silver (typed, partitioned by date, no cleaning): see the module's text."""
    from pyspark.sql import functions as F

    from flow.ingest import BRONZE_PROPERTIES, SILVER_PROPERTIES, SILVER_WRITE_CONF
    from lake.tables import new_table_properties_conf, session_conf
    from transforms import columns as C

    started, cpu = time.time(), cpu_seconds(spark)
    stamp = [F.lit("floor-run").alias(C.INGEST_RUN_ID), F.current_timestamp().alias(C.INGESTED_AT)]
    raw = spark.read.text(input_dir).select(F.col("value").alias(C.RAW),
                                            F.col("_metadata.file_path").alias(C.SOURCE_FILE),
                                            F.col("_metadata.file_block_start").alias(C.SOURCE_OFFSET), *stamp)
    with session_conf(spark, new_table_properties_conf(BRONZE_PROPERTIES)):
        raw.write.format("delta").mode("append").option("optimizeWrite", "false").save(str(work_dir / "floor-bronze"))
    bronze_s = time.time() - started
    ts = F.expr("try_to_timestamp(event_ts)")
    typed = spark.read.schema(CSV_SCHEMA).csv(input_dir).select(
        C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, F.expr("try_cast(value as double)").alias(C.VALUE), ts.alias(C.EVENT_TS),
        F.col("event_id").alias(C.SOURCE_EVENT_ID), F.to_date(ts).alias(C.EVENT_DATE),
        F.col("_metadata.file_path").alias(C.SOURCE_FILE), *stamp)
    with session_conf(spark, {**SILVER_WRITE_CONF, **new_table_properties_conf(SILVER_PROPERTIES)}):
        (typed.write.format("delta").mode("append").option("optimizeWrite", "false").partitionBy(C.EVENT_DATE)
         .save(str(work_dir / "floor-silver")))
    seconds = time.time() - started
    return {"seconds": round(seconds, 2), "bronze_s": round(bronze_s, 2), "silver_s": round(seconds - bronze_s, 2),
            "cpu_s": round(cpu_seconds(spark) - cpu, 1), "peak_rss_mb": peak_rss_mb(spark)}


def phase(name: str, work_dir: Path, input_dir: str, events: int, conf: list[str]) -> dict:
    """Run one phase in this process (a fresh driver) and return its timing."""
    from jobs.cli import parse_conf
    from jobs.spark_session import build_spark

    spark = build_spark(f"bench-ingest-{name}", master="local[2]", conf=parse_conf(conf), log_level="ERROR")
    try:
        if name == "generate":
            return generate(spark, input_dir, events, GENERATOR)
        if name == "generate-next":
            new = generate(spark, f"{input_dir}/new", events, {**GENERATOR, **NEXT_LOG})
            resent = generate(spark, f"{input_dir}/resent", events // RESEND_SHARE, {**GENERATOR, **RESEND_LOG})
            return {"seconds": round(new["seconds"] + resent["seconds"], 2), "lines": new["lines"] + resent["lines"]}
        warm_up(spark, input_dir)
        if name == "plain":
            target = str(work_dir / "plain")
            started, cpu = time.time(), cpu_seconds(spark)
            (spark.read.schema(CSV_SCHEMA).csv(input_dir).write.format("delta").mode("overwrite")
             .option("optimizeWrite", "false").save(target))
            seconds = time.time() - started
            return {"seconds": round(seconds, 2), "cpu_s": round(cpu_seconds(spark) - cpu, 1),
                    "peak_rss_mb": peak_rss_mb(spark)}
        if name == "floor":
            return floor_copy(spark, work_dir, input_dir)
        if name == "ingest":  # the first delivery into a new lake; then the next one (its input_dir) into the same
            return ingest_into(spark, work_dir / "lake", input_dir)
        raise ValueError(f"unknown phase {name!r}")
    finally:
        spark.stop()


def generate(spark, output: str, events: int, settings: dict) -> dict:
    """Write a generated event log (CSV) of ``events`` events with generator ``settings`` to ``output``."""
    from jobs import generate_logs

    argv = ["--kind", "events", "--output", output, "--events", str(events),
            "--files", str(max(2, events // 500_000)), "--output-format", "csv"]
    for key, value in settings.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    started = time.time()
    summary = generate_logs.run(spark, generate_logs.build_parser().parse_args(argv))
    return {"seconds": round(time.time() - started, 2), "lines": summary["lines"]}


def ingest_into(spark, lake: Path, input_dir: str) -> dict:
    """jobs.ingest of ``input_dir`` into ``lake``, timed from the first read to the last commit."""
    from jobs import ingest

    argv = ["--input", input_dir, "--format", "events", "--lake", str(lake),
            "--bot-max-events-per-day", str(BOT_LIMIT), "--progress-every", "60"]
    started, cpu = time.time(), cpu_seconds(spark)
    summary = ingest.run(spark, ingest.build_parser().parse_args(argv))
    seconds = time.time() - started
    return {"seconds": round(seconds, 2), "cpu_s": round(cpu_seconds(spark) - cpu, 1),
            "peak_rss_mb": peak_rss_mb(spark), "summary": summary}


def run_phase(name: str, work_dir: Path, input_dir: str, events: int, conf: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", name, "--work-dir", str(work_dir),
           "--input-dir", input_dir, "--events", str(events)] + [a for c in conf for a in ("--conf", c)]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    if out.returncode:
        raise RuntimeError(f"phase {name} failed:\n{out.stderr[-4000:]}")
    result_line = [line for line in out.stdout.splitlines() if line.startswith("BENCH_RESULT ")][-1]
    return json.loads(result_line[len("BENCH_RESULT "):])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated event counts")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "ingest.json"))
    parser.add_argument("--work-root", default="/tmp/bench-ingest", help="scratch folder (replaced)")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="Spark settings")
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--input-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        result = phase(args.phase, Path(args.work_dir), args.input_dir, args.events, args.conf)
        print("BENCH_RESULT " + json.dumps(result, default=str))
        return 0

    records = []
    for events in [int(s) for s in args.sizes.split(",")]:
        work = Path(args.work_root) / str(events)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        input_dir = str(work / "input")
        gen = run_phase("generate", work, input_dir, events, args.conf)
        input_mb = sum(p.stat().st_size for p in Path(input_dir).glob("part-*")) / 1e6
        load_before = os.getloadavg()[0]
        plain = run_phase("plain", work, input_dir, events, args.conf)
        ingest = run_phase("ingest", work, input_dir, events, args.conf)
        next_dir = str(work / "input-next")
        gen_next = run_phase("generate-next", work, next_dir, events, args.conf)
        nxt = run_phase("ingest", work, next_dir, events, args.conf)
        floor = run_phase("floor", work, input_dir, events, args.conf)
        summary, next_summary = ingest["summary"], nxt["summary"]
        record = {
            "events": events, "lines": gen["lines"], "input_mb": round(input_mb, 1),
            "ingest_s": ingest["seconds"], "plain_copy_s": plain["seconds"],
            "ratio": round(ingest["seconds"] / plain["seconds"], 2),
            "events_per_s": round(gen["lines"] / ingest["seconds"]),
            "plain_copy_events_per_s": round(gen["lines"] / plain["seconds"]),
            "floor_s": floor["seconds"], "floor_bronze_s": floor["bronze_s"], "floor_silver_s": floor["silver_s"],
            "floor_ratio": round(floor["seconds"] / plain["seconds"], 2), "floor_cpu_s": floor["cpu_s"],
            "ingest_cpu_s": ingest["cpu_s"], "plain_copy_cpu_s": plain["cpu_s"],
            "cpu_ratio": round(ingest["cpu_s"] / plain["cpu_s"], 2),
            "peak_rss_mb": ingest["peak_rss_mb"], "plain_copy_peak_rss_mb": plain["peak_rss_mb"],
            "ingest_steps_s": summary.get("steps"), "loaded": summary["loaded"],
            "duplicates": summary["duplicates"], "quarantined": summary["quarantined"],
            "next_lines": gen_next["lines"], "next_ingest_s": nxt["seconds"], "next_cpu_s": nxt["cpu_s"],
            "next_steps_s": next_summary.get("steps"), "next_loaded": next_summary["loaded"],
            "next_duplicates_in_silver": next_summary["duplicates_in_silver"],
            "next_partitions_read": next_summary.get("silver_partitions_read"),
            "generate_s": gen["seconds"], "cores": os.cpu_count(),
            "load_avg_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)],
            "spark": "local[2], driver 4g" + ("; " + "; ".join(args.conf) if args.conf else ""),
        }
        records.append(record)
        print(json.dumps(record), flush=True)
        shutil.rmtree(work, ignore_errors=True)
    if len(records) > 1:
        small, large = records[0], records[-1]
        for key in ("ingest_s", "ingest_cpu_s"):
            growth = (large[key] / small[key]) / (large["events"] / small["events"])
            print(f"{key} per event at {large['events']:,} vs {small['events']:,} events: x{growth:.2f} (1.0 = linear)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(records, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
