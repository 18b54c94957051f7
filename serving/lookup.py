"""A serving snapshot as compact numpy arrays, and the look-ups answered from it.

numpy + pyarrow only (no Seldon, no pyspark), so both environments import it and the batch venv unit-tests it.

In memory (or memory-mapped from the per-pod cache, see serving.snapshot_cache), per loaded snapshot:

* ``item_vocab``: every item id the snapshot mentions, sorted UTF-8 bytes (numpy ``S`` dtype); item lists hold
  indices into it, so an id is stored once however many lists it is in;
* ``users`` (user_recommendations) and ``similar`` (similar_items, optional): a ``TopLists`` each, i.e.
  sorted keys (``S``, found with ``np.searchsorted``), ``lengths`` (uint8/uint16), ``items`` (uint16 when the
  vocabulary has fewer than 65,536 ids, else int32) and ``scores`` (float32), both ``[rows, n]``;
* ``popular_items`` / ``popular_scores``: the fallback list in rank order.

Bytes per user = n x (2 or 4) for item indices + n x 4 for scores + 1 or 2 for the length + the widest user id
(fixed-width keys). With n=100, a vocabulary under 65,536 items and 7-character ids: 608 bytes.

Every answer holds exactly ``k`` items when the snapshot has that many distinct items to give: the personal (or
similar-item) list first, minus excluded items, then padded from the popular fallback (items not already in the
answer and not excluded). ``source`` and ``fallback_count`` say where the items came from.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from serving.snapshot import Manifest, SnapshotError, check_ids, latest_version_dir, list_leaf_path, verify_snapshot

USER_TABLE = "user_recommendations"
SIMILAR_TABLE = "similar_items"
POPULAR_TABLE = "popular_items"
# The fallback list kept in memory: long enough to pad any answer even after a full list of exclusions.
MAX_POPULAR = 20_000
# Catalogues up to this size are also kept as Python strings in each process (about 70 bytes per item).
MAX_DECODED_VOCAB = 250_000
CACHE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class TopLists:
    """Precomputed top-n lists keyed by an id: user -> items, or item -> similar items.

    Row r holds ``items[r, :lengths[r]]`` (indices into the snapshot's item vocabulary) with ``scores[r, ...]``,
    best first. Cells past a row's length are padding and never read.
    """

    keys: np.ndarray
    lengths: np.ndarray
    items: np.ndarray
    scores: np.ndarray

    def __post_init__(self):
        # Rows are read with struct.unpack_from straight from the arrays' memory: one C call per row instead of
        # several numpy calls, which cost more than the look-up itself in a request (cold caches, dispatch).
        for name in ("lengths", "items", "scores"):
            array = getattr(self, name)
            if not array.flags.c_contiguous or not array.dtype.isnative:
                object.__setattr__(self, name, np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("=")))
        width = self.items.shape[1] if self.items.ndim == 2 else 0
        object.__setattr__(self, "_width", width)
        object.__setattr__(self, "_item_code", self.items.dtype.char)    # "H" (uint16) or "i" (int32)
        object.__setattr__(self, "_length_code", "=" + self.lengths.dtype.char)
        object.__setattr__(self, "_item_bytes", self.items.dtype.itemsize)

    @property
    def rows(self) -> int:
        return int(self.keys.size)

    def row_of(self, key: bytes) -> int | None:
        """Row of ``key`` (UTF-8 bytes), or None when it has no list here."""
        keys = self.keys
        # numpy's S dtype pads with NUL and ignores trailing NULs when comparing, so a key ending in NUL would
        # match its trimmed twin; snapshots with such ids are refused at load, and requests never match them.
        # A key wider than the dtype cannot be present; checking first also keeps searchsorted from casting the
        # whole array to a wider dtype on every request.
        if keys.size == 0 or len(key) > keys.dtype.itemsize or key.endswith(b"\0"):
            return None
        row = int(np.searchsorted(keys, key))
        if row < keys.size and keys[row] == key:
            return row
        return None

    def length(self, row: int) -> int:
        return struct.unpack_from(self._length_code, self.lengths, row * self.lengths.itemsize)[0]

    def row_items(self, row: int, count: int) -> tuple[int, ...]:
        """The first ``count`` item indices of ``row``."""
        return struct.unpack_from(f"={count}{self._item_code}", self.items, row * self._width * self._item_bytes)

    def row_scores(self, row: int, count: int) -> tuple[float, ...]:
        """The first ``count`` scores of ``row`` (float32 values as Python floats)."""
        return struct.unpack_from(f"={count}f", self.scores, row * self._width * 4)

    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.lengths.nbytes + self.items.nbytes + self.scores.nbytes)


@dataclass(frozen=True)
class LoadedSnapshot:
    """One verified snapshot, ready to answer. Immutable: a reload builds a new one and swaps the reference."""

    manifest: Manifest
    item_vocab: np.ndarray
    users: TopLists
    similar: TopLists | None
    popular_items: np.ndarray
    popular_scores: np.ndarray
    origin: str = "memory"

    def __post_init__(self):
        # The fallback list as Python objects: it is walked on every padded answer, and it is small.
        object.__setattr__(self, "_popular", list(zip(self.popular_items.tolist(), self.popular_scores.tolist())))
        # Item ids as Python strings when the catalogue is small enough (saves decoding them on every answer).
        names = None
        if self.item_vocab.size <= MAX_DECODED_VOCAB:
            names = [raw.decode("utf-8") for raw in self.item_vocab.tolist()]
        object.__setattr__(self, "_item_names", names)

    @property
    def model_version(self) -> str:
        return self.manifest.model_version

    @property
    def n(self) -> int:
        """The largest k a request may ask for (the snapshot's top-n)."""
        return self.manifest.n

    @property
    def user_count(self) -> int:
        return self.users.rows

    @property
    def similar_count(self) -> int:
        return 0 if self.similar is None else self.similar.rows

    @property
    def max_item_id_bytes(self) -> int:
        return int(self.item_vocab.dtype.itemsize)

    def bytes_per_user(self) -> float:
        """Memory of the per-user arrays divided by the number of users (what grows with the user count)."""
        return self.users.nbytes() / max(self.users.rows, 1)

    def nbytes(self) -> int:
        total = self.item_vocab.nbytes + self.users.nbytes() + self.popular_items.nbytes + self.popular_scores.nbytes
        return int(total + (self.similar.nbytes() if self.similar is not None else 0))

    def item_index(self, item_id: str) -> int | None:
        """Index of ``item_id`` in the vocabulary, or None if the snapshot never mentions it."""
        key = item_id.encode("utf-8")
        vocab = self.item_vocab
        if vocab.size == 0 or len(key) > vocab.dtype.itemsize or key.endswith(b"\0"):
            return None
        needle = np.array(key, dtype=vocab.dtype)
        index = int(np.searchsorted(vocab, needle))
        return index if index < vocab.size and vocab[index] == needle else None

    def recommend(self, user_id: str, k: int, exclude=()) -> dict:
        """Top-``k`` items for ``user_id`` (personal list, padded from the popular items), minus ``exclude``."""
        row = self.users.row_of(user_id.encode("utf-8"))
        item_ids, scores, own, fallback = self._top_k(self.users, row, k, exclude, skip=None)
        return {
            "user_id": user_id,
            "item_ids": item_ids,
            "scores": scores,
            "source": _source("personal", own, fallback),
            "fallback_count": fallback,
            "model_version": self.model_version,
        }

    def similar_items(self, item_id: str, k: int, exclude=()) -> dict:
        """Top-``k`` items similar to ``item_id`` (never itself), padded from the popular items, minus ``exclude``."""
        row = None if self.similar is None else self.similar.row_of(item_id.encode("utf-8"))
        item_ids, scores, own, fallback = self._top_k(self.similar, row, k, exclude, skip=self.item_index(item_id))
        return {
            "item_id": item_id,
            "item_ids": item_ids,
            "scores": scores,
            "source": _source("similar", own, fallback),
            "fallback_count": fallback,
            "model_version": self.model_version,
        }

    def _top_k(self, lists: TopLists | None, row: int | None, k: int, exclude, skip: int | None):
        """(item_ids, scores, items from the list, items from the fallback) for one look-up."""
        banned = self._excluded_indices(exclude)
        if skip is not None:
            banned.add(skip)
        chosen: list[int] = []
        scores: list[float] = []
        if row is not None:
            length = lists.length(row)
            if banned:
                for index, score in zip(lists.row_items(row, length), _floats(lists.row_scores(row, length))):
                    if index not in banned:
                        chosen.append(index)
                        scores.append(score)
                        if len(chosen) == k:
                            break
            else:
                take = min(k, length)
                chosen = list(lists.row_items(row, take))
                scores = _floats(lists.row_scores(row, take))
        own = len(chosen)
        if own < k:
            taken = banned.union(chosen)
            for index, score in self._popular:
                if index not in taken:
                    chosen.append(index)
                    scores.append(score)
                    if len(chosen) == k:
                        break
        names = self._item_names
        if names is not None:
            item_ids = [names[index] for index in chosen]
        else:
            item_ids = [raw.decode("utf-8") for raw in self.item_vocab[chosen].tolist()] if chosen else []
        return item_ids, scores, own, len(chosen) - own

    def _excluded_indices(self, exclude) -> set[int]:
        banned = set()
        for item_id in exclude:
            index = self.item_index(item_id)
            if index is not None:
                banned.add(index)
        return banned


def _source(own_name: str, own: int, fallback: int) -> str:
    if fallback == 0 and own > 0:
        return own_name
    if own == 0:
        return "popular"
    return f"{own_name}+popular"


_FLOAT32 = struct.Struct("<f")


def _floats(values) -> list[float]:
    """JSON-friendly floats from float32 values: 0.9 stays 0.9, not 0.8999999761581421.

    Each value becomes the double of the shortest of its 7-, 8- or 9-significant-digit forms that reads back as the
    same float32 (9 always does), about 4x faster than numpy's own shortest-repr conversion.
    """
    if isinstance(values, np.ndarray):
        values = values.astype(np.float32).tolist()
    out = []
    pack = _FLOAT32.pack
    for exact in values:
        packed = pack(exact)
        short = float("%.7g" % exact)
        if pack(short) != packed:
            short = float("%.8g" % exact)
            if pack(short) != packed:
                short = float("%.9g" % exact)
        out.append(short)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Building the arrays from the snapshot's parquet files
# ---------------------------------------------------------------------------------------------------------------


def load_snapshot(snapshot_root: str | os.PathLike) -> LoadedSnapshot:
    """Verify the snapshot LATEST points at (checksums, row counts, schemas) and build it in memory.

    Every reason not to serve it is a SnapshotError, including files that cannot be read or parsed.
    """
    return load_version(latest_version_dir(snapshot_root))


def load_version(version_dir: str | os.PathLike) -> LoadedSnapshot:
    """Verify one snapshot version folder and build its arrays in memory (its ids are checked against the id
    contract, serving.ids, as the arrays are built)."""
    try:
        return build_snapshot(verify_snapshot(version_dir, check_id_columns=False))
    except (OSError, pa.ArrowException) as exc:
        raise SnapshotError(f"cannot read the snapshot {version_dir}: {type(exc).__name__}: {exc}") from exc


@dataclass
class _RawLists:
    """One list table as read: keys, per-row lengths, and per-chunk (dictionary, indices) of the item lists."""

    where: Path
    keys: np.ndarray
    lengths: np.ndarray
    chunks: list[tuple[pa.Array, np.ndarray]]
    scores: np.ndarray


def build_snapshot(manifest: Manifest) -> LoadedSnapshot:
    """Arrays for a verified manifest. Consistency problems (duplicates, nulls, lists longer than n, ids that break
    the id contract, ...) raise SnapshotError naming the table and the first offending id."""
    users = _read_lists(manifest, USER_TABLE, "user_id")
    similar = _read_lists(manifest, SIMILAR_TABLE, "item_id") if SIMILAR_TABLE in manifest.tables else None
    popular_ids, popular_scores = _read_popular(manifest)

    dictionaries = [dictionary for raw in (users, similar) if raw is not None for dictionary, _ in raw.chunks]
    vocab = _vocabulary(dictionaries + [popular_ids], manifest.path)
    return LoadedSnapshot(
        manifest=manifest,
        item_vocab=vocab,
        users=_dense(users, vocab, manifest.n),
        similar=_dense(similar, vocab, manifest.n) if similar is not None else None,
        popular_items=_indices_of(popular_ids, vocab).astype(np.int32),
        popular_scores=popular_scores,
    )


def _read_lists(manifest: Manifest, name: str, key_column: str) -> _RawLists:
    """Read a list table with its item ids dictionary-encoded (the parquet dictionary pages, never one Python
    string per element), checking what the arrays rely on."""
    where = manifest.path / name
    keys, lengths, chunks, scores = [], [], [], []
    for path in manifest.table_files(name):
        table = pq.read_table(path, columns=[key_column, "item_ids", "scores"],
                              read_dictionary=[list_leaf_path(path, "item_ids")])
        key_values = table.column(key_column)
        if key_values.null_count:
            raise SnapshotError(f"{where}: column {key_column!r} holds {key_values.null_count} null value(s)")
        file_keys = _as_bytes(key_values, where, key_column)
        keys.append(file_keys)
        item_column = table.column("item_ids")
        first_row = 0
        for items, item_scores in zip(item_column.chunks, _rechunk(table.column("scores"), item_column)):
            if items.null_count or item_scores.null_count:
                raise SnapshotError(f"{where}: item_ids or scores hold null lists")
            item_lengths = pc.list_value_length(items).to_numpy(zero_copy_only=False)
            score_lengths = pc.list_value_length(item_scores).to_numpy(zero_copy_only=False)
            if not np.array_equal(item_lengths, score_lengths):
                row = int(np.flatnonzero(item_lengths != score_lengths)[0])
                key = file_keys[first_row + row].decode("utf-8")
                raise SnapshotError(f"{where}: {key_column} {key!r} has {item_lengths[row]} item_ids but "
                                    f"{score_lengths[row]} scores")
            flat_items = items.flatten()
            flat_scores = item_scores.flatten()
            if flat_items.null_count or flat_scores.null_count:
                raise SnapshotError(f"{where}: item_ids or scores hold null elements")
            lengths.append(item_lengths.astype(np.int64))
            chunks.append((flat_items.dictionary, flat_items.indices.to_numpy(zero_copy_only=False)))
            scores.append(flat_scores.to_numpy(zero_copy_only=False).astype(np.float32, copy=False))
            first_row += len(items)
    all_keys = np.concatenate(keys) if keys else np.array([], dtype="S1")
    all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    if all_lengths.size and all_lengths.max() > manifest.n:
        row = int(all_lengths.argmax())
        raise SnapshotError(f"{where}: {key_column} {all_keys[row].decode('utf-8')!r} has {all_lengths[row]} items, "
                            f"more than the manifest's n={manifest.n}")
    all_scores = np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)
    _check_finite(all_scores, where)
    return _RawLists(where, all_keys, all_lengths, chunks, all_scores)


def _check_finite(scores: np.ndarray, where: Path) -> None:
    """A NaN or infinite score would reach clients as invalid JSON; the batch side promises none, so refuse."""
    bad = int(scores.size - np.count_nonzero(np.isfinite(scores)))
    if bad:
        raise SnapshotError(f"{where}: {bad} score(s) are NaN or infinite")


def _rechunk(values: pa.ChunkedArray, like: pa.ChunkedArray) -> list[pa.Array]:
    """``values`` split into the same row ranges as ``like``'s chunks (two columns of one table may differ)."""
    combined = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    parts, start = [], 0
    for chunk in like.chunks:
        parts.append(combined.slice(start, len(chunk)))
        start += len(chunk)
    return parts


def _as_bytes(values: pa.ChunkedArray, where: Path, column: str) -> np.ndarray:
    """A string column of ids as a numpy ``S`` array of their UTF-8 bytes; SnapshotError for an id that breaks the
    id contract (serving.ids), which also keeps out the ids ending in NUL that the ``S`` dtype cannot hold."""
    check_ids(values, where, column)
    keys = values.combine_chunks().cast(pa.binary()).to_numpy(zero_copy_only=False)
    return keys.astype(np.bytes_) if keys.size else np.array([], dtype="S1")


def _read_popular(manifest: Manifest) -> tuple[pa.Array, np.ndarray]:
    where = manifest.path / POPULAR_TABLE
    parts = [pq.read_table(path, columns=["rank", "item_id", "score"]) for path in manifest.table_files(POPULAR_TABLE)]
    popular = pa.concat_tables(parts).combine_chunks()
    for column in ("rank", "item_id", "score"):
        if popular.column(column).null_count:
            raise SnapshotError(f"{where}: column {column!r} holds {popular.column(column).null_count} null value(s)")
    if popular.num_rows == 0:
        raise SnapshotError(f"{where}: no rows; unknown users would get nothing")
    popular = popular.take(pc.sort_indices(popular, sort_keys=[("rank", "ascending")]))
    ids = popular.column("item_id").combine_chunks()
    if len(pc.unique(ids)) != len(ids):
        counts = pc.value_counts(ids)
        dup = next(entry["values"].as_py() for entry in counts if entry["counts"].as_py() > 1)
        raise SnapshotError(f"{where}: item_id {dup!r} appears more than once")
    ids = ids.slice(0, MAX_POPULAR)
    scores = popular.column("score").combine_chunks().slice(0, MAX_POPULAR).to_numpy(zero_copy_only=False)
    _check_finite(scores, where)
    return ids, scores.astype(np.float64)


def _vocabulary(dictionaries: list[pa.Array], where: Path) -> np.ndarray:
    """Sorted unique item ids (UTF-8 bytes) over every item list and the popular items."""
    if dictionaries:
        values = pa.concat_arrays([d.cast(pa.string()) for d in dictionaries])
        unique = pc.unique(values)
    else:
        unique = pa.array([], pa.string())
    vocab = _as_bytes(pa.chunked_array([unique], pa.string()), where, "item id")
    return np.unique(vocab) if vocab.size else np.array([], dtype="S1")


def _indices_of(ids: pa.Array, vocab: np.ndarray) -> np.ndarray:
    """Index in ``vocab`` of every id in ``ids`` (all of them are in it by construction)."""
    raw = ids.cast(pa.binary()).to_numpy(zero_copy_only=False)
    if raw.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.searchsorted(vocab, raw.astype(vocab.dtype))


def _dense(raw: _RawLists, vocab: np.ndarray, n: int) -> TopLists:
    """Rows sorted by key, item lists as vocabulary indices in a [rows, width] matrix."""
    index_dtype = np.uint16 if vocab.size < 2**16 else np.int32
    flat_items = np.empty(int(raw.lengths.sum()), dtype=index_dtype)
    start = 0
    for dictionary, indices in raw.chunks:
        mapping = _indices_of(dictionary, vocab).astype(index_dtype)
        flat_items[start:start + indices.size] = mapping[indices]
        start += indices.size

    rows = raw.lengths.size
    width = max(int(raw.lengths.max(initial=0)), 1)
    length_dtype = np.uint8 if n < 2**8 else np.uint16
    if rows and np.all(raw.lengths == width):  # the common case: every list full, no scatter needed
        items = flat_items.reshape(rows, width)
        scores = raw.scores.reshape(rows, width)
    else:
        items = np.zeros((rows, width), dtype=index_dtype)
        scores = np.zeros((rows, width), dtype=np.float32)
        row_of_element = np.repeat(np.arange(rows), raw.lengths)
        starts = np.cumsum(raw.lengths) - raw.lengths
        col_of_element = np.arange(row_of_element.size) - np.repeat(starts, raw.lengths)
        items[row_of_element, col_of_element] = flat_items
        scores[row_of_element, col_of_element] = raw.scores

    keys, lengths = raw.keys, raw.lengths.astype(length_dtype)
    if keys.size > 1 and not np.all(keys[1:] > keys[:-1]):  # publish writes rows sorted; sort if not
        order = np.argsort(keys, kind="stable")
        keys, lengths, items, scores = keys[order], lengths[order], items[order], scores[order]
    duplicated = np.flatnonzero(keys[1:] == keys[:-1]) if keys.size > 1 else []
    if len(duplicated):
        raise SnapshotError(f"{raw.where}: {keys[duplicated[0]].decode('utf-8')!r} appears more than once")
    return TopLists(keys=keys, lengths=lengths, items=np.ascontiguousarray(items), scores=np.ascontiguousarray(scores))


# ---------------------------------------------------------------------------------------------------------------
# The per-pod cache: the same arrays as .npy files, memory-mapped by every worker process
# ---------------------------------------------------------------------------------------------------------------

_LIST_FIELDS = ("keys", "lengths", "items", "scores")


def save_arrays(snapshot: LoadedSnapshot, folder: str | os.PathLike) -> None:
    """Write ``snapshot``'s arrays as .npy files plus info.json (the manifest fields that were verified)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"item_vocab": snapshot.item_vocab, "popular_items": snapshot.popular_items,
              "popular_scores": snapshot.popular_scores}
    for prefix, lists in (("users", snapshot.users), ("similar", snapshot.similar)):
        if lists is not None:
            arrays.update({f"{prefix}_{field}": getattr(lists, field) for field in _LIST_FIELDS})
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
    manifest = snapshot.manifest
    info = {
        "cache_format": CACHE_FORMAT_VERSION,
        "model_version": manifest.model_version,
        "created_at": manifest.created_at,
        "n": manifest.n,
        "tables": manifest.tables,
        "arrays": {name: {"dtype": array.dtype.str, "shape": list(array.shape)} for name, array in arrays.items()},
    }
    (folder / "info.json").write_text(json.dumps(info, indent=1, sort_keys=True))


def open_arrays(folder: str | os.PathLike, version_dir: str | os.PathLike) -> LoadedSnapshot:
    """Memory-map a cache folder written by ``save_arrays``: pages are shared by every process of the pod."""
    folder = Path(folder)
    info = json.loads((folder / "info.json").read_text())
    if info.get("cache_format") != CACHE_FORMAT_VERSION:
        raise SnapshotError(f"{folder}: cache format {info.get('cache_format')} is not {CACHE_FORMAT_VERSION}")
    arrays = {}
    for name, spec in info["arrays"].items():
        array = _mmap_npy(folder / f"{name}.npy")
        if array.dtype.str != spec["dtype"] or list(array.shape) != spec["shape"]:
            raise SnapshotError(f"{folder / name}.npy is {array.dtype.str}{list(array.shape)}, info.json says "
                                f"{spec['dtype']}{spec['shape']}")
        arrays[name] = array
    manifest = Manifest(Path(version_dir), str(info["model_version"]), str(info["created_at"]), int(info["n"]),
                        info["tables"])

    def lists(prefix):
        if f"{prefix}_keys" not in arrays:
            return None
        return TopLists(**{field: arrays[f"{prefix}_{field}"] for field in _LIST_FIELDS})

    return LoadedSnapshot(manifest=manifest, item_vocab=arrays["item_vocab"], users=lists("users"),
                          similar=lists("similar"), popular_items=arrays["popular_items"],
                          popular_scores=arrays["popular_scores"], origin=str(folder))


def _mmap_npy(path: Path) -> np.ndarray:
    """A read-only array over the .npy file's pages, shared with every process that maps the same file.

    Mapped with MAP_POPULATE: the kernel maps every page up front (in the loading thread, the GIL released), so
    look-ups never take a page fault; faulting pages in one request at a time cost about 0.1 ms per request.
    """
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        offset = fh.tell()
        if dtype.hasobject:
            raise SnapshotError(f"{path}: object arrays are not accepted in the cache")
        if int(np.prod(shape)) == 0:
            return np.zeros(shape, dtype=dtype)  # zero-length data cannot be mapped; nothing to share anyway
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        mapping = mmap.mmap(fh.fileno(), 0, flags=flags, prot=mmap.PROT_READ)
    return np.ndarray(shape, dtype=dtype, buffer=mapping, offset=offset, order="F" if fortran else "C")
