"""The OpenAPI 3.0 description of the lookup service's REST routes, and the swagger page that shows it.

Built per request from the same limits the service enforces (serving.api.Limits) and the snapshot it serves (k's
maximum is the snapshot's n, the document names the model version), so the description cannot drift from the
behaviour. The service answers ``GET /openapi.json`` (also at Seldon's ``/seldon.json``) and ``GET /docs``; a test
fuzzes every described operation against the running service and requires zero server errors.

Routes Seldon would also answer but that make no sense for this model (feedback, routing, transforms) answer 404,
so the description covers every route that does something.
"""
from __future__ import annotations

from serving.api import DEFAULT_K, Limits

API_VERSION = "1.1.0"
PREDICTION_PATHS = ("/api/v1.0/predictions", "/api/v0.1/predictions", "/predict")
HEALTH_STATUS_PATHS = ("/health/status", "/api/v1.0/health/status")
METADATA_PATHS = ("/metadata", "/api/v1.0/metadata")
SOURCES = ["personal", "similar", "popular", "personal+popular", "similar+popular"]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _request_schemas(limits: Limits, n: int | None) -> dict:
    """The look-ups: for a user, for an item, a batch of either, and Seldon's request around them."""
    identifier = {"type": "string", "minLength": 1, "maxLength": limits.max_id_chars,
                  "description": "looked up in normal form: Unicode NFC, without leading or trailing white space"}
    k = {"type": "integer", "minimum": 1, "description": "how many items to return (default 10, capped at n)"}
    if n is not None:
        k.update(maximum=n, default=min(DEFAULT_K, n),
                 description=f"how many items to return, 1..{n} (the snapshot's precomputed n); default {min(DEFAULT_K, n)}")
    exclude = {"type": "array", "maxItems": limits.max_exclude, "items": identifier,
               "description": "item ids that must not appear in the answer (e.g. already shown or bought)"}
    return {
        "UserLookup": {
            "type": "object", "required": ["user_id"], "additionalProperties": False,
            "description": "Top-k items for a user; users without a list get the popular items.",
            "properties": {"user_id": {**identifier, "example": "42"}, "k": k, "exclude": exclude},
        },
        "SimilarLookup": {
            "type": "object", "required": ["item_id"], "additionalProperties": False,
            "description": "Top-k items similar to an item (never the item itself); unknown items get the popular items.",
            "properties": {"item_id": {**identifier, "example": "i5"}, "k": k, "exclude": exclude},
        },
        "BatchLookup": {
            "type": "object", "required": ["requests"], "additionalProperties": False,
            "description": "Several look-ups answered from one snapshot (one model version) in one round trip.",
            "properties": {"requests": {"type": "array", "minItems": 1, "maxItems": limits.max_batch,
                                        "items": {"oneOf": [_ref("UserLookup"), _ref("SimilarLookup")]}}},
        },
        "PredictionRequest": {
            "type": "object", "required": ["jsonData"], "additionalProperties": False,
            "properties": {
                "jsonData": {"oneOf": [_ref("UserLookup"), _ref("SimilarLookup"), _ref("BatchLookup")]},
                "meta": {"type": "object", "description": "Seldon request metadata (puid, tags); not used"},
            },
        },
    }


def _answer_schemas() -> dict:
    """The answers: to one look-up, to a batch, and Seldon's response around them."""
    return {
        "LookupAnswer": {
            "type": "object", "required": ["item_ids", "scores", "source", "fallback_count", "model_version"],
            "properties": {
                "user_id": {"type": "string"},
                "item_id": {"type": "string"},
                "item_ids": {"type": "array", "items": {"type": "string"}, "description": "best first; exactly k "
                             "unless the snapshot has fewer distinct items left after the exclusions"},
                "scores": {"type": "array", "items": {"type": "number"},
                           "description": "same order; fallback items carry the popular list's score"},
                "source": {"type": "string", "enum": SOURCES,
                           "description": "where the items came from; '+popular' means padded from the fallback"},
                "fallback_count": {"type": "integer", "minimum": 0,
                                   "description": "how many trailing items came from the popular fallback"},
                "model_version": {"type": "string"},
            },
        },
        "BatchAnswer": {
            "type": "object", "required": ["results", "model_version"],
            "properties": {"results": {"type": "array", "items": _ref("LookupAnswer")},
                           "model_version": {"type": "string"}},
        },
        "PredictionResponse": {
            "type": "object", "required": ["jsonData", "meta"],
            "properties": {
                "jsonData": {"anyOf": [_ref("LookupAnswer"), _ref("BatchAnswer")]},
                "meta": {"type": "object", "properties": {
                    "tags": {"type": "object", "properties": {"model_version": {"type": "string"}}}}},
            },
        },
    }


def _service_schemas() -> dict:
    """What the other routes answer: errors, readiness and Seldon's model metadata."""
    return {
        "Error": {
            "type": "object", "required": ["status"],
            "properties": {"status": {
                "type": "object", "required": ["info", "reason"],
                "properties": {"status": {"type": "integer"}, "code": {"type": "integer"},
                               "info": {"type": "string", "description": "what was wrong, naming the field"},
                               "reason": {"type": "string"}},
            }},
        },
        "Health": {
            "type": "object", "required": ["jsonData"],
            "properties": {
                "jsonData": {"type": "object", "required": ["ready", "model_version"], "properties": {
                    "ready": {"type": "boolean"}, "model_version": {"type": "string"},
                    "users": {"type": "integer"}, "similar_items": {"type": "integer"}, "n": {"type": "integer"}}},
                "meta": {"type": "object"},
            },
        },
        "Metadata": {
            "type": "object", "required": ["name", "versions"],
            "properties": {"name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
                           "platform": {"type": "string"}, "inputs": {"type": "array"},
                           "outputs": {"type": "array"}, "custom": {"type": "object"}},
        },
    }


