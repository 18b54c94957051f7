"""Run records: every run leaves one, from before its first commit to its end, even when its process dies.

A run table (meta/ingest_runs, meta/model_runs, meta/maintenance_runs) is an append-only log of run events. A run
appends its row ``started`` before its first commit, and ``succeeded`` or ``failed`` (with the error) when it ends:

    record(spark, lake.ingest_runs, started_row, state=STARTED, tag=tag("ingest", run_id))
    with finished(lambda state, error: record(spark, lake.ingest_runs, final_row(), state=state, error=error,
                                              tag=tag("ingest", run_id))):
        ...  # the run's commits

A run's state is its latest row (``recorded_at``); its finish is the row that says whether it is done. A run whose
latest row is ``started`` has no finish: its process died (kill -9, a lost machine) or it is still running.
Every Delta commit of a run carries its tag ``<kind>:<run id>`` in the commit info (userMetadata), so
``run_listing`` finds the rows such a run committed, per table, in the tables' history; it also lists, as
``unrecorded``, runs whose tag is on commits but that have no row at all (they died or failed before run records).

Rows written before these records existed (no ``run_state``) are finished runs: ``failed`` when their status
starts with "failed", else ``succeeded``.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from lake import tables
from lake.registry import TABLES, Lake
from transforms import columns as C

log = logging.getLogger("recsys.runs")

STARTED, SUCCEEDED, FAILED = "started", "succeeded", "failed"
UNRECORDED = "unrecorded"  # listed only: a run's tag is on commits, its run table has no row of it
STATE, ERROR, RECORDED_AT = "run_state", "run_error", "recorded_at"
MAX_ERROR_CHARS = 4000
# the row counts a commit wrote, by how Delta names them: MERGE's inserts first, then any write's output rows
ROW_METRICS = ("numTargetRowsInserted", "numOutputRows")


@dataclass(frozen=True)
class RunTable:
    """One kind of run and its table: ``table`` is the Lake attribute, ``id_col`` the run id column, ``time_col``
    the time its rows carry (rows written before run records existed have no ``recorded_at``), ``status_col`` the
    column that says "failed..." on such rows (None: none)."""
    kind: str
    table: str
    id_col: str
    time_col: str
    status_col: str | None = None


RUN_TABLES = {
    "ingest": RunTable("ingest", "ingest_runs", C.INGEST_RUN_ID, "started_at", "status"),
    "maintain": RunTable("maintain", "maintenance_runs", "run_id", "at"),
    "train": RunTable("train", "model_runs", C.MODEL_VERSION, "created_at"),
}


def tag(kind: str, run_id: str) -> str:
    """The tag a run's Delta commits carry (userMetadata): ``<kind>:<run id>``."""
    return f"{kind}:{run_id}"


def error_text(error: BaseException) -> str:
    """The error as recorded: its type and message, at most MAX_ERROR_CHARS characters."""
    message = str(error).strip()
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."


def record(spark, path: str, rows: DataFrame, *, state: str, tag: str, error: str | None = None) -> None:
    """Append ``rows`` (the run table's own columns) to the run table at ``path`` in one commit tagged ``tag``,
    with ``run_state`` ``state``, ``run_error`` ``error`` and ``recorded_at`` now (UTC)."""
    if state not in (STARTED, SUCCEEDED, FAILED):
        raise ValueError(f"run state {state!r} is not one of {STARTED}, {SUCCEEDED}, {FAILED}")
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    stamped = rows.select("*", F.lit(state).alias(STATE), F.lit(error).cast("string").alias(ERROR),
                          F.lit(now).cast("timestamp").alias(RECORDED_AT))
    tables.append_tagged(spark, stamped.coalesce(1), path, tag=tag)


@contextlib.contextmanager
def finished(record_finish: Callable[[str, str | None], None]):
    """Run the block, then ``record_finish(SUCCEEDED, None)``; if the block raises (anything, an interrupt too),
    ``record_finish(FAILED, error text)`` and the block's error goes on. A failure to record that failure is
    logged, never raised over the block's error."""
    try:
        yield
    except BaseException as error:
        try:
            record_finish(FAILED, error_text(error))
        except Exception:  # the block's error is the one that matters
            log.exception("the failed run could not be recorded")
        raise
    record_finish(SUCCEEDED, None)


