"""The README's main command (`make demo`): sample log -> nightly flow -> live Seldon service -> real lookups.

1. jobs.generate_logs writes a synthetic ratings log (taste groups, skewed popularity, injected faults);
2. jobs.nightly runs ingest -> build_training -> train -> score -> publish into a local Delta lake, with the
   data-quality gates after each step;
3. the real seldon-core-microservice starts on the published snapshot (serving venv);
4. a known user and an unknown user are looked up over REST, a known user over gRPC; the answers are printed;
5. the service is stopped.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serving.client import lookup_rest  # noqa: E402
from serving.serve import running_service, serving_python  # noqa: E402


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lake", default="demo-lake")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--ratings", type=int, default=50_000)
    args = parser.parse_args()
    lake = (REPO / args.lake).resolve()
    if lake.exists():
        shutil.rmtree(lake)
    started = time.time()
    py = sys.executable
    run([py, "-m", "jobs.generate_logs", "--output", str(lake / "incoming"), "--users", str(args.users),
         "--items", str(args.items), "--ratings", str(args.ratings), "--clusters", "8"])
    run([py, "-m", "jobs.nightly", "--lake", str(lake), "--input", str(lake / "incoming"), "--format", "movielens",
         "--n", "20", "--rank", "16", "--max-iter", "10"])
    print(f"\n$ {serving_python()} -m serving.serve --snapshot-root {lake / 'snapshots'}   (in the background)")
    with running_service(lake / "snapshots", log_path=lake / "service.log", ready_timeout=90) as service:
        print(f"lookup service ready on {service.base_url} (gRPC port {service.grpc_port})\n")
        for user_id in ("42", "new-visitor"):
            request = {"jsonData": {"user_id": user_id, "k": 5}}
            print(f"POST {service.base_url}/api/v1.0/predictions {json.dumps(request)}")
            print("  -> " + json.dumps(lookup_rest(service.host, service.http_port, user_id, 5)))
        grpc = subprocess.run(
            [str(serving_python()), "-m", "serving.client", "--protocol", "grpc", "--host", service.host,
             "--http-port", str(service.http_port), "--grpc-port", str(service.grpc_port), "--user-id", "42", "--k", "3"],
            capture_output=True, text=True, timeout=60, cwd=REPO)
        print(f"gRPC Predict user 42, k 3\n  -> {grpc.stdout.strip() or grpc.stderr.strip()}")
        if grpc.returncode:
            return grpc.returncode
    print(f"\nservice stopped. demo done in {time.time() - started:.0f} s; the lake is in {lake}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
