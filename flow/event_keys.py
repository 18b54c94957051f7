"""Where silver already holds an event the log named: the key -> date index (silver/event_keys).

An event keyed by the log's own id (``event_id`` = sha256 of the user and the source event id,
transforms.parse.with_event_id) keeps its key when a re-send moves its time, so the copy silver holds may sit in
any date partition. Silver's MERGE reads only the partitions it names (flow.ingest.merge_new_events); this index
names the other partitions a batch's id-keyed events already live in, so the MERGE finds them without reading
every partition.

Contract:

- one row (``event_key_prefix``, ``event_date``) per id-keyed event of silver; the prefix is the key's first 60
  bits (15 hex digits of its sha256) as a long. Events keyed by their content (no source event id: rating dumps,
  logs without ids) are not indexed: their time is part of their key, so their date is the batch's own.
- complete: every id-keyed row of silver has its pair. ``dates_of_known_keys`` appends a batch's pairs before
  silver's MERGE commits and before it is known which of them are duplicates, so the index may also hold pairs
  without rows: those of a run that failed before its MERGE committed, and the new date of an event re-sent with
  its time moved to another day. Such a pair, or a prefix two keys share, makes a MERGE read one partition more,
  never match a row: the MERGE compares whole keys. A lake whose silver has no index yet (older than it) gets
  one built from silver's rows by the first run that needs it. Only flow.ingest writes silver.
- cost: a run with id-keyed events reads the index's two columns once in full (a long and a date per id-keyed
  event in silver), its own keys once more, and appends the pairs the index lacks in one commit (none when it
  lacks none); a run without id-keyed events neither reads nor writes it.
- one ingest at a time: two runs at once that load one id on different days can both insert it, as each MERGE
  reads only its own partitions (the nightly schedule never starts a second run while one is going).
"""
from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lake import tables
from lake.registry import Lake
from transforms import columns as C

PREFIX_HEX_DIGITS = 15  # 60 bits: the largest whole number of hex digits a signed long holds


def key_prefix(event_id: Column) -> Column:
    """The first 60 bits of a sha256 hex ``event_id``, as a long (the index's key)."""
    return F.conv(F.substring(event_id, 1, PREFIX_HEX_DIGITS), 16, 10).cast("long")


def id_keyed_pairs(events: DataFrame) -> DataFrame:
    """(event_key_prefix, event_date) of the rows of ``events`` (silver's columns) keyed by a source event id."""
    return (events.where(F.col(C.SOURCE_EVENT_ID).isNotNull())
            .select(key_prefix(F.col(C.EVENT_ID)).alias(C.EVENT_KEY_PREFIX), F.col(C.EVENT_DATE)))


def build_index(spark, lake: Lake, *, tag: str) -> None:
    """Create the index from the id-keyed rows of the existing silver table, in one commit."""
    tables.append_tagged(spark, id_keyed_pairs(tables.read(spark, lake.silver)), lake.event_keys, tag=tag)


def dates_of_known_keys(spark, lake: Lake, events: DataFrame, *, tag: str) -> list[dt.date]:
    """The event dates under which silver may already hold one of the id-keyed ``events`` (silver's columns, one
    row per key), as the index knew them before this call; then the index gains the pairs of ``events`` it lacks.

    Empty, with the index neither read nor written, when no event of ``events`` is keyed by a source event id.
    """
    pairs = id_keyed_pairs(events).persist()
    try:
        if pairs.isEmpty():
            return []
        if not tables.exists(spark, lake.event_keys):
            if not tables.exists(spark, lake.silver):  # a new lake: no key is known yet
                tables.append_tagged(spark, pairs, lake.event_keys, tag=tag)
                return []
            build_index(spark, lake, tag=tag)
        found = (tables.read(spark, lake.event_keys)
                 .join(pairs.select(C.EVENT_KEY_PREFIX), on=C.EVENT_KEY_PREFIX, how="left_semi").persist())
        try:
            dates = sorted(r[C.EVENT_DATE] for r in found.select(C.EVENT_DATE).distinct().collect())
            new = pairs.join(found, on=[C.EVENT_KEY_PREFIX, C.EVENT_DATE], how="left_anti")
            if not new.isEmpty():
                tables.append_tagged(spark, new, lake.event_keys, tag=tag)
        finally:
            found.unpersist()
        return dates
    finally:
        pairs.unpersist()