def run_states(runs: DataFrame, run_table: RunTable) -> DataFrame:
    """One row per run of a run table: its latest (by ``recorded_at``), with ``run_state`` filled in for rows
    written before run records existed."""
    for name, kind in ((STATE, "string"), (ERROR, "string"), (RECORDED_AT, "timestamp")):
        if name not in runs.columns:
            runs = runs.withColumn(name, F.lit(None).cast(kind))
    legacy = F.lit(SUCCEEDED)
    if run_table.status_col:
        legacy = F.when(F.col(run_table.status_col).startswith(FAILED), F.lit(FAILED)).otherwise(legacy)
    newest_first = Window.partitionBy(run_table.id_col).orderBy(F.col(RECORDED_AT).desc_nulls_last())
    return (runs.withColumn("_newest", F.row_number().over(newest_first)).where(F.col("_newest") == 1)
            .drop("_newest").withColumn(STATE, F.coalesce(F.col(STATE), legacy)))


def read_states(spark, lake: Lake, kind: str) -> DataFrame | None:
    """run_states of the ``kind`` runs of ``lake`` (None: no such run table yet)."""
    run_table = RUN_TABLES[kind]
    runs = tables.read_if_exists(spark, getattr(lake, run_table.table))
    return run_states(runs, run_table) if runs is not None else None


def run_listing(spark, lake: Lake, *, kinds: tuple[str, ...] | None = None, limit: int = 20) -> list[dict]:
    """The newest ``limit`` runs of each kind (default: every kind in RUN_TABLES), newest first per kind: kind,
    run_id, state, at (when that state was recorded), error. A run with no finish (state ``started``) also gets
    ``committed``: the rows its tagged commits wrote, per table ({"silver/interactions": {"rows": 9,
    "versions": [3]}}; empty: it committed nothing). A run whose tag is on commits of the lake but that has no
    row in its run table (one from before run records, that died or failed) is listed as ``unrecorded``, at its
    first commit's time, with ``committed``."""
    commits = tagged_commit_rows(spark, lake)
    listed = []
    for kind in kinds or tuple(RUN_TABLES):
        prefix = tag(kind, "")
        tagged = {t.removeprefix(prefix): c for t, c in commits.items() if t.startswith(prefix)}
        listed += _kind_listing(spark, lake, kind, tagged, limit)
    return listed


def _kind_listing(spark, lake: Lake, kind: str, tagged: dict[str, dict], limit: int) -> list[dict]:
    """run_listing for one kind; ``tagged``: the kind's run ids found on commits -> tagged_commit_rows' entry."""
    run_table = RUN_TABLES[kind]
    states = read_states(spark, lake, kind)
    listed, recorded = [], set()
    if states is not None:
        run_id = F.col(run_table.id_col)
        at = F.coalesce(F.col(RECORDED_AT), F.col(run_table.time_col))
        rows = (states.select(run_id.alias("run_id"), F.col(STATE), F.col(ERROR), at.alias("at"))
                .orderBy(F.col("at").desc_nulls_last()).limit(limit).collect())
        listed = [{"kind": kind, "run_id": r["run_id"], "state": r[STATE], "at": r["at"], "error": r[ERROR]}
                  for r in rows]
        if tagged:
            recorded = {r[0] for r in states.where(run_id.isin(list(tagged))).select(run_id).collect()}
    for run in listed:
        if run["state"] == STARTED:
            run["committed"] = tagged.get(run["run_id"], {}).get("tables", {})
    listed += [{"kind": kind, "run_id": run_id, "state": UNRECORDED, "at": c["at"], "error": None,
                "committed": c["tables"]} for run_id, c in tagged.items() if run_id not in recorded]
    listed.sort(key=lambda r: (r["at"] is not None, r["at"] or dt.datetime.min), reverse=True)
    return listed[:limit]


def tagged_commit_rows(spark, lake: Lake) -> dict[str, dict]:
    """{tag: {"at": its first commit's time, "tables": {"layer/table": {"rows": n, "versions": [...]}}}}: what
    the commits carrying each tag wrote to each table of the lake (lake.registry.TABLES, the run tables left
    out), from Delta's history."""
    found: dict[str, dict] = {}
    run_table_names = {t.table for t in RUN_TABLES.values()}
    for name, (layer, folder) in TABLES.items():
        path = getattr(lake, name)
        if name in run_table_names or not tables.exists(spark, path):
            continue
        for run_tag, version, at, metrics in tables.tagged_commits(spark, path):
            run = found.setdefault(run_tag, {"at": at, "tables": {}})
            run["at"] = min(run["at"], at)
            entry = run["tables"].setdefault(f"{layer}/{folder}", {"rows": 0, "versions": []})
            entry["rows"] += next((metrics[m] for m in ROW_METRICS if m in metrics), 0)
            entry["versions"].append(version)
    return found
