"""The serving snapshot: the one contract between the batch side (jobs.publish) and the lookup service.

Layout under a snapshot root (a local folder, or a prefix in an S3 bucket: ``s3://`` or ``s3a://``, see
serving.storage)::

    <root>/
      LATEST                         text file naming the current version folder; replaced atomically, last
      <model_version>~<UTC stamp>-<hex>/   one folder per publish (new_version_name); never renamed nor rewritten
        manifest.json                written after every table file, verified by the service before use
        user_recommendations/*.parquet   user_id: string, item_ids: list<string>, scores: list<float>
        popular_items/*.parquet          rank: int, item_id: string, score: double
        similar_items/*.parquet          item_id: string, item_ids: list<string>, scores: list<float> (optional)

Manifest (format_version 1)::

    {"format_version": 1, "model_version": "...", "created_at": "2026-11-23T01:51:03Z", "n": 100,
     "tables": {"user_recommendations": {"rows": 610, "files": {"part-0000.parquet": "<sha256 hex>"}}, ...}}

A version folder is complete when its manifest.json exists (written last); LATEST only ever names a folder that
was complete and verified when LATEST was written. Folders named ``<model_version>`` alone (the layout before
one folder per publish) are read the same way; ``model_version_of`` maps a folder name to its model version.

Every function taking a root or folder accepts a Path, a local path or URI string, or a storage.Location, plus
``s3=`` (storage.S3Options; default: from the AWS environment variables) for S3 URIs. Folders come back as a Path
under a local root and as a storage.Location on S3 (both have ``.name``, ``/ "child"`` and ``str()``). Locally
LATEST and manifest.json are written to a temporary file and moved into place; on S3 each is one PUT, which S3
makes visible whole. Checksums are computed in chunks, never on a whole file in memory.

Only numpy-free standard library + pyarrow here, so both environments can import it.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from serving import ids, storage

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
LATEST_NAME = "LATEST"
# between the model version and the publish's stamp in a version folder's name; never part of a model version
# (flow.model_runs.MODEL_VERSION_PATTERN), so the model version is read back from the name alone
VERSION_SEPARATOR = "~"

# table name -> required columns (name -> arrow type string as printed by pyarrow)
REQUIRED_TABLES = {
    "user_recommendations": {"user_id": "string", "item_ids": "list<element: string>", "scores": "list<element: float>"},
    "popular_items": {"rank": "int32", "item_id": "string", "score": "double"},
}
OPTIONAL_TABLES = {
    "similar_items": {"item_id": "string", "item_ids": "list<element: string>", "scores": "list<element: float>"},
}
# table name -> its columns of user or item ids, which must keep the id contract (serving.ids)
ID_COLUMNS = {"user_recommendations": ("user_id", "item_ids"), "popular_items": ("item_id",),
              "similar_items": ("item_id", "item_ids")}


# a version folder as the functions below return it: a Path under a local root, a storage.Location on S3
Folder = Path | storage.Location
# a root or folder as they accept it: a Path, a local path or file:// / s3:// / s3a:// URI, or a storage.Location
Where = str | os.PathLike | storage.Location


class SnapshotError(Exception):
    """A snapshot that must not be served; the message says what is wrong and where."""


@dataclass(frozen=True)
class Manifest:
    path: Folder
    model_version: str
    created_at: str
    n: int
    tables: dict

    def table_dir(self, name: str) -> Folder:
        return self.path / name

    def table_files(self, name: str) -> list[Folder]:
        return [self.path / name / f for f in sorted(self.tables[name]["files"])]


def _folder(location: storage.Location) -> Folder:
    return location.local if location.is_local else location


def sha256_of(path: Where, *, s3: storage.S3Options | None = None) -> str:
    """The file's sha256 (hex), streamed (never held in memory whole)."""
    return storage.sha256(storage.resolve(path, s3))


def _num_rows(file: storage.Location) -> int:
    with storage.open_input_file(file) as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def _table_entry(table_dir: storage.Location) -> dict:
    names = sorted(e.name for e in storage.list_dir(table_dir) if not e.is_dir and e.name.endswith(".parquet"))
    if not names:
        raise SnapshotError(f"table folder {table_dir} holds no .parquet file")
    rows = sum(_num_rows(table_dir / name) for name in names)
    return {"rows": rows, "files": {name: storage.sha256(table_dir / name) for name in names}}


