"""Send a lookup to the running service over REST or gRPC and print the answer as JSON.

    python -m deploy.client --host 127.0.0.1 --http-port 9000 --grpc-port 5000 --protocol grpc \\
        --user-id 42 --k 10 [--wait-ready 30]

Prints the answer's jsonData (``{"user_id", "item_ids", "scores", "source", "model_version"}``) on stdout and exits
0; a refused request prints ``{"error": {...}}`` on stderr and exits 1; not ready in time exits 2.

REST needs only the standard library, so ``lookup_rest``, ``health`` and ``wait_ready`` work from the batch venv
too; gRPC needs seldon-core's stubs and protobuf, so it runs from the serving venv only.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

PREDICT_PATH = "/api/v1.0/predictions"
HEALTH_PATH = "/health/status"


class LookupFailed(Exception):
    """The service refused or failed a request; ``status`` is the HTTP status or the gRPC status name."""

    def __init__(self, status, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def _request_body(user_id: str, k: int | None) -> dict:
    payload = {"user_id": user_id}
    if k is not None:
        payload["k"] = k
    return {"jsonData": payload}


def _http(method: str, url: str, body: bytes | None, timeout: float) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        try:
            return exc.code, json.loads(text)
        except json.JSONDecodeError:
            return exc.code, {"status": {"info": text}}


def _error_message(doc) -> str:
    """Seldon's error body is {"status": {"info": message, "reason": ..., ...}}."""
    status = doc.get("status") if isinstance(doc, dict) else None
    return status.get("info", json.dumps(doc)) if isinstance(status, dict) else json.dumps(doc)


def lookup_rest(host: str, http_port: int, user_id: str, k: int | None = None, *, timeout: float = 10.0) -> dict:
    """POST /api/v1.0/predictions and return the answer's jsonData; raise LookupFailed on a non-200 answer."""
    body = json.dumps(_request_body(user_id, k)).encode("utf-8")
    status, doc = _http("POST", f"http://{host}:{http_port}{PREDICT_PATH}", body, timeout)
    if status != 200:
        raise LookupFailed(status, _error_message(doc))
    return doc["jsonData"]


def lookup_grpc(host: str, grpc_port: int, user_id: str, k: int | None = None, *, timeout: float = 10.0) -> dict:
    """Model/Predict with jsonData; return the answer's jsonData (numbers come back as floats, as Struct has it)."""
    # Imported here, not at the top: the batch venv has protobuf 6, which seldon-core's generated stubs reject.
    import grpc
    from google.protobuf import json_format, struct_pb2
    from seldon_core.proto import prediction_pb2, prediction_pb2_grpc

    payload = json_format.ParseDict(_request_body(user_id, k)["jsonData"], struct_pb2.Value())
    with grpc.insecure_channel(f"{host}:{grpc_port}") as channel:
        stub = prediction_pb2_grpc.ModelStub(channel)
        try:
            response = stub.Predict(prediction_pb2.SeldonMessage(jsonData=payload), timeout=timeout)
        except grpc.RpcError as exc:
            raise LookupFailed(exc.code().name, exc.details() or "") from None
    return json_format.MessageToDict(response.jsonData)


def health(host: str, http_port: int, *, timeout: float = 2.0) -> tuple[int, dict]:
    """GET /health/status: (200, body) when ready; 503 with the reason while no snapshot is loaded."""
    return _http("GET", f"http://{host}:{http_port}{HEALTH_PATH}", None, timeout)


def wait_ready(host: str, http_port: int, timeout: float, *, grpc_port: int | None = None) -> dict:
    """Poll /health/status (and the gRPC port, if given) until ready; raise TimeoutError saying what was last seen."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            status, doc = health(host, http_port)
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                break
            last = f"HTTP {status}: {_error_message(doc)}"
        if time.monotonic() >= deadline:
            raise TimeoutError(f"service on {host}:{http_port} not ready after {timeout:g}s; last: {last}")
        time.sleep(0.2)
    if grpc_port is not None:
        import grpc

        with grpc.insecure_channel(f"{host}:{grpc_port}") as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=max(deadline - time.monotonic(), 0.1))
            except grpc.FutureTimeoutError:
                raise TimeoutError(f"gRPC on {host}:{grpc_port} not ready after {timeout:g}s") from None
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.client", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=9000)
    parser.add_argument("--grpc-port", type=int, default=5000)
    parser.add_argument("--protocol", choices=["rest", "grpc"], default="rest")
    parser.add_argument("--user-id", required=True)
    parser.add_argument("--k", type=int, default=None, help="number of items (default: the service's default, 10)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("--wait-ready", type=float, default=0.0, metavar="SECONDS",
                        help="first poll /health/status (and the gRPC port for --protocol grpc) for up to SECONDS")
    args = parser.parse_args(argv)

    if args.wait_ready > 0:
        try:
            wait_ready(args.host, args.http_port, args.wait_ready,
                       grpc_port=args.grpc_port if args.protocol == "grpc" else None)
        except TimeoutError as exc:
            print(json.dumps({"error": {"status": "NOT_READY", "message": str(exc)}}), file=sys.stderr)
            return 2
    try:
        if args.protocol == "rest":
            answer = lookup_rest(args.host, args.http_port, args.user_id, args.k, timeout=args.timeout)
        else:
            answer = lookup_grpc(args.host, args.grpc_port, args.user_id, args.k, timeout=args.timeout)
    except LookupFailed as exc:
        print(json.dumps({"error": {"protocol": args.protocol, "status": exc.status, "message": exc.message}}),
              file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
