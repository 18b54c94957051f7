"""Flags every job shares, and the small helpers that turn them into a session and a lake layout."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from jobs.spark_session import build_spark


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where they say nothing: on-off flags, None, or a help text that already names one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)) or action.default is None
                or "default" in text):
            return text
        return super()._get_help_string(action)


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    spark = parser.add_argument_group("spark")
    spark.add_argument("--master", default=None,
                       help="Spark master (local[*] when not under spark-submit; ignored under spark-submit)")
    spark.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                       help="any Spark setting, overrides the defaults; repeat the flag for more")
    spark.add_argument("--jars-dir", default=None,
                       help="folder of jars (e.g. from `make delta-jars`) used instead of fetching Delta with Ivy")
    spark.add_argument("--log-level", default="WARN", help="Spark log level")
    return parser


def parse_conf(pairs: list[str]) -> dict[str, str]:
    conf = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--conf expects KEY=VALUE, got {pair!r}")
        conf[key.strip()] = value
    return conf


def spark_from_args(app_name: str, args: argparse.Namespace):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    return build_spark(app_name, master=args.master, conf=parse_conf(args.conf), jars_dir=args.jars_dir,
                       log_level=args.log_level)


class Lake:
    """Where each table lives under one lake root (a local folder, or any Hadoop-compatible URI)."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")

    def table(self, layer: str, name: str) -> str:
        return f"{self.root}/{layer}/{name}"

    @property
    def checkpoints(self) -> str:
        return f"{self.root}/_checkpoints"

    @property
    def models(self) -> str:
        return f"{self.root}/models"

    @property
    def snapshots(self) -> str:
        return f"{self.root}/snapshots"


def add_lake_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lake", required=True, help="root folder (or URI) of the Delta lake")


def local_path(uri: str) -> Path:
    """A filesystem path for a local lake URI (file:/... or plain path)."""
    return Path(uri[len("file:"):] if uri.startswith("file:") else uri)
