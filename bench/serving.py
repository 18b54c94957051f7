"""Benchmark the lookup service against the floor: the same seldon-core-microservice serving a trivial model.

    make bench-serving                       # = .venv-serving/bin/python bench/serving.py
    .venv-serving/bin/python bench/serving.py --users 1000000 --n 100 --duration 6 --rounds 3 [--no-tune]

What it does, all on this machine (loopback only, every run bounded in time):

1. Writes a synthetic snapshot once (``--data-dir``, reused while its parameters match): ``--users`` users with
   ``--n`` items each from a catalogue of ``--items`` ids, in the contract's parquet layout (as jobs.publish writes).
2. Tuning sweep (unless ``--no-tune``): for several (gunicorn workers, threads) settings, floor and lookup service at
   16 concurrent clients, two alternating rounds each; it chose serving/serve.py's defaults (2 workers x 2 threads).
3. Main runs with the production settings (serving/serve.py defaults): at 1, 4 and 16 concurrent clients, ``--rounds``
   alternating runs of the floor and of the lookup service (so both see the same machine load), ``--duration`` s each.
4. Hot reload: while the load generator runs against the lookup service, a new version is published (same files,
   new manifest) and LATEST switched; the service verifies, converts and swaps it under load. Then the floor runs
   for as long at the same concurrency.
5. Memory: resident (RSS), proportional (PSS: shared pages split between processes) and private (anonymous)
   memory of every process of both services with the snapshot loaded.

Load generator: ``wrk`` (``apt-get install wrk``) with a Lua script that sends ``{"jsonData": {"user_id": ..., "k": 10}}``
for random users (10 % unknown, who get the popular fallback), the same requests to both services.

Writes bench/results/serving.json: a list of records with ``phase`` ("tuning" | "main" | "hot_reload"),
``concurrency``, ``users_loaded``, ``p50_ms``, ``p99_ms``, ``rps``, ``errors`` and the floor's ``floor_p50_ms``,
``floor_p99_ms``, ``floor_rps``, ``floor_errors``, plus the settings, memory figures, CPU time per request of each
service's processes (``cpu_ms_per_request``: steadier than latencies on a shared machine) and the 1-minute load
average after each measurement (other jobs on the machine show there).

This file also defines ``FloorModel`` (the trivial model), which the floor service imports by name.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Run as a script, sys.path[0] is bench/, where this file would shadow the serving package: the repo root first.
if sys.path[0] != str(REPO_ROOT):
    sys.path.insert(0, str(REPO_ROOT))

FLOOR_INTERFACE = "bench.serving.FloorModel"
# (gunicorn workers, threads per worker) tried by the sweep; threads=1 runs gunicorn's sync worker (a connection
# per request), threads>1 its gthread worker (keep-alive).
TUNING_SETTINGS = [(1, 1), (2, 1), (3, 1), (1, 4), (2, 2), (2, 4), (3, 2)]


class _SkipMain(Exception):
    """--tune-only: leave out the main and hot-reload runs."""
PREDICT_PATH = "/api/v1.0/predictions"
FLOOR_ANSWER = {"user_id": "0", "item_ids": ["i1", "i2", "i3", "i4", "i5", "i6", "i7", "i8", "i9", "i10"],
                "scores": [1.0] * 10, "source": "popular", "fallback_count": 10, "model_version": "floor"}


class FloorModel:
    """The floor: the lookup service's Seldon entry point (predict_raw) answering a constant of the same shape.

    Same constructor parameters, same seldon-core-microservice (with the same fix to its metrics updates), same
    worker settings: what it costs is Seldon, gunicorn and Flask; the difference to the lookup service is the
    look-up itself, its request checks and its metrics.
    """

    def __init__(self, **parameters):
        # The same Seldon as the lookup service runs: with its fixes to Seldon's metrics updates (see there).
        from serving.recommender_service import patch_seldon_metric_updates

        patch_seldon_metric_updates()
        self.parameters = parameters

    def predict_raw(self, request):
        if isinstance(request, dict):
            return {"jsonData": FLOOR_ANSWER, "meta": {"tags": {"model_version": "floor"}}}
        from google.protobuf import json_format, struct_pb2
        from seldon_core.proto import prediction_pb2

        return prediction_pb2.SeldonMessage(jsonData=json_format.ParseDict(FLOOR_ANSWER, struct_pb2.Value()))

    def health_status(self):
        return {"ready": True}


# ---------------------------------------------------------------------------------------------------------------
# Synthetic snapshot
# ---------------------------------------------------------------------------------------------------------------

FIRST_USER = 1_000_000  # user ids are the strings FIRST_USER .. FIRST_USER + users - 1


def write_bench_snapshot(root: Path, *, users: int, n: int, items: int, version: str, seed: int = 7) -> Path:
    """A snapshot version like jobs.publish writes (sorted users, 500,000 users per file), from random lists."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from serving.snapshot import write_manifest

    rng = np.random.default_rng(seed)
    version_dir = root / version
    vocab = pa.array([f"item-{i}" for i in range(items)])
    per_file = 500_000
    for table_dir in ("user_recommendations", "popular_items"):
        (version_dir / table_dir).mkdir(parents=True, exist_ok=True)
    for part, start in enumerate(range(0, users, per_file)):
        count = min(per_file, users - start)
        user_ids = pa.array([str(FIRST_USER + u) for u in range(start, start + count)])
        # n distinct items per user: a random offset plus a fixed stride, modulo the catalogue
        base = rng.integers(0, items, size=(count, 1))
        idx = ((base + np.arange(n) * 7919) % items).astype(np.int32).ravel()
        scores = np.sort(rng.random((count, n), dtype=np.float32), axis=1)[:, ::-1].ravel()
        offsets = pa.array(np.arange(0, count * n + 1, n, dtype=np.int32))
        table = pa.table({
            "user_id": user_ids,
            "item_ids": pa.ListArray.from_arrays(offsets, pa.DictionaryArray.from_arrays(pa.array(idx), vocab)),
            "scores": pa.ListArray.from_arrays(offsets, pa.array(scores)),
        })
        # store_schema=False: the file's schema is then list<string>, as Spark writes it (dictionary pages inside)
        pq.write_table(table, version_dir / "user_recommendations" / f"part-{part:05d}.parquet", store_schema=False)
    popular = pa.table({"rank": pa.array(range(1, 1001), pa.int32()),
                        "item_id": pa.array([f"item-{i}" for i in range(1000)]),
                        "score": pa.array([float(1000 - r) for r in range(1000)], pa.float64())})
    pq.write_table(popular, version_dir / "popular_items" / "part-00000.parquet")
    write_manifest(version_dir, model_version=version, n=n)
    return version_dir


