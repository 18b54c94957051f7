"""The lookup API: what a request may hold, how it is checked, and how it is answered from a snapshot.

No Seldon import here (the wrapper in serving.recommender_service does the transport), so the batch venv tests it.
One request's ``jsonData`` is one of::

    {"user_id": "42", "k": 10, "exclude": ["i1", "i7"]}          top-k for a user
    {"item_id": "i5", "k": 10, "exclude": [...]}                  top-k items similar to an item
    {"requests": [<either of the above>, ...]}                    a batch, answered from one snapshot

``k`` (default 10, capped at the snapshot's n) and ``exclude`` are optional. Ids are looked up in their normal
form (serving.ids.normalise_id: Unicode NFC, without leading or trailing white space), the form every id in a
snapshot has; an id that breaks the id contract cannot be in a snapshot and gets the answer for an unknown id.
Answers::

    {"user_id": "42", "item_ids": [...], "scores": [...], "source": "personal", "fallback_count": 0,
     "model_version": "..."}
    {"item_id": "i5", ..., "source": "similar" | "similar+popular" | "popular", ...}
    {"results": [<answer>, ...], "model_version": "..."}

Every check raises RequestError with a message that names the field (``requests[3].k``) and what was wrong.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from serving import ids
from serving.lookup import LoadedSnapshot

DEFAULT_K = 10
LOOKUP_FIELDS = ("user_id", "item_id", "k", "exclude")
_LOOKUP_FIELD_SET = frozenset(LOOKUP_FIELDS)
BATCH_FIELD = "requests"
# gRPC's default message limit is 4 MiB (4,194,304 bytes); answers are kept under this with room for the envelope.
GRPC_MESSAGE_LIMIT = 4 * 1024 * 1024
# Per-item and per-answer allowances of the size estimate: the JSON or protobuf Struct text of one score
# (up to 25 characters for a double), quotes, commas and field names, rounded up.
_BYTES_PER_ITEM = 40
_BYTES_PER_ANSWER = 200


class RequestError(ValueError):
    """A lookup request that cannot be answered as asked; the message names the offending field."""


@dataclass(frozen=True)
class Limits:
    """Bounds on one request. They are service parameters, and the OpenAPI document states them."""

    max_batch: int = 100
    max_exclude: int = 500
    max_id_chars: int = ids.MAX_ID_CHARS
    max_response_bytes: int = 3_500_000
    max_request_bytes: int = 1_048_576

    def __post_init__(self):
        for name in ("max_batch", "max_exclude", "max_id_chars", "max_response_bytes", "max_request_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_response_bytes >= GRPC_MESSAGE_LIMIT:
            raise ValueError(f"max_response_bytes must stay under gRPC's {GRPC_MESSAGE_LIMIT:,}-byte message limit, "
                             f"got {self.max_response_bytes:,}")


class Lookup(NamedTuple):
    """One checked look-up: ``kind`` is "user" or "similar", ``key`` the user or item id."""

    kind: str
    key: str
    k: int
    exclude: tuple[str, ...] = ()


class ParsedRequest(NamedTuple):
    lookups: tuple[Lookup, ...]
    batch: bool


def parse_json_data(payload, *, n: int, limits: Limits = Limits(), numbers_are_doubles: bool = False) -> ParsedRequest:
    """Check a request's jsonData against the snapshot's ``n`` and the limits; raise RequestError naming the problem.

    ``numbers_are_doubles``: gRPC's Struct carries every number as a double, so there an integral 3.0 is k=3;
    over REST k must be a JSON integer.
    """
    if not isinstance(payload, dict):
        raise RequestError(
            'jsonData must be an object such as {"user_id": "42", "k": 10}, {"item_id": "i5"} or '
            f'{{"requests": [...]}}, got {_type_name(payload)}'
        )
    if BATCH_FIELD in payload:
        unknown = sorted(set(payload) - {BATCH_FIELD})
        if unknown:
            raise RequestError(f"a batch holds only {BATCH_FIELD!r}; unexpected field(s) {unknown} in jsonData")
        items = payload[BATCH_FIELD]
        if not isinstance(items, list) or not items:
            raise RequestError(f"{BATCH_FIELD} must be a non-empty list of look-ups, got {_describe(items)}")
        if len(items) > limits.max_batch:
            raise RequestError(f"{BATCH_FIELD} holds {len(items)} look-ups; the limit is {limits.max_batch} per request")
        lookups = tuple(
            _parse_lookup(item, f"{BATCH_FIELD}[{i}].", n=n, limits=limits, numbers_are_doubles=numbers_are_doubles)
            for i, item in enumerate(items)
        )
        return ParsedRequest(lookups, batch=True)
    return ParsedRequest((_parse_lookup(payload, "", n=n, limits=limits, numbers_are_doubles=numbers_are_doubles),),
                         batch=False)


def _parse_lookup(payload, prefix: str, *, n: int, limits: Limits, numbers_are_doubles: bool) -> Lookup:
    where = prefix.rstrip(".") or "jsonData"
    if not isinstance(payload, dict):
        raise RequestError(f'{where} must be an object such as {{"user_id": "42", "k": 10}}, got {_type_name(payload)}')
    if BATCH_FIELD in payload and prefix:
        raise RequestError(f"{prefix}{BATCH_FIELD}: a batch cannot hold another batch")
    for name in payload:
        if name not in _LOOKUP_FIELD_SET:
            unknown = sorted(set(payload) - _LOOKUP_FIELD_SET)
            raise RequestError(f"unknown field(s) {unknown} in {where}; expected user_id or item_id (string), "
                               f"optional k (integer), optional exclude (list of item ids) or {BATCH_FIELD} (list)")
    if "user_id" in payload and "item_id" in payload:
        raise RequestError(f"{where} gives both user_id and item_id; give one (user_id: top-k for a user, "
                           f"item_id: items similar to an item)")
    if "user_id" in payload:
        kind, field = "user", "user_id"
    elif "item_id" in payload:
        kind, field = "similar", "item_id"
    else:
        raise RequestError(f"{prefix}user_id is required in {where} (a non-empty string), or item_id for similar "
                           f"items, or {BATCH_FIELD} for a batch")
    key = _id(payload[field], f"{prefix}{field}", limits)

    k = payload.get("k", min(DEFAULT_K, n))
    if numbers_are_doubles and isinstance(k, float) and k.is_integer():
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int):
        raise RequestError(f"{prefix}k must be an integer between 1 and {n}, got {_describe(k)}")
    if not 1 <= k <= n:
        raise RequestError(f"{prefix}k must be between 1 and {n}, got {k}")

    exclude = payload.get("exclude")
    if exclude is None and "exclude" not in payload:
        return Lookup(kind, key, k)
    if not isinstance(exclude, list):
        raise RequestError(f"{prefix}exclude must be a list of item id strings, got {_describe(exclude)}")
    if len(exclude) > limits.max_exclude:
        raise RequestError(f"{prefix}exclude holds {len(exclude)} item ids; the limit is {limits.max_exclude}")
    checked = tuple(_id(item, f"{prefix}exclude[{i}]", limits) for i, item in enumerate(exclude))
    return Lookup(kind, key, k, checked)


def _id(value, field: str, limits: Limits) -> str:
    """The id ``value`` of ``field`` in normal form (serving.ids.normalise_id); RequestError for a value that is not
    a non-empty string of valid Unicode within ``limits.max_id_chars`` characters (as sent)."""
    if not isinstance(value, str) or not value:
        raise RequestError(f"{field} must be a non-empty string, got {_describe(value)}")
    if len(value) > limits.max_id_chars:
        raise RequestError(f"{field} is {len(value)} characters long; the limit is {limits.max_id_chars}")
    if not value.isascii():  # ASCII ids (the usual ones) are valid UTF-8; others may hold lone surrogates
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(f"{field} is not valid Unicode text (it holds a lone surrogate such as "
                               f"\\ud800)") from None
    return ids.normalise_id(value)


def _type_name(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _describe(value) -> str:
    text = repr(value)
    return f"{_type_name(value)} {text if len(text) <= 60 else text[:57] + '...'}"


def estimated_answer_bytes(request: ParsedRequest, snapshot: LoadedSnapshot) -> int:
    """An upper bound of the answer's size as JSON or as a protobuf Struct (ids at the widest item id)."""
    per_item = snapshot.max_item_id_bytes + _BYTES_PER_ITEM
    total = 0
    for lookup in request.lookups:
        total += _BYTES_PER_ANSWER + 4 * len(lookup.key) + lookup.k * per_item  # 4: the most UTF-8 bytes per char
    return total


def answer(request: ParsedRequest, snapshot: LoadedSnapshot, limits: Limits = Limits()) -> dict:
    """Answer every look-up from the one ``snapshot`` (so a batch never mixes model versions)."""
    size = estimated_answer_bytes(request, snapshot)
    if size > limits.max_response_bytes:
        raise RequestError(
            f"the answer to this request could reach {_size(size)}, over the {_size(limits.max_response_bytes)} "
            f"limit that keeps answers under gRPC's 4 MB message cap: send fewer look-ups or a smaller k"
        )
    results = [_one(lookup, snapshot) for lookup in request.lookups]
    if request.batch:
        return {"results": results, "model_version": snapshot.model_version}
    return results[0]


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1_000_000 else f"{n:,} bytes"


def _one(lookup: Lookup, snapshot: LoadedSnapshot) -> dict:
    if lookup.kind == "user":
        return snapshot.recommend(lookup.key, lookup.k, lookup.exclude)
    return snapshot.similar_items(lookup.key, lookup.k, lookup.exclude)
