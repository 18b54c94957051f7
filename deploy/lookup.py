"""Load a verified serving snapshot into compact numpy arrays and answer lookups.

numpy + pyarrow only (no Seldon), so the batch environment can import and unit-test it. The Seldon wrapper in
deploy.recommender_service maps ``RequestError`` to HTTP 400 and ``SnapshotError`` to "not ready".

In memory, per loaded snapshot:

* ``user_keys``: sorted UTF-8 user ids (numpy ``S`` dtype), found with ``np.searchsorted``;
* ``item_idx``: int32 ``[users, width]`` indices into ``item_vocab``, -1 past each user's list;
* ``scores``: float32 ``[users, width]``, NaN past each user's list; ``lengths`` says how long each list is;
* ``popular_item_ids`` / ``popular_scores``: the fallback list in rank order.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from deploy.snapshot import Manifest, SnapshotError, latest_version_dir, verify_snapshot

DEFAULT_K = 10
REQUEST_FIELDS = ("user_id", "k")


class RequestError(ValueError):
    """A lookup request that cannot be answered as asked; the message names the offending field."""


@dataclass(frozen=True)
class LoadedSnapshot:
    manifest: Manifest
    user_keys: np.ndarray
    lengths: np.ndarray
    item_idx: np.ndarray
    scores: np.ndarray
    item_vocab: np.ndarray
    popular_item_ids: np.ndarray
    popular_scores: np.ndarray

    @property
    def model_version(self) -> str:
        return self.manifest.model_version

    @property
    def n(self) -> int:
        """The largest k a request may ask for (the snapshot's top-N)."""
        return self.manifest.n

    @property
    def user_count(self) -> int:
        return int(self.user_keys.size)

    def row_of(self, user_id: str) -> int | None:
        """Row of ``user_id`` in the matrices, or None for a user the snapshot does not know."""
        key = user_id.encode("utf-8")
        keys = self.user_keys
        # A key wider than the array's dtype cannot be in it; checking first also keeps searchsorted from
        # casting the whole array to a wider dtype on every request.
        if keys.size == 0 or len(key) > keys.dtype.itemsize:
            return None
        needle = np.array(key, dtype=keys.dtype)
        row = int(np.searchsorted(keys, needle))
        if row < keys.size and keys[row] == needle:
            return row
        return None

    def recommend(self, user_id: str, k: int) -> dict:
        """Top-``k`` items for ``user_id``; users without a personal list get the popular items."""
        row = self.row_of(user_id)
        if row is not None and self.lengths[row] > 0:
            m = min(k, int(self.lengths[row]))
            item_ids = self.item_vocab[self.item_idx[row, :m]].tolist()
            scores = _floats(self.scores[row, :m])
            source = "personal"
        else:
            item_ids = self.popular_item_ids[:k].tolist()
            scores = _floats(self.popular_scores[:k])
            source = "popular"
        return {
            "user_id": user_id,
            "item_ids": item_ids,
            "scores": scores,
            "source": source,
            "model_version": self.model_version,
        }


def _floats(values: np.ndarray) -> list[float]:
    """JSON-friendly floats: a float32 0.9 becomes 0.9, not 0.8999999761581421."""
    if values.dtype == np.float32:
        return [float(text) for text in values.astype(str)]
    return values.tolist()


def parse_request(payload, *, n: int) -> tuple[str, int]:
    """Validate a request's jsonData and return ``(user_id, k)``; raise RequestError naming the problem."""
    if not isinstance(payload, dict):
        raise RequestError(
            f'expected jsonData to be an object such as {{"user_id": "42", "k": 10}}, got {type(payload).__name__}'
        )
    unknown = sorted(set(payload) - set(REQUEST_FIELDS))
    if unknown:
        raise RequestError(f"unknown field(s) {unknown} in jsonData; expected user_id (string) and optional k (integer)")
    if "user_id" not in payload:
        raise RequestError("user_id is required in jsonData (a non-empty string)")
    user_id = payload["user_id"]
    if not isinstance(user_id, str) or not user_id:
        raise RequestError(f"user_id must be a non-empty string, got {type(user_id).__name__} {user_id!r}")
    k = payload.get("k", min(DEFAULT_K, n))
    # gRPC's Struct carries every number as a double, so an integral float is an integer here.
    if isinstance(k, float) and k.is_integer():
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int):
        raise RequestError(f"k must be an integer between 1 and {n}, got {type(k).__name__} {k!r}")
    if not 1 <= k <= n:
        raise RequestError(f"k must be between 1 and {n}, got {k}")
    return user_id, k