def republish(root: Path, source_version: str, new_version: str) -> Path:
    """A new version with the same files (hard links) and its own manifest: a reload of full size, quickly."""
    from serving.snapshot import set_latest, write_manifest

    source, target = root / source_version, root / new_version
    shutil.rmtree(target, ignore_errors=True)
    for folder in ("user_recommendations", "popular_items"):
        (target / folder).mkdir(parents=True)
        for path in (source / folder).glob("*.parquet"):
            os.link(path, target / folder / path.name)
    manifest = json.loads((source / "manifest.json").read_text())
    write_manifest(target, model_version=new_version, n=manifest["n"])
    set_latest(root, new_version)
    return target


def ensure_snapshot(data_dir: Path, *, users: int, n: int, items: int) -> Path:
    from serving.snapshot import set_latest

    root = data_dir / "snapshots"
    params = {"users": users, "n": n, "items": items, "format": 1}
    marker = data_dir / "params.json"
    if marker.exists() and json.loads(marker.read_text()) == params and (root / "bench-v1" / "manifest.json").exists():
        set_latest(root, "bench-v1")
        return root
    shutil.rmtree(data_dir, ignore_errors=True)
    root.mkdir(parents=True)
    started = time.monotonic()
    write_bench_snapshot(root, users=users, n=n, items=items, version="bench-v1")
    set_latest(root, "bench-v1")
    marker.write_text(json.dumps(params))
    print(f"wrote a {users:,}-user snapshot (n={n}) in {time.monotonic() - started:.0f} s under {root}", flush=True)
    return root


