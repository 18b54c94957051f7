"""Seldon Core v1 Python wrapper: live top-N lookups from the latest serving snapshot.

Run (deploy.serve builds this command line with tuned worker settings)::

    seldon-core-microservice deploy.recommender_service.RecommenderService --service-type MODEL \\
        --parameters '[{"name": "snapshot_root", "value": "/snapshots", "type": "STRING"}]'

Request ``{"jsonData": {"user_id": "42", "k": 10}}``; answer ``{"jsonData": {"user_id": "42", "item_ids": [...],
"scores": [...], "source": "personal" | "popular", "model_version": "..."}, "meta": {"tags": {"model_version": ...}}}``.

How seldon-core 1.19 drives this class, and what follows from it:

* ``load()`` runs once in every gunicorn worker (after the fork, before the worker accepts a request) and once in
  every gRPC server process (before it binds). A request can therefore never reach an unloaded copy.
* A snapshot that fails verification leaves the copy unready instead of crashing it: ``health_status()``
  (``GET /health/status``, the readiness endpoint) and ``predict()`` answer 503 with the SnapshotError message,
  which is also logged. ``/health/ping`` only says the HTTP server is up: use it for liveness, never readiness.
* ``init_metadata()`` runs once per server process *before* ``load()``, so it reads the manifest itself.
* Errors are SeldonMicroserviceException: REST clients get its status_code; gRPC clients get StatusCode.UNKNOWN with
  the message in the details (seldon 1.19 gives the wrapper no gRPC context to choose a code).
* seldon 1.19's catch-all Flask handler turns every werkzeug HTTP error into a 500 (a body that is not
  ``application/json`` -> 415, an unknown path -> 404, a wrong method -> 405). ``model_error_handler``, the hook
  seldon registers as a Flask blueprint, gives those their own status again. (Flask and werkzeug come with seldon.)
"""
from __future__ import annotations

import logging

from flask import Blueprint, jsonify
from seldon_core.flask_utils import SeldonMicroserviceException
from werkzeug.exceptions import HTTPException

from deploy.lookup import DEFAULT_K, LoadedSnapshot, RequestError, load_snapshot, parse_request
from deploy.snapshot import SnapshotError, latest_version_dir, read_manifest

logger = logging.getLogger(__name__)


class ServiceError(SeldonMicroserviceException):
    """Seldon's exception with its message also in ``str()``, so gRPC error details carry it (1.19 leaves str() empty)."""

    def __init__(self, message: str, *, status_code: int, reason: str):
        super().__init__(message, status_code=status_code, reason=reason)
        self.args = (message,)


http_errors = Blueprint("recommender_http_errors", __name__)


@http_errors.app_errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    error = SeldonMicroserviceException(f"{exc.code} {exc.name}: {exc.description}", status_code=exc.code,
                                        reason="MICROSERVICE_BAD_REQUEST")
    logger.warning("%s", error.to_dict())
    return jsonify(error.to_dict()), error.status_code


class RecommenderService:
    """Answers ``{"user_id": str, "k": int}`` with the user's precomputed top-k, or the popular items."""

    model_error_handler = http_errors

    def __init__(self, snapshot_root: str):
        self.snapshot_root = snapshot_root
        self._snapshot: LoadedSnapshot | None = None
        self._load_error: str | None = None

    def load(self) -> None:
        try:
            snapshot = load_snapshot(self.snapshot_root)
        except SnapshotError as exc:
            self._load_error = f"SnapshotError: {exc}"
            logger.error("%s (snapshot_root=%s); this copy stays unready", self._load_error, self.snapshot_root)
            return
        self._snapshot = snapshot
        self._load_error = None
        logger.info(
            "loaded snapshot %s: model_version=%s users=%d items=%d n=%d",
            snapshot.manifest.path, snapshot.model_version, snapshot.user_count, snapshot.item_vocab.size, snapshot.n,
        )

    def _loaded(self) -> LoadedSnapshot:
        if self._snapshot is None:
            why = self._load_error or "load() has not completed"
            raise ServiceError(
                f"not ready: no snapshot loaded from {self.snapshot_root}: {why}",
                status_code=503,
                reason="MICROSERVICE_NOT_READY",
            )
        return self._snapshot

    def health_status(self) -> dict:
        snapshot = self._loaded()
        return {
            "ready": True,
            "model_version": snapshot.model_version,
            "users": snapshot.user_count,
            "n": snapshot.n,
        }

    def predict(self, X, names, meta=None) -> dict:
        snapshot = self._loaded()
        try:
            user_id, k = parse_request(X, n=snapshot.n)
        except RequestError as exc:
            raise ServiceError(str(exc), status_code=400, reason="MICROSERVICE_BAD_DATA") from None
        return snapshot.recommend(user_id, k)

    def tags(self) -> dict:
        if self._snapshot is None:
            return {}
        return {"model_version": self._snapshot.model_version}

    def init_metadata(self) -> dict:
        """Seldon's metadata hook (GET /metadata, gRPC Metadata). Called before load(): reads the manifest only."""
        custom = {"snapshot_root": str(self.snapshot_root)}
        try:
            manifest = read_manifest(latest_version_dir(self.snapshot_root))
        except SnapshotError as exc:
            versions = []
            custom["snapshot_error"] = str(exc)
        else:
            versions = [manifest.model_version]
            custom.update(model_version=manifest.model_version, created_at=manifest.created_at, n=str(manifest.n))
        return {
            "name": "recommender",
            "versions": versions,
            "platform": "seldon-core-python",
            "inputs": [
                {
                    "messagetype": "jsonData",
                    "schema": {
                        "user_id": "string, required: the raw user id",
                        "k": f"integer, optional, 1..n (default {DEFAULT_K}, capped at n)",
                    },
                }
            ],
            "outputs": [
                {
                    "messagetype": "jsonData",
                    "schema": {
                        "user_id": "string",
                        "item_ids": "array of string, best first",
                        "scores": "array of number, same order",
                        "source": "personal | popular (fallback for users without recommendations)",
                        "model_version": "string",
                    },
                }
            ],
            "custom": custom,
        }
