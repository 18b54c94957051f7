"""Start the lookup service: exec the real ``seldon-core-microservice`` of this venv with tuned settings.

    python -m serving.serve --snapshot-root demo-lake/snapshots [--http-port 9000 --grpc-port 5000
        --metrics-port 6000 --workers 2 --threads 2 --grpc-workers 1 --grpc-threads 4
        --cache-dir /tmp/recommender-snapshot-cache --poll-seconds 10]
    python -m serving.serve --snapshot-root s3://bucket/snapshots     # S3 settings from AWS_ENDPOINT_URL, ...

seldon-core 1.19 runs three servers from one command: REST (gunicorn, ``--workers`` processes x ``--threads``
threads), gRPC (``--grpc-workers`` processes x ``--grpc-threads`` threads; the gunicorn flags do not apply to it,
SeldonIO/seldon-core#3238, hence the separate flags here) and Prometheus metrics. Every REST worker and gRPC
process answers from the same memory-mapped snapshot arrays (one copy per pod in the page cache, see
serving.snapshot_cache), so adding workers costs little memory. seldon 1.19 has no host flag: all three servers
bind 0.0.0.0. ``--print-command`` prints the command line instead of running it.

Defaults are the bench's choice for a 2-core machine (bench/serving.py, ``make bench-serving``, its "tuning"
records): 2 gunicorn workers (one per core) x 2 threads. With more than one thread gunicorn runs its gthread worker,
which keeps connections alive, and a second thread overlaps each request's round trips to Seldon's metrics store;
more threads or workers than that only add GIL contention and p99 spikes (SeldonIO/seldon-core#684).

From another Python (the batch venv's tests and bench, ``make demo``), ``running_service`` runs this command from
the serving venv (RECSYS_SERVING_VENV, default <repo>/.venv-serving) as a child process on free ports, waits
(bounded) until /health/status answers 200, and always kills its whole process group on exit::

    with running_service(snapshot_root, log_path=work / "service.log") as service:
        lookup_rest(service.host, service.http_port, "42", 10)

That part needs the standard library only, so every environment can import this module.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from serving.client import health

INTERFACE = "serving.recommender_service.RecommenderService"
REPO_ROOT = Path(__file__).resolve().parents[1]
SERVING_VENV_ENV = "RECSYS_SERVING_VENV"
HOST = "127.0.0.1"
# Environment the microservice runs with (also set in deploy/Dockerfile.serving): metrics handed to Seldon's store
# are not echoed into clients' answers.
SERVICE_ENV = {"INCLUDE_METRICS_IN_CLIENT_RESPONSE": "false"}
DEFAULT_WORKERS = 2
DEFAULT_THREADS = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serving.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--snapshot-root", required=True,
                        help="folder, file:// or s3:// / s3a:// URI holding LATEST and the snapshot versions (S3: "
                             "endpoint, region and keys from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, ...; "
                             "without keys the default AWS credential chain, e.g. the pod's IAM role)")
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


def local_root(snapshot_root: str) -> Path | None:
    """The absolute local folder a --snapshot-root names (a path or file:// URI), None for an S3 URI; ValueError
    (serving.storage.UnsupportedScheme) for a scheme the service cannot read."""
    from serving import storage  # pyarrow: imported only when a command is built

    location = storage.resolve(snapshot_root) if storage.is_local(snapshot_root) else None
    return location.local.resolve() if location is not None else None


def model_parameters(args: argparse.Namespace) -> list[dict]:
    """The Seldon ``parameters`` list (what a SeldonDeployment's graph gives); unset options keep the defaults. A
    local snapshot root is passed as an absolute path, an S3 URI as given."""
    local = local_root(args.snapshot_root)
    root = str(local) if local is not None else args.snapshot_root
    parameters = [{"name": "snapshot_root", "value": root, "type": "STRING"}]
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
    try:
        local = local_root(args.snapshot_root)
    except ValueError as exc:
        sys.exit(f"--snapshot-root: {exc}")
    command, env = build_command(args)
    if args.print_command:
        print(shlex.join(command))
        return
    if local is not None and not local.is_dir():  # on S3, nothing published yet is a 503 until it is
        sys.exit(f"--snapshot-root {args.snapshot_root} is not a folder (run the pipeline's publish step first)")
    if not Path(command[0]).is_file():
        sys.exit(f"{command[0]} not found: run this with the serving venv's python (.venv-serving/bin/python)")
    sys.stdout.flush()
    os.execve(command[0], command, env)


def serving_venv() -> Path:
    return Path(os.environ.get(SERVING_VENV_ENV) or REPO_ROOT / ".venv-serving")


def serving_python() -> Path:
    return serving_venv() / "bin" / "python"


def free_port() -> int:
    """A port free on every interface (seldon 1.19 binds 0.0.0.0), released again for the service to take."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


@dataclass
class RunningService:
    process: subprocess.Popen
    log_path: Path
    http_port: int
    grpc_port: int
    metrics_port: int
    host: str = HOST

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_service(
    snapshot_root: str | os.PathLike,
    *,
    log_path: str | os.PathLike,
    workers: int = 1,
    threads: int = 2,
    grpc_workers: int = 1,
    grpc_threads: int = 2,
    extra_env: dict[str, str] | None = None,
    **options,
) -> RunningService:
    """Start ``python -m serving.serve`` from the serving venv on free ports; output goes to ``log_path``.

    ``options`` are further serving.serve flags by their Python name, e.g. ``cache_dir=..., poll_seconds=0.2,
    max_batch=10, metrics_flush_seconds=0, interface="bench.serving.FloorModel"``; ``extra_env`` is added to the
    service's environment (e.g. the AWS_* variables of an S3 snapshot root).
    """
    python = serving_python()
    if not python.is_file():
        raise FileNotFoundError(f"{python} not found: create the serving venv (make setup) or set {SERVING_VENV_ENV}")
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    command = [
        str(python), "-m", "serving.serve",
        "--snapshot-root", str(snapshot_root),
        "--http-port", str(http_port),
        "--grpc-port", str(grpc_port),
        "--metrics-port", str(metrics_port),
        "--workers", str(workers),
        "--threads", str(threads),
        "--grpc-workers", str(grpc_workers),
        "--grpc-threads", str(grpc_threads),
    ]
    for name, value in options.items():
        command += ["--" + name.replace("_", "-"), str(value)]
    log_path = Path(log_path)
    # gunicorn >= 25.1 opens a control socket under $XDG_RUNTIME_DIR (else ~/.gunicorn): one folder per service.
    run_dir = log_path.parent / f"run-{http_port}"
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(run_dir), **(extra_env or {}))
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return RunningService(process, log_path, http_port, grpc_port, metrics_port)


def wait_until_ready(service: RunningService, timeout: float = 60.0) -> dict:
    """Poll /health/status until 200; raise RuntimeError if the process dies, TimeoutError (with the log) if slow."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(
                f"service exited with {service.process.returncode} before it was ready; log:\n{service.log_text()[-4000:]}"
            )
        try:
            status, doc = health(service.host, service.http_port)
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                return doc
            last = f"HTTP {status}: {doc}"
        time.sleep(0.2)
    raise TimeoutError(f"service not ready after {timeout:g}s (last: {last}); log:\n{service.log_text()[-4000:]}")


def stop_service(service: RunningService, timeout: float = 10.0) -> None:
    """SIGTERM the service's process group, SIGKILL whatever is left after ``timeout``; idempotent."""
    pgid = service.process.pid  # start_new_session: the service leads its own group
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _group_alive(pgid):
            service.process.poll()
            time.sleep(0.1)
        if not _group_alive(pgid):
            break
    service.process.wait(timeout=5.0)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def running_service(
    snapshot_root: str | os.PathLike, *, log_path: str | os.PathLike, ready_timeout: float = 60.0, **options
) -> Iterator[RunningService]:
    """Start the service on ``snapshot_root``, wait until ready, yield it, and always stop its process group."""
    service = start_service(snapshot_root, log_path=log_path, **options)
    try:
        wait_until_ready(service, ready_timeout)
        yield service
    finally:
        stop_service(service)


if __name__ == "__main__":
    main()