# ---------------------------------------------------------------------------------------------------------------
# Load generation (wrk)
# ---------------------------------------------------------------------------------------------------------------

WRK_SCRIPT = """
math.randomseed(%(seed)d)
local first, users = %(first)d, %(users)d
local headers = {["Content-Type"] = "application/json"}
request = function()
  local u = math.random(0, users + math.floor(users / 9))   -- about 10 %% unknown users
  local body = '{"jsonData": {"user_id": "' .. tostring(first + u) .. '", "k": 10}}'
  return wrk.format("POST", "%(path)s", headers, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, '
    .. '"max_us": %%d, "connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time so far of every process in the process group (the whole service)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "(comm)": state, ppid, pgrp, ..., utime at 11, stime at 12
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def run_wrk(service, *, concurrency: int, seconds: float, users: int, script_dir: Path, seed: int = 1) -> dict:
    """One wrk run against ``service``; also the service's CPU time per answered request (robust to a busy machine)."""
    port = service.http_port
    script = script_dir / f"lookup-{seed}.lua"
    script.write_text(WRK_SCRIPT % {"seed": seed, "first": FIRST_USER, "users": users, "path": PREDICT_PATH})
    threads = 1 if concurrency == 1 else 2
    command = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
               "-s", str(script), f"http://127.0.0.1:{port}{PREDICT_PATH}"]
    cpu_before = group_cpu_seconds(service.process.pid)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    cpu = group_cpu_seconds(service.process.pid) - cpu_before
    line = next((l for l in done.stdout.splitlines() if l.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result (exit {done.returncode}): {done.stdout}\n{done.stderr}")
    raw = json.loads(line[len("WRKJSON "):])
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    return {"p50_ms": raw["p50_us"] / 1000, "p99_ms": raw["p99_us"] / 1000, "max_ms": raw["max_us"] / 1000,
            "rps": raw["requests"] / (raw["duration_us"] / 1e6), "errors": errors, "requests": raw["requests"],
            "cpu_ms_per_request": 1000 * cpu / max(raw["requests"], 1)}


def combine(runs: list[dict]) -> dict:
    """Median over rounds of each figure (rounds alternate with the other service), errors summed."""
    return {"p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 3),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 3),
            "rps": round(statistics.median(r["rps"] for r in runs), 1),
            "errors": sum(r["errors"] for r in runs),
            "requests": sum(r["requests"] for r in runs),
            "cpu_ms_per_request": round(statistics.median(r["cpu_ms_per_request"] for r in runs), 3)}


# ---------------------------------------------------------------------------------------------------------------
# Services and memory
# ---------------------------------------------------------------------------------------------------------------


def memory_of(service) -> dict:
    """RSS, PSS and private anonymous memory (MB) summed over the service's processes (one process group)."""
    pgid = service.process.pid
    totals = {"rss_mb": 0.0, "pss_mb": 0.0, "anon_mb": 0.0, "processes": 0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            rollup = (entry / "smaps_rollup").read_text()
        except (OSError, ProcessLookupError):
            continue
        fields = {line.split(":")[0]: int(line.split()[1]) for line in rollup.splitlines()[1:] if line.count(":") == 1}
        totals["rss_mb"] += fields.get("Rss", 0) / 1024
        totals["pss_mb"] += fields.get("Pss", 0) / 1024
        totals["anon_mb"] += fields.get("Anonymous", 0) / 1024
        totals["processes"] += 1
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in totals.items()}


def start(root: Path, work: Path, name: str, *, interface: str | None, workers: int, threads: int, cache_dir: Path,
          poll_seconds: float = 1.0):
    from serving.serve import start_service

    options = {"cache_dir": cache_dir, "poll_seconds": poll_seconds}
    if interface:
        options["interface"] = interface
    return start_service(root, log_path=work / f"{name}.log", workers=workers, threads=threads, grpc_workers=1,
                         grpc_threads=4, **options)


def wait_ready(service, timeout: float) -> dict:
    from serving.serve import wait_until_ready

    return wait_until_ready(service, timeout)


def swapped_processes(service, version: str) -> int:
    return service.log_text().count(f"model_version={version} ")


def measure_pair(floor, ours, *, concurrency: int, seconds: float, rounds: int, users: int, work: Path) -> tuple[dict, dict]:
    floor_runs, our_runs = [], []
    for i in range(rounds):
        floor_runs.append(run_wrk(floor, concurrency=concurrency, seconds=seconds, users=users,
                                  script_dir=work, seed=100 + i))
        our_runs.append(run_wrk(ours, concurrency=concurrency, seconds=seconds, users=users,
                                script_dir=work, seed=100 + i))
    return combine(floor_runs), combine(our_runs)


def record(phase: str, concurrency: int, users: int, ours: dict, floor: dict, **extra) -> dict:
    row = {"phase": phase, "concurrency": concurrency, "users_loaded": users, **ours,
           "loadavg_1m_after": round(os.getloadavg()[0], 2),
           "floor_p50_ms": floor["p50_ms"], "floor_p99_ms": floor["p99_ms"], "floor_rps": floor["rps"],
           "floor_errors": floor["errors"], "floor_cpu_ms_per_request": floor["cpu_ms_per_request"],
           "p99_vs_floor": round(ours["p99_ms"] / floor["p99_ms"], 3) if floor["p99_ms"] else None,
           "rps_vs_floor": round(ours["rps"] / floor["rps"], 3) if floor["rps"] else None, **extra}
    print(f"  {phase:<10} c={concurrency:<3} p50 {ours['p50_ms']:7.2f} ms (floor {floor['p50_ms']:6.2f})  "
          f"p99 {ours['p99_ms']:7.2f} ms (floor {floor['p99_ms']:6.2f})  {ours['rps']:7.0f} req/s "
          f"(floor {floor['rps']:6.0f})  cpu/req {ours['cpu_ms_per_request']:.2f} ms (floor "
          f"{floor['cpu_ms_per_request']:.2f})  errors {ours['errors']} / floor {floor['errors']}  "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    from serving import serve
    from serving.serve import stop_service

    parser = argparse.ArgumentParser(prog="bench/serving.py", description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--n", type=int, default=100, help="items per user in the snapshot (the product default)")
    parser.add_argument("--items", type=int, default=50_000, help="catalogue size")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measured run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating floor/lookup runs per concurrency")
    parser.add_argument("--reload-concurrency", type=int, default=4)
    parser.add_argument("--reload-seconds", type=float, default=45.0, help="length of the run during the reload")
    parser.add_argument("--workers", type=int, default=serve.DEFAULT_WORKERS)
    parser.add_argument("--threads", type=int, default=serve.DEFAULT_THREADS)
    parser.add_argument("--no-tune", action="store_true", help="skip the (workers, threads) sweep")
    parser.add_argument("--tune-only", action="store_true", help="only the sweep (to choose the defaults)")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "recommender-bench")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "serving.json")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: install it (apt-get install wrk) to run this benchmark")

    root = ensure_snapshot(args.data_dir, users=args.users, n=args.n, items=args.items)
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    cache = work / "cache"
    results: list[dict] = []
    started = time.time()
    common = {"n": args.n, "k": 10, "unknown_user_share": 0.1}

    def pair(workers, threads, tag):
        floor = start(root, work, f"floor-{tag}", interface=FLOOR_INTERFACE, workers=workers, threads=threads,
                      cache_dir=cache)
        ours = start(root, work, f"ours-{tag}", interface=None, workers=workers, threads=threads, cache_dir=cache)
        try:
            wait_ready(floor, 120)
            health = wait_ready(ours, 600)
        except BaseException:
            stop_service(floor)
            stop_service(ours)
            raise
        return floor, ours, health["jsonData"]

    try:
        if not args.no_tune:
            print("tuning sweep at 16 clients:", flush=True)
            for workers, threads in TUNING_SETTINGS:
                floor, ours, _ = pair(workers, threads, f"tune-{workers}x{threads}")
                try:
                    f, o = measure_pair(floor, ours, concurrency=16, seconds=args.duration, rounds=2,
                                        users=args.users, work=work)
                finally:
                    stop_service(floor)
                    stop_service(ours)
                results.append(record("tuning", 16, args.users, o, f, workers=workers, threads=threads, **common))

        if args.tune_only:
            floor = ours = None
        else:
            print(f"main runs with workers={args.workers} threads={args.threads}:", flush=True)
            floor, ours, health = pair(args.workers, args.threads, "main")
        try:
            if ours is None:
                raise _SkipMain
            memory = {"memory": memory_of(ours), "floor_memory": memory_of(floor),
                      "bytes_per_user": health["bytes_per_user"]}
            print(f"  memory: lookup service {memory['memory']}, floor {memory['floor_memory']}, "
                  f"{health['bytes_per_user']} bytes per user", flush=True)
            for concurrency in args.concurrency:
                f, o = measure_pair(floor, ours, concurrency=concurrency, seconds=args.duration, rounds=args.rounds,
                                    users=args.users, work=work)
                results.append(record("main", concurrency, args.users, o, f, workers=args.workers,
                                      threads=args.threads, **common, **memory))

            # Hot reload under load: publish bench-v2 two seconds into the run.
            c = args.reload_concurrency
            expected = args.workers + 1  # every gunicorn worker and the gRPC process swap
            proc = subprocess.Popen([sys.executable, "-c", (
                "import sys, time; sys.path.insert(0, %r); time.sleep(2); from bench.serving import republish; "
                "from pathlib import Path; republish(Path(%r), 'bench-v1', 'bench-v2')") % (str(REPO_ROOT), str(root))])
            t0 = time.monotonic()
            during = run_wrk(ours, concurrency=c, seconds=args.reload_seconds, users=args.users,
                             script_dir=work, seed=7)
            proc.wait(timeout=60)
            swapped = swapped_processes(ours, "bench-v2")
            floor_same = run_wrk(floor, concurrency=c, seconds=args.reload_seconds, users=args.users,
                                 script_dir=work, seed=7)
            results.append(record("hot_reload", c, args.users, combine([during]), combine([floor_same]),
                                  workers=args.workers, threads=args.threads, reload_from="bench-v1",
                                  reload_to="bench-v2", processes_swapped=swapped, processes=expected,
                                  reload_completed_in_window=swapped >= expected,
                                  window_seconds=round(time.monotonic() - t0, 1), **common))
            reload_lines = [l for l in ours.log_text().splitlines() if "bench-v2" in l and "serving snapshot" in l]
            for line in reload_lines:
                print("  " + line[line.index("serving snapshot"):][:160], flush=True)
        except _SkipMain:
            pass
        finally:
            if ours is not None:
                stop_service(floor)
                stop_service(ours)
    finally:
        from serving.snapshot import set_latest

        set_latest(root, "bench-v1")
        shutil.rmtree(root / "bench-v2", ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    meta = {"machine": f"{platform.machine()} {os.cpu_count()} cores", "python": platform.python_version(),
            "seconds": round(time.time() - started), "load_generator": "wrk", "date": time.strftime("%Y-%m-%d")}
    for row in results:
        row.update(meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {len(results)} records to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
