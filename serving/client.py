"""Send look-ups to the running service over REST or gRPC and print the answers as JSON.

    python -m serving.client --protocol grpc --user-id 42 --k 10 [--exclude i1 i7] [--wait-ready 30]
    python -m serving.client --item-id i5 --k 5                                     similar items
    python -m serving.client --json '{"requests": [{"user_id": "42"}, {"item_id": "i5"}]}'   any jsonData
    python -m serving.client --protocol grpc --requests-file lookups.jsonl          one jsonData per line

Prints the answer's jsonData on stdout and exits 0; a refused request prints ``{"error": {...}}`` on stderr and
exits 1; not ready in time exits 2. With ``--requests-file`` (``-`` for stdin) every line gets one output line,
``{"ok": <jsonData>}`` or ``{"error": {"status": ..., "message": ...}}``, over one connection, and it exits 0.

REST needs only the standard library, so ``predict_rest``, ``lookup_rest``, ``health`` and ``wait_ready`` work from
the batch venv too; gRPC needs seldon-core's stubs and protobuf, so it runs from the serving venv only.
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
# gRPC's Struct turns every number into a double; these answer fields are integers.
_INTEGER_FIELDS = ("fallback_count",)


class LookupFailed(Exception):
    """The service refused or failed a request; ``status`` is the HTTP status or the gRPC status name."""

    def __init__(self, status, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def lookup_body(user_id: str | None = None, k: int | None = None, *, item_id: str | None = None,
                exclude: list[str] | None = None) -> dict:
    """The jsonData of one look-up: by ``user_id``, or similar items of ``item_id``."""
    payload = {"user_id": user_id} if item_id is None else {"item_id": item_id}
    if k is not None:
        payload["k"] = k
    if exclude:
        payload["exclude"] = list(exclude)
    return payload


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


def predict_rest(host: str, http_port: int, json_data, *, timeout: float = 10.0) -> dict:
    """POST {"jsonData": json_data} and return the answer's jsonData; raise LookupFailed on a non-200 answer."""
    body = json.dumps({"jsonData": json_data}).encode("utf-8")
    status, doc = _http("POST", f"http://{host}:{http_port}{PREDICT_PATH}", body, timeout)
    if status != 200:
        raise LookupFailed(status, _error_message(doc))
    return doc["jsonData"]


def lookup_rest(host: str, http_port: int, user_id: str, k: int | None = None, *, timeout: float = 10.0,
                exclude: list[str] | None = None) -> dict:
    """Top-k for one user over REST (see predict_rest)."""
    return predict_rest(host, http_port, lookup_body(user_id, k, exclude=exclude), timeout=timeout)


class GrpcClient:
    """One gRPC channel to the service's Model/Predict, for many calls."""

    def __init__(self, host: str, grpc_port: int):
        # Imported here, not at the top: the batch venv has protobuf 6, which seldon-core's generated stubs reject.
        import grpc
        from google.protobuf import json_format, struct_pb2
        from seldon_core.proto import prediction_pb2, prediction_pb2_grpc

        self._grpc, self._json_format, self._struct_pb2, self._pb2 = grpc, json_format, struct_pb2, prediction_pb2
        self._channel = grpc.insecure_channel(f"{host}:{grpc_port}")
        self._stub = prediction_pb2_grpc.ModelStub(self._channel)

    def predict(self, json_data, *, timeout: float = 10.0) -> dict:
        """Model/Predict with jsonData; the answer's jsonData (integer fields turned back into ints)."""
        payload = self._json_format.ParseDict(json_data, self._struct_pb2.Value())
        try:
            response = self._stub.Predict(self._pb2.SeldonMessage(jsonData=payload), timeout=timeout)
        except self._grpc.RpcError as exc:
            raise LookupFailed(exc.code().name, exc.details() or "") from None
        return _integers_back(self._json_format.MessageToDict(response.jsonData))

    def close(self) -> None:
        self._channel.close()


def _integers_back(answer):
    if isinstance(answer, dict):
        for result in answer.get("results", [answer]):
            for field in _INTEGER_FIELDS:
                if isinstance(result.get(field), float) and result[field].is_integer():
                    result[field] = int(result[field])
    return answer


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


def _many(args, lines) -> int:
    """--requests-file: one jsonData per input line, one result per output line, one connection."""
    client = GrpcClient(args.host, args.grpc_port) if args.protocol == "grpc" else None
    try:
        for line in lines:
            if not line.strip():
                continue
            json_data = json.loads(line)
            try:
                if client is not None:
                    result = {"ok": client.predict(json_data, timeout=args.timeout)}
                else:
                    result = {"ok": predict_rest(args.host, args.http_port, json_data, timeout=args.timeout)}
            except LookupFailed as exc:
                result = {"error": {"status": exc.status, "message": exc.message}}
            print(json.dumps(result), flush=True)
    finally:
        if client is not None:
            client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.client", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=9000)
    parser.add_argument("--grpc-port", type=int, default=5000)
    parser.add_argument("--protocol", choices=["rest", "grpc"], default="rest")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--user-id", help="top-k for this user")
    what.add_argument("--item-id", help="items similar to this item")
    what.add_argument("--json", help="a whole jsonData document, e.g. a batch")
    what.add_argument("--requests-file", help="a file of jsonData documents, one per line ('-' = stdin)")
    parser.add_argument("--k", type=int, default=None, help="number of items (default: the service's, 10)")
    parser.add_argument("--exclude", nargs="*", default=None, metavar="ITEM_ID", help="item ids to leave out")
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
    if args.requests_file:
        if args.requests_file == "-":
            return _many(args, sys.stdin)
        with open(args.requests_file) as lines:
            return _many(args, lines)

    json_data = json.loads(args.json) if args.json else lookup_body(args.user_id, args.k, item_id=args.item_id,
                                                                     exclude=args.exclude)
    try:
        if args.protocol == "rest":
            answer = predict_rest(args.host, args.http_port, json_data, timeout=args.timeout)
        else:
            client = GrpcClient(args.host, args.grpc_port)
            try:
                answer = client.predict(json_data, timeout=args.timeout)
            finally:
                client.close()
    except LookupFailed as exc:
        print(json.dumps({"error": {"protocol": args.protocol, "status": exc.status, "message": exc.message}}),
              file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
