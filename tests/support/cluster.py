"""A Spark standalone cluster whose workers act as other machines, for the tests of tests/cluster.

* Each worker runs with its own work folder and a Python environment that has the batch dependencies
  (requirements/batch.lock) and not the project: ``worker_python`` builds it once per lock file and Python version,
  outside the checkout (under $RECSYS_TEST_CACHE, default ~/.cache/recsys-tests). Its pyspark is the workers'
  SPARK_HOME, so nothing of theirs comes from the checkout.
* Run as root where ``unshare`` exists, each worker also runs in a private mount namespace where the driver's
  checkout is an empty folder: an executor that reaches for a file of the checkout (code, virtualenv, the ALS BLAS
  library built there) fails as it would on another machine.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
LOCK_FILE = REPO / "requirements" / "batch.lock"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_log(path: Path, text: str, count: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text(errors="replace").count(text) >= count:
            return
        time.sleep(0.3)
    tail = path.read_text(errors="replace")[-3000:] if path.exists() else ""
    raise TimeoutError(f"{path} did not show {text!r} {count} times in {timeout} s:\n{tail}")


def _cache_root() -> Path:
    return Path(os.environ.get("RECSYS_TEST_CACHE", Path.home() / ".cache" / "recsys-tests"))


def worker_python() -> Path:
    """The workers' Python: this Python's version with requirements/batch.lock installed, without the project."""
    base = Path(getattr(sys, "_base_executable", sys.executable))
    key = hashlib.sha256(LOCK_FILE.read_bytes() + sys.version.encode()).hexdigest()[:12]
    venv = _cache_root() / f"worker-venv-{key}"
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".ready").is_file():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([str(base), "-m", "venv", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(LOCK_FILE)], check=True)
            (venv / ".ready").touch()
    return python


def spark_home_of(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import pyspark, os; print(os.path.dirname(pyspark.__file__))"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def can_hide_checkout() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and shutil.which("mount") is not None


@dataclass
class Cluster:
    url: str
    base: Path
    worker_python: Path
    hides_checkout: bool
    procs: list = field(default_factory=list)

    @property
    def master_log(self) -> Path:
        return self.base / "master.log"

    def worker_logs(self) -> list[Path]:
        return sorted(self.base.glob("worker*.log"))

    def stop(self) -> None:
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def _worker_command(spark_class: str, url: str, work_dir: Path, hide: bool) -> list[str]:
    worker = [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", HOST, "--cores", "1",
              "--memory", "1500m", "--webui-port", str(free_port()), "--work-dir", str(work_dir)]
    if not hide:
        return worker
    script = 'mount -t tmpfs -o size=1m,mode=0555 recsys-hidden-checkout "$0" && cd / && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(REPO), *worker]


def start_cluster(base: Path, workers: int = 2) -> Cluster:
    """A master and ``workers`` one-core workers on 127.0.0.1, each worker with a private work folder and the
    workers' Python; stop it with ``Cluster.stop``."""
    python = worker_python()
    spark_home = spark_home_of(python)
    spark_class = str(spark_home / "bin" / "spark-class")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update({"SPARK_HOME": str(spark_home), "SPARK_LOCAL_IP": HOST, "PYSPARK_PYTHON": str(python),
                "SPARK_LOG_DIR": str(base), "PATH": f"{python.parent}:{env.get('PATH', '')}"})
    port = free_port()
    cluster = Cluster(f"spark://{HOST}:{port}", base, python, can_hide_checkout())
    master = [spark_class, "org.apache.spark.deploy.master.Master", "--host", HOST, "--port", str(port),
              "--webui-port", str(free_port())]
    cluster.procs.append(subprocess.Popen(master, stdout=open(cluster.master_log, "w"), stderr=subprocess.STDOUT,
                                          env=env, cwd=base, start_new_session=True))
    try:
        wait_for_log(cluster.master_log, "I have been elected leader", 1, 90)
        for i in range(workers):
            work = base / f"work{i}"
            work.mkdir()
            cluster.procs.append(subprocess.Popen(
                _worker_command(spark_class, cluster.url, work, cluster.hides_checkout),
                stdout=open(base / f"worker{i}.log", "w"), stderr=subprocess.STDOUT, env=env, cwd=base,
                start_new_session=True))
        wait_for_log(cluster.master_log, "Registering worker", workers, 90)
    except BaseException:
        cluster.stop()
        raise
    return cluster