def write_manifest(version_dir: Where, *, model_version: str, n: int,
                   s3: storage.S3Options | None = None) -> Manifest:
    """Checksum every table folder present in ``version_dir`` and write manifest.json, last and atomically (a
    temporary file moved into place locally, one PUT on S3)."""
    folder = storage.resolve(version_dir, s3)
    known = {**REQUIRED_TABLES, **OPTIONAL_TABLES}
    tables = {name: _table_entry(folder / name) for name in known if storage.is_dir(folder / name)}
    missing = sorted(set(REQUIRED_TABLES) - set(tables))
    if missing:
        raise SnapshotError(f"cannot write manifest in {folder}: missing tables {missing}")
    doc = {
        "format_version": FORMAT_VERSION,
        "model_version": model_version,
        "created_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "n": int(n),
        "tables": tables,
    }
    storage.write_atomic(folder / MANIFEST_NAME, json.dumps(doc, indent=2, sort_keys=True).encode())
    return read_manifest(folder)


def manifest_bytes(version_dir: Where, *, s3: storage.S3Options | None = None) -> bytes:
    """The folder's manifest.json as stored; SnapshotError when there is none (the snapshot is incomplete)."""
    folder = storage.resolve(version_dir, s3)
    try:
        return storage.read_bytes(folder / MANIFEST_NAME)
    except FileNotFoundError:
        raise SnapshotError(f"no {MANIFEST_NAME} in {folder}: the snapshot is incomplete") from None


def read_manifest(version_dir: Where, *, s3: storage.S3Options | None = None) -> Manifest:
    folder = storage.resolve(version_dir, s3)
    return _parse_manifest(manifest_bytes(folder), folder)


def _parse_manifest(data: bytes, folder: storage.Location) -> Manifest:
    where = folder / MANIFEST_NAME
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise SnapshotError(f"{where} is not valid JSON: {exc}") from None
    for key in ("format_version", "model_version", "created_at", "n", "tables"):
        if key not in doc:
            raise SnapshotError(f"{where} lacks the key {key!r} (has {sorted(doc)})")
    if doc["format_version"] != FORMAT_VERSION:
        raise SnapshotError(f"{where}: format_version {doc['format_version']} is not supported (expected {FORMAT_VERSION})")
    return Manifest(_folder(folder), str(doc["model_version"]), str(doc["created_at"]), int(doc["n"]), doc["tables"])


def list_leaf_path(path, column: str) -> str:
    """The parquet path of a list column's elements ("item_ids.list.element" from Spark and pyarrow); ``path``
    is anything pyarrow.parquet.ParquetFile opens (a local path, an open file)."""
    schema = pq.ParquetFile(path).schema
    for i in range(len(schema)):
        leaf = schema.column(i).path
        if leaf.startswith(column + "."):
            return leaf
    raise SnapshotError(f"{path}: no list column {column!r}")


def check_ids(values: pa.Array | pa.ChunkedArray, where, column: str) -> None:
    """Raise SnapshotError naming the first string of ``values`` that breaks the id contract (serving.ids.valid_id):
    the service would refuse the whole snapshot for it."""
    bad = ids.first_invalid(values)
    if bad is not None:
        raise SnapshotError(f"{where}: {column} {ids.shown(bad)} {ids.why_invalid(bad)}, which the id contract "
                            f"(serving.ids) does not allow")


def _check_file_ids(handle, where: storage.Location, name: str) -> None:
    """check_ids on every id column of one open table file; list columns are read dictionary-encoded, so each
    distinct id is checked once."""
    columns = ID_COLUMNS[name]
    lists = [c for c in columns if c == "item_ids"]
    leaves = [list_leaf_path(handle, c) for c in lists]
    table = pq.ParquetFile(handle, read_dictionary=leaves).read(columns=list(columns))
    for column in columns:
        values = table.column(column)
        if column in lists:
            values = pa.chunked_array([chunk.flatten().dictionary.cast(pa.string()) for chunk in values.chunks],
                                      pa.string())
        check_ids(values, where, column)


