"""Start the lookup service: exec the real ``seldon-core-microservice`` of this venv with tuned settings.

    python -m deploy.serve --snapshot-root demo-lake/snapshots [--http-port 9000 --grpc-port 5000
        --metrics-port 6000 --workers 2 --threads 4 --grpc-workers 1 --grpc-threads 4]

seldon-core 1.19 runs three servers from one command: REST (gunicorn, ``--workers`` processes x ``--threads``
threads), gRPC (``--grpc-workers`` processes x ``--grpc-threads`` threads; the gunicorn flags do not apply to it)
and Prometheus metrics. Every worker and gRPC process loads its own copy of the snapshot, so memory grows with
``workers + grpc_workers``. seldon 1.19 has no host flag: all three servers bind 0.0.0.0.
``--print-command`` prints the command line instead of running it.
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m deploy.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--snapshot-root", required=True, help="folder holding LATEST and the snapshot versions")
    parser.add_argument("--http-port", type=int, default=9000)
    parser.add_argument("--grpc-port", type=int, default=5000)
    parser.add_argument("--metrics-port", type=int, default=6000)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (REST)")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--grpc-workers", type=int, default=1, help="gRPC server processes (0 disables gRPC)")
    parser.add_argument("--grpc-threads", type=int, default=4, help="threads per gRPC server process")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--print-command", action="store_true", help="print the command line and exit")
    return parser.parse_args(argv)


def microservice_executable() -> Path:
    """``seldon-core-microservice`` next to this interpreter (sys.executable is not resolved: it is the venv's)."""
    return Path(sys.executable).parent / "seldon-core-microservice"


def build_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    parameters = [{"name": "snapshot_root", "value": str(Path(args.snapshot_root).resolve()), "type": "STRING"}]
    argv = [
        str(microservice_executable()),
        INTERFACE,
        "--service-type", "MODEL",
        "--parameters", json.dumps(parameters),
        "--http-port", str(args.http_port),
        "--grpc-port", str(args.grpc_port),
        "--metrics-port", str(args.metrics_port),
        "--workers", str(args.workers),
        "--threads", str(args.threads),
        "--grpc-workers", str(args.grpc_workers),
        "--grpc-threads", str(args.grpc_threads),
        "--log-level", args.log_level,
    ]
    env = dict(os.environ)
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
