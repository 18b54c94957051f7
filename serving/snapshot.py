"""The serving snapshot: the one contract between the batch side (jobs.publish) and the lookup service.

Layout under a snapshot root (a folder, in production a mounted volume)::

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

Only numpy-free standard library + pyarrow here, so both environments can import it.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from serving import ids

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


class SnapshotError(Exception):
    """A snapshot that must not be served; the message says what is wrong and where."""


@dataclass(frozen=True)
class Manifest:
    path: Path
    model_version: str
    created_at: str
    n: int
    tables: dict

    def table_dir(self, name: str) -> Path:
        return self.path / name

    def table_files(self, name: str) -> list[Path]:
        return [self.path / name / f for f in sorted(self.tables[name]["files"])]


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _table_entry(table_dir: Path) -> dict:
    files = sorted(p for p in table_dir.iterdir() if p.suffix == ".parquet")
    if not files:
        raise SnapshotError(f"table folder {table_dir} holds no .parquet file")
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in files)
    return {"rows": rows, "files": {p.name: sha256_of(p) for p in files}}


def write_manifest(version_dir: str | os.PathLike, *, model_version: str, n: int) -> Manifest:
    """Checksum every table folder present in ``version_dir`` and write manifest.json (last, atomically)."""
    version_dir = Path(version_dir)
    known = {**REQUIRED_TABLES, **OPTIONAL_TABLES}
    tables = {name: _table_entry(version_dir / name) for name in known if (version_dir / name).is_dir()}
    missing = sorted(set(REQUIRED_TABLES) - set(tables))
    if missing:
        raise SnapshotError(f"cannot write manifest in {version_dir}: missing tables {missing}")
    doc = {
        "format_version": FORMAT_VERSION,
        "model_version": model_version,
        "created_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "n": int(n),
        "tables": tables,
    }
    tmp = version_dir / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True))
    os.replace(tmp, version_dir / MANIFEST_NAME)
    return read_manifest(version_dir)


def read_manifest(version_dir: str | os.PathLike) -> Manifest:
    version_dir = Path(version_dir)
    path = version_dir / MANIFEST_NAME
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise SnapshotError(f"no {MANIFEST_NAME} in {version_dir}: the snapshot is incomplete") from None
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"{path} is not valid JSON: {exc}") from None
    for key in ("format_version", "model_version", "created_at", "n", "tables"):
        if key not in doc:
            raise SnapshotError(f"{path} lacks the key {key!r} (has {sorted(doc)})")
    if doc["format_version"] != FORMAT_VERSION:
        raise SnapshotError(f"{path}: format_version {doc['format_version']} is not supported (expected {FORMAT_VERSION})")
    return Manifest(version_dir, str(doc["model_version"]), str(doc["created_at"]), int(doc["n"]), doc["tables"])


def list_leaf_path(path: Path, column: str) -> str:
    """The parquet path of a list column's elements ("item_ids.list.element" from Spark and pyarrow)."""
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


def _check_file_ids(path: Path, name: str) -> None:
    """check_ids on every id column of one table file; list columns are read dictionary-encoded, so each distinct
    id is checked once."""
    columns = ID_COLUMNS[name]
    lists = [c for c in columns if c == "item_ids"]
    table = pq.read_table(path, columns=list(columns), read_dictionary=[list_leaf_path(path, c) for c in lists])
    for column in columns:
        values = table.column(column)
        if column in lists:
            values = pa.chunked_array([chunk.flatten().dictionary.cast(pa.string()) for chunk in values.chunks],
                                      pa.string())
        check_ids(values, path, column)