def _checksum_mismatch(file: storage.Location, actual: str, expected: str) -> SnapshotError:
    return SnapshotError(f"{file}: checksum {actual[:12]}... does not match the manifest's {expected[:12]}...")


def _verify_file(file: storage.Location, expected_sha256: str, name: str, check_id_columns: bool) -> int:
    """Check one table file (present, checksum, schema, ids); returns its row count."""
    if not storage.is_file(file):
        raise SnapshotError(f"{file} is listed in the manifest but missing")
    actual = storage.sha256(file)
    if actual != expected_sha256:
        raise _checksum_mismatch(file, actual, expected_sha256)
    with storage.open_input_file(file) as handle:
        meta = pq.ParquetFile(handle)
        schema = meta.schema_arrow
        for col, typ in {**REQUIRED_TABLES, **OPTIONAL_TABLES}[name].items():
            if col not in schema.names:
                raise SnapshotError(f"{file}: column {col!r} missing (has {schema.names})")
            if str(schema.field(col).type) != typ:
                raise SnapshotError(f"{file}: column {col!r} is {schema.field(col).type}, expected {typ}")
        if check_id_columns:
            _check_file_ids(handle, file, name)
        return meta.metadata.num_rows


def verify_snapshot(version_dir: Where, *, check_id_columns: bool = True,
                    s3: storage.S3Options | None = None) -> Manifest:
    """Check manifest, file checksums (streamed), row counts, schemas and (``check_id_columns``) that every user
    and item id keeps the id contract (serving.ids). Raises SnapshotError naming the first problem.

    The service's loader passes ``check_id_columns=False`` and checks the ids in the arrays it builds instead."""
    folder = storage.resolve(version_dir, s3)
    manifest = _parse_manifest(manifest_bytes(folder), folder)
    for name in {**REQUIRED_TABLES, **OPTIONAL_TABLES}:
        if name not in manifest.tables:
            if name in REQUIRED_TABLES:
                raise SnapshotError(f"{folder}: manifest lists no table {name!r}")
            continue
        entry = manifest.tables[name]
        rows = sum(_verify_file(file, entry["files"][file.name], name, check_id_columns)
                   for file in _table_files(folder, manifest, name))
        if rows != entry["rows"]:
            raise SnapshotError(f"{folder / name}: {rows} rows, manifest says {entry['rows']}")
    return manifest


def _table_files(folder: storage.Location, manifest: Manifest, name: str) -> list[storage.Location]:
    """The files the manifest lists for table ``name``, as locations under ``folder``."""
    try:
        return [folder / name / file for file in sorted(manifest.tables[name]["files"])]
    except ValueError as exc:  # a listed name that is not a plain file name ("../x")
        raise SnapshotError(f"{folder / MANIFEST_NAME} lists a bad file name in {name}: {exc}") from None


def download_version(version_dir: Where, target: str | os.PathLike, *, data: bytes | None = None,
                     s3: storage.S3Options | None = None) -> Path:
    """Copy the tables of a version folder (on S3, or anywhere) into the new local folder ``target``, checking
    each file against the manifest's checksum as it is copied, then write the manifest there (last). ``data``:
    the manifest as the caller already read it (the copy is checked against it and keeps it), else it is read
    here. A listed file that is missing or differs is a SnapshotError naming it in the store; errors of the store
    itself (network, permissions) are OSErrors. Returns ``target``, a folder verify_snapshot and
    serving.lookup read like any local one."""
    folder, target = storage.resolve(version_dir, s3), Path(target)
    data = manifest_bytes(folder) if data is None else data
    manifest = _parse_manifest(data, folder)
    for name in (n for n in {**REQUIRED_TABLES, **OPTIONAL_TABLES} if n in manifest.tables):
        for file in _table_files(folder, manifest, name):
            if not storage.is_file(file):
                raise SnapshotError(f"{file} is listed in the manifest but missing")
            expected = manifest.tables[name]["files"][file.name]
            actual = storage.download(file, target / name / file.name)
            if actual != expected:
                raise _checksum_mismatch(file, actual, expected)
    (target / MANIFEST_NAME).write_bytes(data)
    return target