def _schemas(limits: Limits, n: int | None) -> dict:
    """The document's components.schemas, for these limits and a snapshot of ``n`` items a list (None: none yet)."""
    return {**_request_schemas(limits, n), **_answer_schemas(), **_service_schemas()}


def _errors(*codes: int) -> dict:
    text = {
        400: "the request is not a valid look-up; the message names the field and the problem",
        404: "no such route",
        405: "wrong method for this route",
        413: "the request body is larger than the service accepts",
        415: "the body is not application/json",
        503: "not ready: no snapshot loaded yet (the message says why)",
    }
    return {str(code): _json(_ref("Error"), text[code]) for code in codes}


def _predict_operation(limits: Limits) -> dict:
    """The look-up operation of every prediction path (each adds its operationId and tags)."""
    return {
        "summary": "Look up top-k items for a user, similar items for an item, or a batch of either",
        "description": (
            "Every answer holds exactly k items when the snapshot has that many distinct items: the personal (or "
            "similar-item) list minus `exclude`, padded from the popular items not already in the answer and not "
            "excluded. `source` and `fallback_count` say which. Answers and `meta.tags.model_version` name the "
            f"model version that answered. Limits: {limits.max_batch} look-ups per batch, {limits.max_exclude} "
            f"excluded ids per look-up, ids up to {limits.max_id_chars} characters, bodies up to "
            f"{limits.max_request_bytes:,} bytes, answers up to {limits.max_response_bytes:,} bytes."
        ),
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": _ref("PredictionRequest"),
            "examples": {
                "user": {"value": {"jsonData": {"user_id": "42", "k": 5, "exclude": ["i1"]}}},
                "similar": {"value": {"jsonData": {"item_id": "i5", "k": 5}}},
                "batch": {"value": {"jsonData": {"requests": [{"user_id": "42"}, {"item_id": "i5", "k": 3}]}}},
            },
        }}},
        "responses": {"200": _json(_ref("PredictionResponse"), "the answer"), **_errors(400, 413, 415, 503)},
    }


def _paths(limits: Limits) -> dict:
    """Every route the service answers, by path: the prediction paths, health, metadata and this document."""
    predict = _predict_operation(limits)
    paths = {}
    for path in PREDICTION_PATHS:
        op_id = "predict" if path == PREDICTION_PATHS[0] else "predict" + path.replace("/", "_").replace(".", "")
        paths[path] = {"post": {**predict, "operationId": op_id, "tags": ["lookups"]}}
    for path in HEALTH_STATUS_PATHS:
        paths[path] = {"get": {
            "summary": "Readiness: 200 once a snapshot is loaded and verified, 503 before",
            "operationId": "healthStatus" + ("" if path == HEALTH_STATUS_PATHS[0] else "V1"), "tags": ["health"],
            "responses": {"200": _json(_ref("Health"), "ready"), **_errors(503)},
        }}
    paths["/health/ping"] = {"get": {
        "summary": "Liveness: the HTTP server answers (also while the first snapshot loads)",
        "operationId": "healthPing", "tags": ["health"],
        "responses": {"200": {"description": "alive", "content": {"text/html": {"schema": {"type": "string"}}}}},
    }}
    for path in METADATA_PATHS:
        paths[path] = {"get": {
            "summary": "Seldon model metadata: name, served model version, inputs and outputs",
            "operationId": "metadata" + ("" if path == METADATA_PATHS[0] else "V1"), "tags": ["metadata"],
            "responses": {"200": _json(_ref("Metadata"), "metadata")},
        }}
    paths["/openapi.json"] = {"get": {
        "summary": "This document", "operationId": "openapi", "tags": ["metadata"],
        "responses": {"200": _json({"type": "object"}, "the OpenAPI description")},
    }}
    paths["/docs"] = {"get": {
        "summary": "Swagger UI page for this document", "operationId": "docs", "tags": ["metadata"],
        "responses": {"200": {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}},
    }}
    return paths


def openapi_document(limits: Limits, *, n: int | None, model_version: str | None, snapshot_created_at: str | None = None) -> dict:
    """The document for the service as it is now (``n`` and ``model_version`` are None before the first load)."""
    served = f"model version `{model_version}` (snapshot created {snapshot_created_at})" if model_version else "no snapshot yet"
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Recommender lookup service",
            "version": API_VERSION,
            "description": f"Live look-ups from the precomputed top-n snapshot (Seldon Core v1 wrapper). Serving {served}.",
        },
        "x-model-version": model_version,
        "x-snapshot-created-at": snapshot_created_at,
        "paths": _paths(limits),
        "components": {"schemas": _schemas(limits, n)},
    }


SWAGGER_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Recommender lookup service - API</title>
  <link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js"></script>
  <script>
    // Relative URLs: the page also works behind Seldon's ingress prefix (/seldon/<namespace>/<name>/docs).
    window.ui = SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true});
  </script>
</body>
</html>
"""
