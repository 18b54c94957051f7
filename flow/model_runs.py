"""The model registry (meta/model_runs): which model versions exist, the latest one, and filters by version.

A model version exists when its latest row in meta/model_runs (flow.runs) says its training succeeded; a version
whose training started and never finished, or failed, is no model.
"""
from __future__ import annotations

import datetime as dt
import re

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from flow.runs import RUN_TABLES, STATE, SUCCEEDED, run_states
from lake import tables
from lake.registry import Lake
from transforms import columns as C

# what a model version may look like (the default is a UTC time stamp, 20261201T153825Z): it is used in folder
# names and in Delta's replaceWhere, so nothing else passes
MODEL_VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class NoModelError(RuntimeError):
    """The model (or the model registry, or the training table) asked for does not exist."""


class BadModelVersionError(ValueError):
    """A model version that does not match MODEL_VERSION_PATTERN."""


def new_model_version() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def checked_version(model_version: str) -> str:
    """``model_version`` itself if it matches MODEL_VERSION_PATTERN; BadModelVersionError otherwise."""
    if not isinstance(model_version, str) or not MODEL_VERSION_PATTERN.fullmatch(model_version):
        raise BadModelVersionError(f"model version {model_version!r} is not of the form "
                                   f"{MODEL_VERSION_PATTERN.pattern} (letters, digits and . _ : -)")
    return model_version


def version_predicate(model_version: str) -> str:
    """The SQL predicate ``model_version = '<version>'`` for Delta's replaceWhere and deletes; the version is
    checked against MODEL_VERSION_PATTERN first, so no quote or comment can reach the expression."""
    return f"{C.MODEL_VERSION} = '{checked_version(model_version)}'"


def _models(spark: SparkSession, lake: Lake) -> DataFrame | None:
    """The latest row of each model version in meta/model_runs whose training succeeded (None: no table yet)."""
    runs = tables.read_if_exists(spark, lake.model_runs)
    if runs is None:
        return None
    return run_states(runs, RUN_TABLES["train"]).where(F.col(STATE) == F.lit(SUCCEEDED))


def latest_model_version(spark: SparkSession, lake: Lake) -> str:
    runs = _models(spark, lake)
    row = runs.orderBy(F.col("created_at").desc(), F.col(C.MODEL_VERSION).desc()).first() if runs is not None else None
    if row is None:
        raise NoModelError(f"no model in {lake.model_runs}: run jobs.train first")
    return row[C.MODEL_VERSION]


def model_run(spark: SparkSession, lake: Lake, model_version: str) -> Row:
    runs = _models(spark, lake)
    row = runs.where(F.col(C.MODEL_VERSION) == F.lit(model_version)).first() if runs is not None else None
    if row is None:
        raise NoModelError(f"model version {model_version!r} is not in {lake.model_runs} as a trained model "
                           "(never trained, or its training failed or did not finish)")
    return row