def new_version_name(model_version: str, now: _dt.datetime | None = None) -> str:
    """A folder name no earlier publish used: ``<model_version>~<YYYYmmddTHHMMSSZ>-<6 hex>`` (UTC ``now``)."""
    if not model_version or VERSION_SEPARATOR in model_version or "/" in model_version:
        raise SnapshotError(f"model version {model_version!r} cannot name a snapshot folder")
    stamp = (now or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    return f"{model_version}{VERSION_SEPARATOR}{stamp}-{uuid.uuid4().hex[:6]}"


def model_version_of(folder_name: str) -> str:
    """The model version a version folder is named after: the part before VERSION_SEPARATOR (the whole name for
    a folder of the older layout)."""
    return folder_name.split(VERSION_SEPARATOR, 1)[0]


def _version_locations(root: storage.Location, model_version: str) -> list[storage.Location]:
    names = [e.name for e in storage.list_dir(root) if e.is_dir]
    ours = [n for n in names if not n.startswith(".") and model_version_of(n) == model_version]
    return [root / n for n in sorted(ours, key=lambda n: (VERSION_SEPARATOR in n, n), reverse=True)]


def version_dirs(root: Where, model_version: str, *, s3: storage.S3Options | None = None) -> list[Folder]:
    """The folders of ``model_version`` under ``root`` (complete or not), newest publish first; a folder of the
    older layout (named ``model_version``) comes last."""
    return [_folder(f) for f in _version_locations(storage.resolve(root, s3), model_version)]


def published_dir(root: Where, model_version: str, *, s3: storage.S3Options | None = None) -> Folder:
    """The folder of ``model_version`` a reader should mean: the one LATEST names when it is of that version, else
    the newest one with a manifest, else the newest one (incomplete); SnapshotError when there is none."""
    root = storage.resolve(root, s3)
    folders = _version_locations(root, model_version)
    if not folders:
        raise SnapshotError(f"no snapshot of model version {model_version!r} under {root}")
    current = _latest_or_none(root)
    if current in folders:
        return _folder(current)
    return _folder(next((f for f in folders if storage.is_file(f / MANIFEST_NAME)), folders[0]))


def intact_version(root: Where, model_version: str, *, s3: storage.S3Options | None = None) -> Manifest | None:
    """The manifest of a folder of ``model_version`` that verifies (the one LATEST names first, then the newest),
    or None; broken or incomplete folders are passed over."""
    root = storage.resolve(root, s3)
    current = _latest_or_none(root)
    for folder in sorted(_version_locations(root, model_version), key=lambda f: f != current):  # stable sort
        try:
            return verify_snapshot(folder)
        except SnapshotError:
            continue
    return None


def _latest_or_none(root: storage.Location) -> storage.Location | None:
    try:
        return _latest_location(root)
    except SnapshotError:
        return None


def set_latest(root: Where, version: str, *, s3: storage.S3Options | None = None) -> None:
    """Point LATEST at the folder ``version`` (a folder name under ``root``), so a reader sees the old or the new
    name, never half: locally the name is written to a temporary file of its own (``.LATEST.<hex>.tmp``, never
    shared by concurrent writers) moved over LATEST with os.replace; on S3 LATEST is one PUT of a small object.
    Raises SnapshotError if the folder has no manifest (call it after the folder's manifest is written)."""
    root = storage.resolve(root, s3)
    if not storage.is_file(root / version / MANIFEST_NAME):
        raise SnapshotError(f"refusing to point LATEST at {root / version}: it has no {MANIFEST_NAME}")
    storage.write_atomic(root / LATEST_NAME, (version + "\n").encode())


def latest_version_dir(root: Where, *, s3: storage.S3Options | None = None) -> Folder:
    """The folder LATEST names; SnapshotError when there is no LATEST or it holds no valid folder name."""
    return _folder(_latest_location(storage.resolve(root, s3)))


def _latest_location(root: storage.Location) -> storage.Location:
    try:
        version = storage.read_bytes(root / LATEST_NAME).decode("utf-8", errors="replace").strip()
    except FileNotFoundError:
        raise SnapshotError(f"no {LATEST_NAME} file in {root}: nothing has been published there yet") from None
    if not version or "/" in version or version in (".", ".."):
        raise SnapshotError(f"{root / LATEST_NAME} holds an invalid version name {version!r}")
    return root / version
