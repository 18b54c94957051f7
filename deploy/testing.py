"""Run the real lookup service as a subprocess, for tests and demos; and write small snapshots with pyarrow.

Standard library + pyarrow only, so the batch venv (pytest) can import it: the service itself runs in the serving
venv, found through RECSYS_SERVING_VENV (default: <repo>/.venv-serving)::

    with running_service(snapshot_root, log_path=tmp_path / "service.log") as service:
        lookup_rest(service.host, service.http_port, "42", 10)

``running_service`` picks free ports, starts ``python -m deploy.serve`` in its own process group, waits (bounded)
until /health/status answers 200, and always kills the whole group on exit.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from deploy.client import health
from deploy.snapshot import set_latest, write_manifest

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVING_VENV_ENV = "RECSYS_SERVING_VENV"
HOST = "127.0.0.1"


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
    **options,
) -> RunningService:
    """Start ``python -m deploy.serve`` from the serving venv on free ports; output goes to ``log_path``.

    ``options`` are further deploy.serve flags by their Python name, e.g. ``cache_dir=..., poll_seconds=0.2,
    max_batch=10, metrics_flush_seconds=0, interface="bench.serving.FloorModel"``.
    """
    python = serving_python()
    if not python.is_file():
        raise FileNotFoundError(f"{python} not found: create the serving venv (make setup) or set {SERVING_VENV_ENV}")
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    command = [
        str(python), "-m", "deploy.serve",
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
    env = dict(os.environ, XDG_RUNTIME_DIR=str(run_dir))
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


def _list_table(key_column: str, lists: dict[str, list[tuple[str, float]]]) -> pa.Table:
    keys = list(lists)
    return pa.table(
        {
            key_column: pa.array(keys, pa.string()),
            "item_ids": pa.array([[i for i, _ in lists[key]] for key in keys], pa.list_(pa.string())),
            "scores": pa.array([[s for _, s in lists[key]] for key in keys], pa.list_(pa.float32())),
        }
    )


def write_snapshot(
    root: str | os.PathLike,
    *,
    model_version: str,
    n: int,
    user_recommendations: dict[str, list[tuple[str, float]]],
    popular_items: list[tuple[str, float]],
    similar_items: dict[str, list[tuple[str, float]]] | None = None,
    files_per_table: int = 1,
    publish: bool = True,
) -> Path:
    """Write a snapshot version with the contract's schemas (rows split over ``files_per_table`` parquet files),
    its manifest, and (``publish``) point LATEST at it. ``similar_items`` (item -> similar items) is optional, as
    in the contract. Returns the version folder."""
    version_dir = Path(root) / model_version
    tables = {
        "user_recommendations": _list_table("user_id", user_recommendations),
        "popular_items": pa.table(
            {
                "rank": pa.array(range(1, len(popular_items) + 1), pa.int32()),
                "item_id": pa.array([i for i, _ in popular_items], pa.string()),
                "score": pa.array([s for _, s in popular_items], pa.float64()),
            }
        ),
    }
    if similar_items is not None:
        tables["similar_items"] = _list_table("item_id", similar_items)
    for name, table in tables.items():
        folder = version_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        step = max(1, -(-table.num_rows // files_per_table))
        for part, start in enumerate(range(0, max(table.num_rows, 1), step)):
            pq.write_table(table.slice(start, step), folder / f"part-{part:05d}.parquet")
    write_manifest(version_dir, model_version=model_version, n=n)
    if publish:
        set_latest(root, model_version)
    return version_dir
