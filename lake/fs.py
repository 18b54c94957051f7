"""Files on any Hadoop filesystem the session can reach (local folder, HDFS, s3a://, abfss://), through py4j.

The Hadoop FileSystem API has no public Python binding; every call to it is here.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession

from lake import jvm


class NoInputError(FileNotFoundError):
    """An input pattern matches no file."""


@dataclass(frozen=True)
class InputFile:
    path: str  # as Spark reports it in _metadata.file_path (a URI)
    read_path: str  # as a reader accepts it
    size: int
    modified_ms: int

    @property
    def key(self) -> tuple[str, int, int]:
        return self.path, self.size, self.modified_ms


def spark_file_uri(uri: str) -> str:
    """A file URI in the form Spark's _metadata.file_path uses (file:/x, not file:///x), so the two compare equal."""
    return "file:/" + uri[len("file:///"):] if uri.startswith("file:///") else uri


def _path_and_fs(spark: SparkSession, uri: str):
    path = jvm.handle(spark).org.apache.hadoop.fs.Path(uri)
    return path, path.getFileSystem(jvm.hadoop_configuration(spark))


def _hidden(path, root_depth: int) -> bool:
    names = []
    while path is not None and path.depth() > root_depth:
        names.append(path.getName())
        path = path.getParent()
    return any(n.startswith(("_", ".")) for n in names)


def list_input_files(spark: SparkSession, pattern: str) -> list[InputFile]:
    """Files under ``pattern`` (file, folder searched recursively, or glob), sorted by URI.

    Names starting with '_' or '.' (_SUCCESS, .crc, _temporary/) are skipped, as Spark's readers do.
    Raises NoInputError when nothing matches.
    """
    glob, fs = _path_and_fs(spark, pattern)
    statuses = fs.globStatus(glob)
    if not statuses:
        raise NoInputError(f"--input {pattern!r} matches no file")
    files = {}
    for status in statuses:
        root = fs.makeQualified(status.getPath())
        if status.isDirectory():
            found = fs.listFiles(root, True)
            while found.hasNext():
                f = found.next()
                if not _hidden(f.getPath(), root.depth()):
                    files[spark_file_uri(str(f.getPath().toUri().toString()))] = f
        elif not _hidden(root, root.depth() - 1):
            files[spark_file_uri(str(root.toUri().toString()))] = status
    if not files:
        raise NoInputError(f"--input {pattern!r} holds no data file (only hidden or empty folders)")
    return [InputFile(uri, str(fs.makeQualified(f.getPath()).toString()), int(f.getLen()), int(f.getModificationTime()))
            for uri, f in sorted(files.items())]


def write_bytes(spark: SparkSession, uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri``, replacing any file there."""
    path, fs = _path_and_fs(spark, uri)
    out = fs.create(path, True)
    try:
        out.write(bytearray(data))
    finally:
        out.close()


def glob_parents(spark: SparkSession, pattern: str) -> list[tuple[str, str]]:
    """(grandparent name, parent name) of every path matching the glob ``pattern``."""
    glob, fs = _path_and_fs(spark, pattern)
    found = []
    for status in fs.globStatus(glob) or []:
        parent = status.getPath().getParent()
        found.append((parent.getParent().getName(), parent.getName()))
    return found


def count_files(spark: SparkSession, root: str, *, suffix: str, skip: str) -> int:
    """Files under ``root`` (recursively) whose name ends in ``suffix`` and whose path does not contain ``skip``."""
    path, fs = _path_and_fs(spark, root)
    count = 0
    listing = fs.listFiles(path, True)
    while listing.hasNext():
        p = listing.next().getPath()
        if skip not in p.toString() and p.getName().endswith(suffix):
            count += 1
    return count


def read_text(spark: SparkSession, uri: str) -> str:
    """The whole of the small text file at ``uri``, as UTF-8."""
    return spark.read.text(uri, wholetext=True).first()[0]