def load_snapshot(snapshot_root: str | os.PathLike) -> LoadedSnapshot:
    """Verify the snapshot LATEST points at (checksums, row counts, schemas) and load it into numpy arrays.

    Every reason not to serve it is a SnapshotError, including files that cannot be read or parsed.
    """
    try:
        return _load(verify_snapshot(latest_version_dir(snapshot_root)))
    except (OSError, pa.ArrowException) as exc:
        raise SnapshotError(f"cannot read the snapshot under {snapshot_root}: {type(exc).__name__}: {exc}") from exc


def _load(manifest: Manifest) -> LoadedSnapshot:
    recs = _read_table(manifest, "user_recommendations", ["user_id", "item_ids", "scores"])
    popular = _read_table(manifest, "popular_items", ["rank", "item_id", "score"])

    user_ids = _column(recs, "user_recommendations", "user_id")
    item_lists = _column(recs, "user_recommendations", "item_ids")
    score_lists = _column(recs, "user_recommendations", "scores")
    lengths = pc.list_value_length(item_lists).to_numpy(zero_copy_only=False).astype(np.int32)
    score_lengths = pc.list_value_length(score_lists).to_numpy(zero_copy_only=False)
    where = "user_recommendations"
    if not np.array_equal(lengths, score_lengths):
        row = int(np.flatnonzero(lengths != score_lengths)[0])
        raise SnapshotError(
            f"{manifest.path / where}: user {user_ids[row].as_py()!r} has {lengths[row]} item_ids but {score_lengths[row]} scores"
        )
    if lengths.size and lengths.max() > manifest.n:
        row = int(lengths.argmax())
        raise SnapshotError(
            f"{manifest.path / where}: user {user_ids[row].as_py()!r} has {lengths[row]} items, more than the manifest's n={manifest.n}"
        )
    flat_items = item_lists.flatten()
    flat_scores = score_lists.flatten()
    if flat_items.null_count or flat_scores.null_count:
        raise SnapshotError(f"{manifest.path / where}: item_ids or scores hold null elements")

    encoded = flat_items.dictionary_encode()
    item_vocab = encoded.dictionary.to_numpy(zero_copy_only=False).astype(str)
    width = max(int(lengths.max(initial=0)), 1)
    item_idx = np.full((len(lengths), width), -1, dtype=np.int32)
    scores = np.full((len(lengths), width), np.nan, dtype=np.float32)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    cols = np.arange(rows.size) - np.repeat(starts, lengths)
    item_idx[rows, cols] = encoded.indices.to_numpy(zero_copy_only=False)
    scores[rows, cols] = flat_scores.to_numpy(zero_copy_only=False)

    keys = user_ids.cast(pa.binary()).to_numpy(zero_copy_only=False).astype(np.bytes_)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    duplicated = np.flatnonzero(keys[1:] == keys[:-1])
    if duplicated.size:
        raise SnapshotError(
            f"{manifest.path / where}: user_id {keys[duplicated[0]].decode('utf-8')!r} appears more than once"
        )

    popular = popular.take(pc.sort_indices(popular, sort_keys=[("rank", "ascending")]))
    if popular.num_rows == 0:
        raise SnapshotError(f"{manifest.path / 'popular_items'}: no rows; unknown users would get nothing")
    popular_item_ids = _column(popular, "popular_items", "item_id").to_numpy(zero_copy_only=False).astype(str)
    popular_scores = _column(popular, "popular_items", "score").to_numpy(zero_copy_only=False)

    return LoadedSnapshot(
        manifest=manifest,
        user_keys=keys,
        lengths=lengths[order],
        item_idx=item_idx[order],
        scores=scores[order],
        item_vocab=item_vocab,
        popular_item_ids=popular_item_ids[: manifest.n],
        popular_scores=popular_scores[: manifest.n].astype(np.float64),
    )


def _read_table(manifest: Manifest, name: str, columns: list[str]) -> pa.Table:
    """The files the manifest lists (never whatever else lies in the folder), as one table."""
    parts = [pq.read_table(path, columns=columns) for path in manifest.table_files(name)]
    return pa.concat_tables(parts)


def _column(table: pa.Table, name: str, column: str) -> pa.Array:
    values = table.column(column).combine_chunks()
    if values.null_count:
        raise SnapshotError(f"{name}: column {column!r} holds {values.null_count} null value(s)")
    return values