def verify_snapshot(version_dir: str | os.PathLike, *, check_id_columns: bool = True) -> Manifest:
    """Check manifest, file checksums, row counts, schemas and (``check_id_columns``) that every user and item id
    keeps the id contract (serving.ids). Raises SnapshotError naming the first problem.

    The service's loader passes ``check_id_columns=False`` and checks the ids in the arrays it builds instead."""
    manifest = read_manifest(version_dir)
    for name, columns in {**REQUIRED_TABLES, **OPTIONAL_TABLES}.items():
        if name not in manifest.tables:
            if name in REQUIRED_TABLES:
                raise SnapshotError(f"{manifest.path}: manifest lists no table {name!r}")
            continue
        entry = manifest.tables[name]
        rows = 0
        for path in manifest.table_files(name):
            if not path.is_file():
                raise SnapshotError(f"{path} is listed in the manifest but missing")
            actual = sha256_of(path)
            if actual != entry["files"][path.name]:
                raise SnapshotError(f"{path}: checksum {actual[:12]}... does not match the manifest's {entry['files'][path.name][:12]}...")
            meta = pq.ParquetFile(path)
            rows += meta.metadata.num_rows
            schema = meta.schema_arrow
            for col, typ in columns.items():
                if col not in schema.names:
                    raise SnapshotError(f"{path}: column {col!r} missing (has {schema.names})")
                if str(schema.field(col).type) != typ:
                    raise SnapshotError(f"{path}: column {col!r} is {schema.field(col).type}, expected {typ}")
            if check_id_columns:
                _check_file_ids(path, name)
        if rows != entry["rows"]:
            raise SnapshotError(f"{manifest.path / name}: {rows} rows, manifest says {entry['rows']}")
    return manifest


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


def version_dirs(root: str | os.PathLike, model_version: str) -> list[Path]:
    """The folders of ``model_version`` under ``root`` (complete or not), newest publish first; a folder of the
    older layout (named ``model_version``) comes last."""
    root = Path(root)
    try:
        names = [p.name for p in root.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return []
    ours = [n for n in names if not n.startswith(".") and model_version_of(n) == model_version]
    return [root / n for n in sorted(ours, key=lambda n: (VERSION_SEPARATOR in n, n), reverse=True)]


def published_dir(root: str | os.PathLike, model_version: str) -> Path:
    """The folder of ``model_version`` a reader should mean: the one LATEST names when it is of that version, else
    the newest one with a manifest, else the newest one (incomplete); SnapshotError when there is none."""
    folders = version_dirs(root, model_version)
    if not folders:
        raise SnapshotError(f"no snapshot of model version {model_version!r} under {root}")
    current = _latest_or_none(root)
    if current in folders:
        return current
    return next((f for f in folders if (f / MANIFEST_NAME).is_file()), folders[0])


def intact_version(root: str | os.PathLike, model_version: str) -> Manifest | None:
    """The manifest of a folder of ``model_version`` that verifies (the one LATEST names first, then the newest),
    or None; broken or incomplete folders are passed over."""
    current = _latest_or_none(root)
    for folder in sorted(version_dirs(root, model_version), key=lambda f: f != current):  # stable sort
        try:
            return verify_snapshot(folder)
        except SnapshotError:
            continue
    return None


def _latest_or_none(root: str | os.PathLike) -> Path | None:
    try:
        return latest_version_dir(root)
    except SnapshotError:
        return None


def set_latest(root: str | os.PathLike, version: str) -> None:
    """Point LATEST at the folder ``version`` (a folder name under ``root``): the new name is written to a temporary
    file of its own, then moved over LATEST (os.replace), so a reader sees the old or the new name, never half;
    concurrent writers never share a temporary file. Raises SnapshotError if the folder has no manifest."""
    root = Path(root)
    if not (root / version / MANIFEST_NAME).is_file():
        raise SnapshotError(f"refusing to point LATEST at {root / version}: it has no {MANIFEST_NAME}")
    tmp = root / f".{LATEST_NAME}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.write_text(version + "\n")
        os.replace(tmp, root / LATEST_NAME)
    finally:
        tmp.unlink(missing_ok=True)


def latest_version_dir(root: str | os.PathLike) -> Path:
    """The folder LATEST names; SnapshotError when there is no LATEST or it holds no valid folder name."""
    root = Path(root)
    try:
        version = (root / LATEST_NAME).read_text().strip()
    except FileNotFoundError:
        raise SnapshotError(f"no {LATEST_NAME} file in {root}: nothing has been published there yet") from None
    if not version or "/" in version or version in (".", ".."):
        raise SnapshotError(f"{root / LATEST_NAME} holds an invalid version name {version!r}")
    return root / version
