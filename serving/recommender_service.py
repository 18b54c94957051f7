"""Seldon Core v1 Python wrapper: live look-ups from the latest good serving snapshot, over REST and gRPC.

Run by the real ``seldon-core-microservice`` (serving.serve builds the command line; the serving image runs it
with the parameters of the SeldonDeployment)::

    seldon-core-microservice serving.recommender_service.RecommenderService --service-type MODEL \\
        --parameters '[{"name": "snapshot_root", "value": "/snapshots", "type": "STRING"}]'

Request ``{"jsonData": {"user_id": "42", "k": 10, "exclude": ["i1"]}}`` (or ``item_id`` for similar items, or
``{"requests": [...]}`` for a batch; see serving.api); answer ``{"jsonData": {...}, "meta": {"tags":
{"model_version": ...}}}``. The OpenAPI description is at ``/openapi.json`` and a swagger page at ``/docs``.

How seldon-core 1.19 drives this class, and what follows from it:

* ``load()`` runs once in every gunicorn worker (after the fork) and every gRPC process. It only starts the
  reloader thread (serving.reloader) and returns: a snapshot of millions of users takes longer to load than
  gunicorn's 5 s worker timeout and the probes' delays, so loading never blocks a process from answering.
* Readiness is ``health_status()`` (``GET /health/status``): 503 with the reason until the first good snapshot
  is loaded, 200 after. Liveness is Seldon's ``GET /health/ping``, which answers as soon as the server runs.
* ``predict_raw()`` gets the raw request (REST dict or gRPC SeldonMessage), so every check is ours: Seldon's
  own decoding would turn some malformed payloads into 500s. It answers from one snapshot reference, read once:
  a reload in between cannot mix versions, and ``meta.tags.model_version`` names the version that answered.
* ``init_metadata()`` runs before ``load()``; its ``versions`` list and ``custom`` dict are the objects Seldon
  serves at /metadata (and gRPC Metadata), so a swap updates them in place.
* ``metrics()`` hands over the counters (serving.service_metrics); predictions carry the same hand-over in their
  raw answer at most once per ``metrics_flush_seconds``, because each hand-over costs IPC to Seldon's store (and
  ``patch_seldon_metric_updates`` drops Seldon's own empty per-request update and makes its store thread-safe,
  see there).
* Errors are SeldonMicroserviceException: REST clients get its status code and ``{"status": {"info": message}}``;
  gRPC clients get StatusCode.UNKNOWN with the message in the details (1.19 gives the wrapper no gRPC context).
* ``model_error_handler`` is a Flask blueprint Seldon registers on its app. It screens requests before Seldon's
  views (content type, size, JSON syntax, routes this model does not serve), gives werkzeug's HTTP errors their
  own status (seldon alone turns them into 500), and adds /openapi.json and /docs.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading

import swagger_ui_bundle
from flask import Blueprint, Response, jsonify, request, send_from_directory
from google.protobuf import json_format, struct_pb2
from seldon_core.flask_utils import SeldonMicroserviceException
from seldon_core.metrics import SeldonMetrics
from seldon_core.proto import prediction_pb2
from werkzeug.exceptions import BadRequest, HTTPException, MethodNotAllowed, RequestEntityTooLarge

from serving import service_metrics as sm
from serving import storage
from serving.api import Limits, RequestError, answer, parse_json_data
from serving.ids import MAX_ID_CHARS
from serving.lookup import LoadedSnapshot
from serving.openapi import HEALTH_STATUS_PATHS, METADATA_PATHS, PREDICTION_PATHS, SWAGGER_PAGE, openapi_document
from serving.reloader import SnapshotReloader

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = os.path.join(tempfile.gettempdir(), "recommender-snapshot-cache")
# The routes this service answers: the ones its OpenAPI document describes (plus Seldon's name for that document
# and the swagger page's assets). Everything else, including Seldon's feedback, routing and transform routes that
# make no sense for this model, answers 404.
SERVED_PATHS = frozenset(PREDICTION_PATHS + HEALTH_STATUS_PATHS + METADATA_PATHS
                         + ("/health/ping", "/openapi.json", "/seldon.json", "/docs"))
_METRIC_TYPES = {"COUNTER": prediction_pb2.Metric.COUNTER, "GAUGE": prediction_pb2.Metric.GAUGE,
                 "TIMER": prediction_pb2.Metric.TIMER}


_METRIC_UPDATE_LOCK = threading.Lock()


def _new_metric_update_lock() -> None:
    # A lock another thread held when a process forked would stay held in the child: each child starts with its own.
    global _METRIC_UPDATE_LOCK
    _METRIC_UPDATE_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_new_metric_update_lock)


def patch_seldon_metric_updates() -> None:
    """Make Seldon's metrics store lose no update under threads, and skip its empty per-request updates.

    seldon-core 1.19's ``SeldonMetrics.update(metrics, method)`` reads this process's whole metrics dict from the
    multiprocessing manager, adds to it, and writes it back, holding the manager's lock for the read and for the
    write but not in between. Two threads of one worker (gunicorn --threads, the gRPC server's pool) that hand over
    metrics at the same time therefore lose one hand-over: 4 threads x 200 updates of 1 stored 210, not 800. The
    patched update holds a per-process lock across the whole read-add-write (processes write different keys, so
    they never collide with each other).

    Seldon also calls update after every prediction with an empty list: two pickled round trips that change
    nothing, about 0.2 ms per request (bench/serving.py) once the dict holds custom metrics; those are skipped.
    Applied at import, in Seldon's main process, so every worker inherits it; the bench's floor model applies it too.
    """
    original = SeldonMetrics.update
    if getattr(original, "recsys_patched", False):
        return

    def update(self, custom_metrics, method):
        if not custom_metrics:
            return
        with _METRIC_UPDATE_LOCK:
            original(self, custom_metrics, method)

    update.recsys_patched = True
    update.__doc__ = original.__doc__
    SeldonMetrics.update = update


patch_seldon_metric_updates()


class ServiceError(SeldonMicroserviceException):
    """Seldon's exception with its message also in ``str()``, so gRPC error details carry it (1.19 leaves str() empty)."""

    def __init__(self, message: str, *, status_code: int, reason: str):
        super().__init__(message, status_code=status_code, reason=reason)
        self.args = (message,)


def _error_response(status: int, message: str, reason: str, headers: dict | None = None):
    error = SeldonMicroserviceException(message, status_code=status, reason=reason)
    response = jsonify(error.to_dict())
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _json_problem(body: bytes) -> str:
    """What is wrong with a body Flask could not parse (Flask's own message hides it outside debug mode)."""
    try:
        json.loads(body)
    except UnicodeDecodeError as exc:
        return f"it is not UTF-8 text ({exc.reason} at byte {exc.start})"
    except ValueError as exc:
        return str(exc)
    except RecursionError:
        return "it nests too deeply"
    return "it could not be parsed"


class RecommenderService:
    """Top-k for users, similar items for items, batches of either; see the module docstring.

    Parameters (SeldonDeployment ``parameters``, all optional except ``snapshot_root``):
      snapshot_root          folder, or s3:// / s3a:// URI (S3 options from the AWS_* variables, serving.storage),
                             holding LATEST and the published snapshot versions
      cache_dir              pod-local folder for the memory-mapped arrays ("" = build in each process)
      poll_seconds           how often each process checks LATEST for a newer snapshot
      max_batch, max_exclude, max_id_chars, max_response_bytes, max_request_bytes   request limits (serving.api)
      metrics_flush_seconds  at most how often a process hands its counters to Seldon's metrics store
    """

    def __init__(self, snapshot_root: str, cache_dir: str = DEFAULT_CACHE_DIR, poll_seconds: float = 10.0,
                 max_batch: int = 100, max_exclude: int = 500, max_id_chars: int = MAX_ID_CHARS,
                 max_response_bytes: int = 3_500_000, max_request_bytes: int = 1_048_576,
                 metrics_flush_seconds: float = 1.0):
        # Checked here, in Seldon's main process, so a bad parameter stops the service at start with this message
        # (an error in load() would only kill and respawn workers).
        self.snapshot_root = str(snapshot_root)
        if not storage.is_local(self.snapshot_root):  # an unsupported scheme or S3 setting stops the service here
            storage.S3Options.from_env()
        self.cache_dir = cache_dir or None
        self.poll_seconds = float(poll_seconds)
        if self.poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
        self.limits = Limits(max_batch=int(max_batch), max_exclude=int(max_exclude), max_id_chars=int(max_id_chars),
                             max_response_bytes=int(max_response_bytes), max_request_bytes=int(max_request_bytes))
        self.metrics_store = sm.ServiceMetrics(float(metrics_flush_seconds))
        self.reloader: SnapshotReloader | None = None
        self._loaded_in_pid: int | None = None
        # The objects Seldon serves as metadata; updated in place on every swap (see init_metadata).
        self._meta_versions: list[str] = []
        self._meta_custom: dict[str, str] = {"snapshot_root": self.snapshot_root, "state": "loading"}
        self.model_error_handler = self._blueprint()

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Start this process's reloader thread (first load included) and return at once."""
        if self._loaded_in_pid == os.getpid():
            return
        self._loaded_in_pid = os.getpid()
        self.reloader = SnapshotReloader(self.snapshot_root, cache_root=self.cache_dir, poll_seconds=self.poll_seconds,
                                         metrics=self.metrics_store, on_swap=self._on_swap)
        self.reloader.start()
        logger.info("pid %d: loading snapshots from %s (cache %s, polling every %g s)", os.getpid(),
                    self.snapshot_root, self.cache_dir or "off", self.poll_seconds)

    def _on_swap(self, snapshot: LoadedSnapshot) -> None:
        self._meta_versions[:] = [snapshot.model_version]
        self._meta_custom.update(model_version=snapshot.model_version, created_at=snapshot.manifest.created_at,
                                 n=str(snapshot.n), users=str(snapshot.user_count),
                                 similar_items=str(snapshot.similar_count), state="ready")

    def _snapshot(self) -> LoadedSnapshot:
        """The snapshot to answer from (read once per request), or a 503 saying why there is none."""
        snapshot = self.reloader.current if self.reloader is not None else None
        if snapshot is None:
            why = self.reloader.not_ready_reason() if self.reloader is not None else "load() has not run"
            raise ServiceError(f"not ready: no snapshot loaded from {self.snapshot_root}: {why}", status_code=503,
                               reason="MICROSERVICE_NOT_READY")
        return snapshot

    # -- predictions --------------------------------------------------------------------------------------------

    def predict_raw(self, request):
        """Answer a REST body (dict) or a gRPC SeldonMessage carrying jsonData."""
        is_proto = isinstance(request, prediction_pb2.SeldonMessage)
        try:
            snapshot = self._snapshot()
            parsed = parse_json_data(self._json_data(request, is_proto), n=snapshot.n, limits=self.limits,
                                     numbers_are_doubles=is_proto)
            result = answer(parsed, snapshot, self.limits)
        except RequestError as exc:
            self.metrics_store.count(sm.ERRORS, reason="bad_request")
            raise ServiceError(str(exc), status_code=400, reason="MICROSERVICE_BAD_DATA") from None
        except ServiceError:
            self.metrics_store.count(sm.ERRORS, reason="not_ready")
            raise
        except Exception as exc:
            self.metrics_store.count(sm.ERRORS, reason="internal")
            logger.exception("look-up failed")
            raise ServiceError(f"internal error: {type(exc).__name__}: {exc}", status_code=500,
                               reason="MICROSERVICE_INTERNAL_ERROR") from None
        self._count(result)
        flush = self.metrics_store.drain(gauges=not is_proto) if self.metrics_store.due() else []
        if is_proto:
            return self._proto_answer(result, snapshot.model_version, flush)
        meta = {"tags": {"model_version": snapshot.model_version}}
        if flush:
            meta["metrics"] = flush  # Seldon moves these into its store and (by our env setting) drops them here
        return {"jsonData": result, "meta": meta}

    @staticmethod
    def _json_data(request, is_proto: bool):
        if is_proto:
            kind = request.WhichOneof("data_oneof")
            if kind != "jsonData":
                raise RequestError(f"this model reads jsonData; the request carries {kind or 'no data'}")
            return json_format.MessageToDict(request.jsonData)
        if not isinstance(request, dict):
            raise RequestError('the body must be a JSON object such as {"jsonData": {"user_id": "42"}}')
        if "jsonData" not in request:
            raise RequestError(f'this model reads jsonData: send {{"jsonData": {{"user_id": "42", "k": 10}}}}; '
                               f"the body has {sorted(request)}")
        unexpected = sorted(set(request) - {"jsonData", "meta"})
        if unexpected:
            raise RequestError(f"unexpected field(s) {unexpected} next to jsonData (a request holds jsonData and "
                               f"optionally meta)")
        if "meta" in request and not isinstance(request["meta"], dict):
            raise RequestError("meta must be an object (Seldon request metadata) when given")
        return request["jsonData"]

    def _count(self, result: dict) -> None:
        for one in result.get("results", (result,)):
            kind = "user" if "user_id" in one else "similar"
            self.metrics_store.count(sm.LOOKUPS, kind=kind, source=one["source"])
            if one["fallback_count"]:
                self.metrics_store.count(sm.FALLBACKS, kind=kind)

    @staticmethod
    def _proto_answer(result: dict, model_version: str, flush: list[dict]):
        message = prediction_pb2.SeldonMessage(jsonData=json_format.ParseDict(result, struct_pb2.Value()))
        message.meta.tags["model_version"].string_value = model_version
        for metric in flush:
            message.meta.metrics.add(key=metric["key"], type=_METRIC_TYPES[metric["type"]], value=metric["value"],
                                     tags=metric.get("tags", {}))
        return message

    # -- the rest of the Seldon contract ------------------------------------------------------------------------

    def health_status(self) -> dict:
        """Readiness (GET /health/status): 200 with what is served, or 503 with why nothing is yet."""
        snapshot = self._snapshot()
        return {
            "ready": True,
            "model_version": snapshot.model_version,
            "snapshot_created_at": snapshot.manifest.created_at,
            "users": snapshot.user_count,
            "similar_items": snapshot.similar_count,
            "n": snapshot.n,
            "bytes_per_user": round(snapshot.bytes_per_user(), 1),
            "served_from": snapshot.origin,
            "pid": os.getpid(),
            "reload": self.reloader.status(),
        }

    def tags(self) -> dict:
        snapshot = self.reloader.current if self.reloader is not None else None
        return {"model_version": snapshot.model_version} if snapshot is not None else {}

    def metrics(self) -> list[dict]:
        """Counters since the last hand-over and current gauges (Seldon adds them to its Prometheus store)."""
        return self.metrics_store.drain()

    def init_metadata(self) -> dict:
        """Seldon's metadata hook (GET /metadata, gRPC Metadata). ``versions`` and ``custom`` follow every swap."""
        return {
            "name": "recommender",
            "versions": self._meta_versions,
            "platform": "seldon-core-python",
            "inputs": [{"messagetype": "jsonData", "schema": {
                "user_id": "string: top-k for this user (or item_id: similar items, or requests: a batch)",
                "k": "integer, optional, 1..n (default 10, capped at n)",
                "exclude": "list of item ids, optional",
            }}],
            "outputs": [{"messagetype": "jsonData", "schema": {
                "item_ids": "array of string, best first",
                "scores": "array of number, same order",
                "source": "personal | similar | popular | personal+popular | similar+popular",
                "fallback_count": "integer: trailing items padded from the popular items",
                "model_version": "string",
            }}],
            "custom": self._meta_custom,
        }

    def metadata(self) -> dict:
        return self.init_metadata()

    def openapi(self) -> dict:
        snapshot = self.reloader.current if self.reloader is not None else None
        return openapi_document(
            self.limits,
            n=snapshot.n if snapshot is not None else None,
            model_version=snapshot.model_version if snapshot is not None else None,
            snapshot_created_at=snapshot.manifest.created_at if snapshot is not None else None,
        )

    # -- REST additions (a Flask blueprint Seldon registers) -----------------------------------------------------

    def _blueprint(self) -> Blueprint:
        blueprint = Blueprint("recommender_http", __name__)
        service = self

        @blueprint.record_once
        def _configure(state):
            state.app.config["MAX_CONTENT_LENGTH"] = service.limits.max_request_bytes  # also bounds chunked bodies

        @blueprint.before_app_request
        def _screen():
            path = request.path
            if path not in SERVED_PATHS and not path.startswith("/docs/"):
                return _error_response(404, f"no route {path} here; /openapi.json lists the routes this service answers",
                                       "MICROSERVICE_NOT_FOUND")
            if path == "/seldon.json":
                return jsonify(service.openapi())
            if path not in PREDICTION_PATHS:
                return None
            if request.method == "OPTIONS":  # Flask's own answer would also list Seldon's GET /predict
                response = Response(status=200)
                response.headers["Allow"] = "OPTIONS, POST"
                return response
            return service._screen_prediction()

        @blueprint.route("/openapi.json", methods=["GET"])
        def _openapi():
            return jsonify(service.openapi())

        @blueprint.route("/docs", methods=["GET"])
        def _docs():
            return Response(SWAGGER_PAGE, mimetype="text/html")

        @blueprint.route("/docs/<path:asset>", methods=["GET"])
        def _docs_asset(asset):
            return send_from_directory(swagger_ui_bundle.swagger_ui_path, asset)

        @blueprint.app_errorhandler(HTTPException)
        def _http_error(exc: HTTPException):
            headers = {}
            if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
                headers["Allow"] = ", ".join(sorted(exc.valid_methods))
            logger.warning("HTTP %s on %s %s: %s", exc.code, request.method, request.path, exc.description)
            return _error_response(exc.code, f"{exc.code} {exc.name}: {exc.description}", "MICROSERVICE_BAD_REQUEST",
                                   headers)

        return blueprint

    def _screen_prediction(self):
        """Top-level checks of a prediction request, before Seldon's view decodes it; None lets it through."""
        def refuse(status, message, headers=None):
            self.metrics_store.count(sm.ERRORS, reason="bad_request")
            return _error_response(status, message, "MICROSERVICE_BAD_DATA", headers)

        if request.method != "POST":
            return refuse(405, f"{request.path} takes POST with a JSON body", {"Allow": "OPTIONS, POST"})
        length = request.content_length
        if length is not None and length > self.limits.max_request_bytes:
            return refuse(413, f"the body is {length:,} bytes; the limit is {self.limits.max_request_bytes:,}")
        if "json" in request.args:
            return refuse(400, "the json query parameter is not supported: send the request as the JSON body")
        if not request.is_json:
            return refuse(415, f"send the request as an application/json body (got Content-Type "
                               f"{request.content_type or 'none'!r})")
        try:
            body = request.get_json()  # parsed once; Flask caches it for Seldon's view
        except RequestEntityTooLarge:
            return refuse(413, f"the body is larger than the limit of {self.limits.max_request_bytes:,} bytes")
        except BadRequest:
            return refuse(400, f"the body is not valid JSON: {_json_problem(request.get_data())}")
        except RecursionError:
            return refuse(400, "the body is not valid JSON for this service: it nests too deeply")
        if not isinstance(body, dict):
            kind = {list: "an array", str: "a string", type(None): "null", bool: "a boolean"}.get(type(body), "a number")
            return refuse(400, f'the body must be a JSON object such as {{"jsonData": {{"user_id": "42"}}}}, got {kind}')
        return None
