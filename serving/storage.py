"""Where snapshots live, outside Spark: a local folder or an S3 bucket, as a pyarrow.fs FileSystem plus a path.

    root = resolve("s3a://recsys/snapshots", S3Options.from_env())   # or a Path, "/data/snapshots", "file:///..."
    data = read_bytes(root / "LATEST")

A root is given as a ``pathlib.Path`` (always local), or as a string: a local path, a ``file://`` URI, or an
``s3://`` / ``s3a://`` URI (``s3a`` is what Spark writes; both name the same bucket and key). Any other scheme
(``hdfs://``, ``gs://``, ``http://``, ``abfss://``, ...) raises UnsupportedScheme naming it and the supported
ones. URIs are taken apart with urllib.parse only.

S3 settings come from an S3Options: ``S3Options.from_env()`` reads the standard AWS variables (the service does
this); the batch side builds one from Spark's ``fs.s3a.*`` settings and passes it in. Without keys pyarrow's
default credential chain applies (``~/.aws``, web identity, the instance's IAM role).

Object stores have no folders: a "folder" here is a key prefix, which exists while an object is under it. The
S3FileSystem is created when a root is resolved; a process that forks (the service's workers) resolves its root
after the fork (``is_local`` checks a root without creating anything).

Only the standard library and pyarrow here (both environments import it; no boto3).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pyarrow.fs as pafs

S3_SCHEMES = ("s3", "s3a")
SUPPORTED = "a local path, file://, s3:// or s3a://"
CHUNK = 1 << 20
# not an AWS variable (AWS has none for it): "path", "virtual" or unset (path-style for a custom endpoint only);
# named after botocore's s3.addressing_style setting; Spark's fs.s3a.path.style.access is the same choice
ADDRESSING_STYLE_ENV = "AWS_S3_ADDRESSING_STYLE"


class UnsupportedScheme(ValueError):
    """A root or URI whose scheme this code cannot read or write."""


@dataclass(frozen=True)
class S3Options:
    """How to reach S3 or an S3-compatible store. ``endpoint_url`` is a URL (``http://minio:9000``). ``None``
    fields are left to pyarrow and the AWS SDK: no endpoint means AWS itself, no keys the default credential
    chain. ``path_style``: True for path-style requests (``http://host/bucket/key``), False for virtual-hosted
    ones (``http://bucket.host/key``), None for pyarrow's choice (path-style with a custom endpoint,
    virtual-hosted on AWS, where path-style cannot be forced)."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    path_style: bool | None = None

    def __post_init__(self):
        if self.endpoint_url is not None:
            endpoint = urlsplit(self.endpoint_url)
            if endpoint.scheme not in ("http", "https") or not endpoint.netloc:
                raise ValueError(f"S3 endpoint {self.endpoint_url!r} is not an http:// or https:// URL")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Options:
        """From AWS_ENDPOINT_URL, AWS_REGION (else AWS_DEFAULT_REGION), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
        AWS_SESSION_TOKEN and AWS_S3_ADDRESSING_STYLE; empty values count as unset."""
        env = os.environ if environ is None else environ
        style = (env.get(ADDRESSING_STYLE_ENV) or "").lower()
        if style not in ("", "auto", "path", "virtual"):
            raise ValueError(f"{ADDRESSING_STYLE_ENV}={style!r}: expected path, virtual or auto")
        return cls(endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
                   region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
                   access_key=env.get("AWS_ACCESS_KEY_ID") or None,
                   secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
                   session_token=env.get("AWS_SESSION_TOKEN") or None,
                   path_style={"path": True, "virtual": False}.get(style))

    def to_env(self) -> dict[str, str]:
        """The variables ``from_env`` reads back into these options (for a child process); unset ones are ''."""
        style = {True: "path", False: "virtual", None: ""}[self.path_style]
        values = {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_REGION": self.region,
                  "AWS_DEFAULT_REGION": self.region, "AWS_ACCESS_KEY_ID": self.access_key,
                  "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_SESSION_TOKEN": self.session_token,
                  ADDRESSING_STYLE_ENV: style}
        return {name: value or "" for name, value in values.items()}

    def filesystem(self) -> pafs.S3FileSystem:
        """A pyarrow S3FileSystem with these options (it never creates or deletes buckets)."""
        options: dict = {"region": self.region}
        if self.access_key or self.secret_key:
            options.update(access_key=self.access_key, secret_key=self.secret_key, session_token=self.session_token)
        if self.endpoint_url:
            endpoint = urlsplit(self.endpoint_url)
            options.update(endpoint_override=endpoint.netloc + endpoint.path.rstrip("/"), scheme=endpoint.scheme)
        if self.path_style is False:
            options["force_virtual_addressing"] = True
        return pafs.S3FileSystem(**{k: v for k, v in options.items() if v is not None})


@dataclass(frozen=True)
class Location:
    """A file or folder: ``fs`` and ``path`` (absolute for a local one, ``bucket/key`` on S3), ``scheme`` as given
    (``s3`` or ``s3a``; '' for local), ``local`` (the Path as given, for a local one) and the S3Options it was
    resolved with. ``location / "name"`` is a child; ``str()`` is the local path or the URI."""

    fs: pafs.FileSystem = field(compare=False)
    path: str
    scheme: str = ""
    local: Path | None = None
    s3: S3Options | None = field(default=None, compare=False, repr=False)

    def __truediv__(self, name: str) -> Location:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"{name!r} is not a single file or folder name")
        local = self.local / name if self.local is not None else None
        return Location(self.fs, f"{self.path.rstrip('/')}/{name}", self.scheme, local, self.s3)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def is_local(self) -> bool:
        return self.local is not None

    def __str__(self) -> str:
        return str(self.local) if self.local is not None else f"{self.scheme}://{self.path}"


def is_local(root: str | os.PathLike | Location) -> bool:
    """Whether ``root`` names a local folder (True) or an S3 location (False). Checks the form only and creates
    nothing: UnsupportedScheme for a scheme other than file, s3 and s3a; ValueError for a file:// URI of another
    host or an S3 URI without a bucket."""
    if isinstance(root, Location):
        return root.is_local
    if isinstance(root, os.PathLike):
        return True
    parts = urlsplit(root)
    scheme = parts.scheme.lower()
    if scheme == "file" and parts.netloc not in ("", "localhost"):
        raise ValueError(f"{root!r}: a file:// URI must name this machine (file:///path), not {parts.netloc!r}")
    if scheme in ("", "file"):
        return True
    if scheme not in S3_SCHEMES:
        raise UnsupportedScheme(f"{root!r}: the scheme {scheme + '://'!r} is not supported; a snapshot root or "
                                f"file is {SUPPORTED}")
    if not parts.netloc:
        raise ValueError(f"{root!r} names no bucket (expected {scheme}://<bucket>/<key>)")
    return False


def resolve(root: str | os.PathLike | Location, s3: S3Options | None = None) -> Location:
    """The Location ``root`` names (a Location is returned as it is; errors as ``is_local``). ``s3`` applies to
    S3 URIs (default: ``S3Options.from_env()``); the S3FileSystem is created here."""
    if isinstance(root, Location):
        return root
    if is_local(root):
        if isinstance(root, str) and urlsplit(root).scheme.lower() == "file":
            root = url2pathname(urlsplit(root).path)
        local = Path(root)
        return Location(pafs.LocalFileSystem(), os.path.abspath(local), "", local)
    parts = urlsplit(root)
    options = s3 if s3 is not None else S3Options.from_env()
    return Location(options.filesystem(), parts.netloc + parts.path.rstrip("/"), parts.scheme.lower(), None, options)


# -- the operations snapshot.py and flow.snapshot_retention use -------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One entry of a folder: its name, whether it is a folder (locally: or a symbolic link to one), whether it
    is a local symbolic link, and its own modification time (epoch seconds; not following a link; None for an S3
    key prefix, which has none)."""

    name: str
    is_dir: bool
    is_link: bool
    mtime: float | None


def list_dir(folder: Location) -> list[Entry]:
    """The folder's entries, not recursive; [] when it does not exist."""
    if folder.is_local:
        try:
            with os.scandir(folder.local) as found:
                return [Entry(e.name, e.is_dir(), e.is_symlink(), e.stat(follow_symlinks=False).st_mtime)
                        for e in found]
        except FileNotFoundError:
            return []
    infos = folder.fs.get_file_info(pafs.FileSelector(folder.path, allow_not_found=True))
    return [Entry(i.base_name, i.type == pafs.FileType.Directory, False,
                  i.mtime.timestamp() if i.mtime is not None else None) for i in infos]


def newest_mtime(folder: Location) -> float | None:
    """The latest modification time of any file under ``folder`` (None when it holds none)."""
    infos = folder.fs.get_file_info(pafs.FileSelector(folder.path, recursive=True, allow_not_found=True))
    times = [i.mtime.timestamp() for i in infos if i.type == pafs.FileType.File and i.mtime is not None]
    return max(times, default=None)


def is_file(location: Location) -> bool:
    return location.fs.get_file_info(location.path).type == pafs.FileType.File


def is_dir(location: Location) -> bool:
    return location.fs.get_file_info(location.path).type == pafs.FileType.Directory


def read_bytes(location: Location) -> bytes:
    """The whole file (small files only: manifests, LATEST); FileNotFoundError when it does not exist."""
    if not is_file(location):
        raise FileNotFoundError(f"{location} does not exist")
    with location.fs.open_input_stream(location.path) as stream:
        return stream.read()


def write_atomic(location: Location, data: bytes) -> None:
    """Replace ``location`` with ``data`` so that readers see the old content or the new, never part: locally a
    temporary file ``.<name>.<hex>.tmp`` beside it, moved over it (os.replace); on S3 one PUT of the object."""
    if not location.is_local:
        with location.fs.open_output_stream(location.path) as stream:
            stream.write(data)
        return
    tmp = location.local.parent / f".{location.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.write_bytes(data)
        os.replace(tmp, location.local)
    finally:
        tmp.unlink(missing_ok=True)


def open_input_file(location: Location):
    """A random-access pyarrow file (what pyarrow.parquet reads); close it (``with``) after use."""
    return location.fs.open_input_file(location.path)


def sha256(location: Location) -> str:
    """The file's sha256 (hex), read in chunks of CHUNK bytes."""
    digest = hashlib.sha256()
    with location.fs.open_input_stream(location.path) as stream:
        while block := stream.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def download(location: Location, target: Path) -> str:
    """Copy the file to the local ``target`` in chunks of CHUNK bytes; returns the sha256 (hex) of what was
    copied. Errors of the store (network, permissions, a missing file) are OSErrors."""
    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    with location.fs.open_input_stream(location.path) as stream, open(target, "wb") as out:
        while block := stream.read(CHUNK):
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def delete_file(location: Location) -> None:
    """Remove a file; nothing when it does not exist."""
    if location.is_local:
        location.local.unlink(missing_ok=True)
    elif is_file(location):
        location.fs.delete_file(location.path)


def delete_dir(location: Location) -> None:
    """Remove a folder and everything in it (on S3: every object under the prefix)."""
    if location.is_local:
        shutil.rmtree(location.local)
    else:
        location.fs.delete_dir(location.path)
