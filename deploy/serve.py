"""Start the lookup service: exec the real ``seldon-core-microservice`` of this venv with tuned settings.

    python -m deploy.serve --snapshot-root demo-lake/snapshots [--http-port 9000 --grpc-port 5000
        --metrics-port 6000 --workers 2 --threads 2 --grpc-workers 1 --grpc-threads 4
        --cache-dir /tmp/recommender-snapshot-cache --poll-seconds 10]

seldon-core 1.19 runs three servers from one command: REST (gunicorn, ``--workers`` processes x ``--threads``
threads), gRPC (``--grpc-workers`` processes x ``--grpc-threads`` threads; the gunicorn flags do not apply to it,
SeldonIO/seldon-core#3238, hence the separate flags here) and Prometheus metrics. Every REST worker and gRPC
process answers from the same memory-mapped snapshot arrays (one copy per pod in the page cache, see
deploy.snapshot_cache), so adding workers costs little memory. seldon 1.19 has no host flag: all three servers
bind 0.0.0.0. ``--print-command`` prints the command line instead of running it.

Defaults are the bench's choice for a 2-core machine (bench/serving.py, ``make bench-serving``, its "tuning"
records): 2 gunicorn workers (one per core) x 2 threads. With more than one thread gunicorn runs its gthread worker,
which keeps connections alive, and a second thread overlaps each request's round trips to Seldon's metrics store;
more threads or workers than that only add GIL contention and p99 spikes (SeldonIO/seldon-core#684).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

INTERFACE = "deploy.recommender_service.RecommenderService"
REPO_ROOT = Path(__file__).resolve().parents[1]
# Environment the microservice runs with (also set in deploy/Dockerfile.serving): metrics handed to Seldon's store
# are not echoed into clients' answers.
SERVICE_ENV = {"INCLUDE_METRICS_IN_CLIENT_RESPONSE": "false"}
DEFAULT_WORKERS = 2
DEFAULT_THREADS = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m deploy.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--snapshot-root", required=True, help="folder holding LATEST and the snapshot versions")
    parser.add_argument("--http-port", type=int, default=9000)
    parser.add_argument("--grpc-port", type=int, default=5000)
    parser.add_argument("--metrics-port", type=int, default=6000)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="gunicorn worker processes (REST)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="threads per gunicorn worker")
    parser.add_argument("--grpc-workers", type=int, default=1, help="gRPC server processes (0 disables gRPC)")
    parser.add_argument("--grpc-threads", type=int, default=4, help="threads per gRPC server process")
    parser.add_argument("--cache-dir", default=None,
                        help="pod-local folder for the memory-mapped arrays (default: <tmp>/recommender-snapshot-cache; "
                             "'' builds the arrays in every process instead)")
    parser.add_argument("--poll-seconds", type=float, default=None, help="how often to check LATEST (default 10)")
    parser.add_argument("--max-batch", type=int, default=None, help="look-ups per batch request (default 100)")
    parser.add_argument("--max-exclude", type=int, default=None, help="excluded ids per look-up (default 500)")
    parser.add_argument("--max-response-bytes", type=int, default=None,
                        help="largest answer (default 3,500,000: under gRPC's 4 MiB message limit)")
    parser.add_argument("--metrics-flush-seconds", type=float, default=None,
                        help="at most how often each process hands its counters to Seldon (default 1)")
    parser.add_argument("--interface", default=INTERFACE, help="the model class (the bench serves a trivial one)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--print-command", action="store_true", help="print the command line and exit")
    return parser.parse_args(argv)


def microservice_executable() -> Path:
    """``seldon-core-microservice`` next to this interpreter (sys.executable is not resolved: it is the venv's)."""
    return Path(sys.executable).parent / "seldon-core-microservice"


def model_parameters(args: argparse.Namespace) -> list[dict]:
    """The Seldon ``parameters`` list (what a SeldonDeployment's graph gives); unset options keep the defaults."""
    parameters = [{"name": "snapshot_root", "value": str(Path(args.snapshot_root).resolve()), "type": "STRING"}]
    optional = [
        ("cache_dir", args.cache_dir, "STRING"),
        ("poll_seconds", args.poll_seconds, "FLOAT"),
        ("max_batch", args.max_batch, "INT"),
        ("max_exclude", args.max_exclude, "INT"),
        ("max_response_bytes", args.max_response_bytes, "INT"),
        ("metrics_flush_seconds", args.metrics_flush_seconds, "FLOAT"),
    ]
    for name, value, kind in optional:
        if value is not None:
            if name == "cache_dir" and value:
                value = str(Path(value).resolve())
            parameters.append({"name": name, "value": str(value), "type": kind})
    return parameters


def build_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    argv = [
        str(microservice_executable()),
        args.interface,
        "--service-type", "MODEL",
        "--parameters", json.dumps(model_parameters(args)),
        "--http-port", str(args.http_port),
        "--grpc-port", str(args.grpc_port),
        "--metrics-port", str(args.metrics_port),
        "--workers", str(args.workers),
        "--threads", str(args.threads),
        "--grpc-workers", str(args.grpc_workers),
        "--grpc-threads", str(args.grpc_threads),
        "--log-level", args.log_level,
    ]
    env = {**os.environ, **SERVICE_ENV}
    # seldon imports the interface by name: make this checkout importable even where it is not pip-installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return argv, env


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command, env = build_command(args)
    if args.print_command:
        print(shlex.join(command))
        return
    if not Path(args.snapshot_root).is_dir():
        sys.exit(f"--snapshot-root {args.snapshot_root} is not a folder (run the pipeline's publish step first)")
    if not Path(command[0]).is_file():
        sys.exit(f"{command[0]} not found: run this with the serving venv's python (.venv-serving/bin/python)")
    sys.stdout.flush()
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main()
