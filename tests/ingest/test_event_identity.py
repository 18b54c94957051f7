"""One event identity: a re-sent event is a duplicate whatever its timestamp (issue 31, item 1).

An event log line with its own event id is the event (user, event id): re-sent with its time moved by an hour,
a day, a month, or back into the late-event window (dated 1-3 days before the batch, as flow.generate_logs' late
sessions are), it is a duplicate of the copy already in silver, which keeps its first time. Lines without an id
are their natural key (user, item, type, time, value): the same line again is a duplicate, a moved time is
another event. Rating dumps keep their own identity (user, item, time, rating).
"""
from __future__ import annotations

import datetime as dt
import shutil

import pytest
from pyspark.sql import functions as F

from flow import event_keys
from flow import ingest as ingest_flow
from jobs import ingest
from lake import tables
from lake.registry import Lake
from transforms import columns as C

pytestmark = pytest.mark.slow

HEADER = "user_id,item_id,event_type,event_ts,value,event_id"
# the first delivery: the batch's days are 2024-03-10 .. 2024-03-12; e6 arrives late (dated 2024-03-08)
FIRST = [
    "u1,i1,view,2024-03-10T10:00:00Z,30,e1",
    "u1,i2,view,2024-03-10T23:30:00Z,40,e2",
    "u1,i3,click,2024-03-10T12:00:00Z,,e3",
    "u2,i1,purchase,2024-03-31T12:00:00Z,2,e4",
    "u2,i2,view,2024-03-12T09:00:00Z,50,e5",
    "u3,i4,view,2024-03-08T18:00:00Z,60,e6",
    "u2,i9,view,2024-03-11T07:00:00Z,10,e1",  # another user's e1: another event
    "u4,i5,click,2024-03-11T08:00:00Z,,",  # no id: its natural key is the event
]
# the same events re-sent with their time moved, plus new ones
RESENT = [
    "u1,i1,view,2024-03-10T11:00:00Z,30,e1",  # one hour, same day
    "u1,i2,view,2024-03-11T00:30:00Z,40,e2",  # one hour, over midnight
    "u1,i3,click,2024-03-11T12:00:00Z,,e3",  # one day
    "u2,i1,purchase,2024-04-30T12:00:00Z,2,e4",  # one month (another month partition too)
    "u2,i2,view,2024-03-10T09:00:00Z,50,e5",  # two days back: inside the late-event window
    "u3,i4,view,2024-03-10T18:00:00Z,60,e6",  # the late event re-sent at its batch's day
    "u4,i5,click,2024-03-11T08:00:00Z,,",  # the same line without an id: a duplicate
    "u4,i5,click,2024-03-12T08:00:00Z,,",  # moved, without an id: another event
    "u5,i6,view,2024-05-01T10:00:00Z,20,e7",  # new
    "u5,i6,view,2024-05-02T10:00:00Z,20,e7",  # its re-send within this input, a day later
]
RESENT_WITH_ID = 6


def write(path, lines: list[str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return str(path)


def run(spark, lake: Lake, source: str, fmt: str = "events", *extra: str) -> dict:
    argv = ["--lake", lake.root, "--input", source, "--format", fmt, "--progress-every", "0", *extra]
    return ingest.run(spark, ingest.build_parser().parse_args(argv))


def silver_events(spark, lake: Lake) -> dict:
    """(user, source event id or item) -> sorted event times in silver, one entry per silver row."""
    out: dict = {}
    for r in tables.read(spark, lake.silver).collect():
        key = (r[C.USER_ID], r[C.SOURCE_EVENT_ID] or r[C.ITEM_ID])
        out.setdefault(key, []).append(r[C.EVENT_TS].isoformat())
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.parametrize("grain", ["date", "month"])
def test_a_resent_event_is_a_duplicate_whatever_its_new_time(spark, tmp_path, grain):
    lake = Lake(str(tmp_path / "lake"))
    first = run(spark, lake, write(tmp_path / "in" / "first.csv", FIRST), "events", "--partition-grain", grain)
    assert (first["loaded"], first["duplicates"], first["quarantined"]) == (len(FIRST), 0, 0)

    again = run(spark, lake, write(tmp_path / "in2" / "resent.csv", RESENT))
    assert again["status"] == "ok"  # the accounting held: read = headers + loaded + duplicates + quarantined
    assert (again["read"], again["headers"], again["quarantined"]) == (len(RESENT) + 1, 1, 0)
    assert again["duplicates_in_silver"] == RESENT_WITH_ID + 1  # the six re-sent ids and the repeated line
    assert again["duplicates_in_batch"] == 1  # e7's second copy
    assert again["loaded"] == 2  # e7 and the moved line without an id
    # the MERGE read the batch's partitions and those the re-sent ids live in (2024-03-08, -10, -12, -31), no other
    assert again["silver_partitions_read"] == {"date": 8, "month": 3}[grain]

    silver = tables.read(spark, lake.silver)
    assert silver.count() == silver.select(C.EVENT_ID).distinct().count() == len(FIRST) + 2
    events = silver_events(spark, lake)
    assert events[("u1", "e1")] == ["2024-03-10T10:00:00"]  # each re-sent event keeps its first time
    assert events[("u1", "e2")] == ["2024-03-10T23:30:00"]
    assert events[("u1", "e3")] == ["2024-03-10T12:00:00"]
    assert events[("u2", "e4")] == ["2024-03-31T12:00:00"]
    assert events[("u2", "e5")] == ["2024-03-12T09:00:00"]
    assert events[("u3", "e6")] == ["2024-03-08T18:00:00"]
    assert events[("u2", "e1")] == ["2024-03-11T07:00:00"]
    assert events[("u4", "i5")] == ["2024-03-11T08:00:00", "2024-03-12T08:00:00"]
    assert events[("u5", "e7")] == ["2024-05-01T10:00:00"]

    reread = run(spark, lake, str(tmp_path / "in2"))  # the same file again: every line a duplicate
    assert (reread["loaded"], reread["duplicates_in_silver"]) == (0, len(RESENT) - 1)
    assert tables.read(spark, lake.silver).count() == len(FIRST) + 2


def test_a_lake_older_than_the_key_index_gets_it_built_from_silver(spark, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    run(spark, lake, write(tmp_path / "in" / "first.csv", FIRST))
    shutil.rmtree(lake.event_keys)  # silver written before the index existed

    again = run(spark, lake, write(tmp_path / "in2" / "resent.csv", RESENT))
    assert (again["loaded"], again["duplicates_in_silver"]) == (2, RESENT_WITH_ID + 1)
    silver = tables.read(spark, lake.silver)
    assert silver.count() == silver.select(C.EVENT_ID).distinct().count() == len(FIRST) + 2
    # the index holds a pair for every id-keyed event of silver (the old ones built from silver, the new one
    # appended), and the pairs of the re-sends whose time moved to another day (appended before their MERGE)
    index = [tuple(r) for r in tables.read(spark, lake.event_keys).collect()]
    in_silver = {tuple(r) for r in event_keys.id_keyed_pairs(silver).collect()}
    assert len(in_silver) == 7 + 1  # e1..e6 and u2's e1; e7
    assert len(index) == len(set(index)) and in_silver <= set(index)
    prefix = {(r[C.USER_ID], r[C.SOURCE_EVENT_ID]): r["prefix"] for r in silver.select(
        C.USER_ID, C.SOURCE_EVENT_ID, event_keys.key_prefix(F.col(C.EVENT_ID)).alias("prefix")).collect()}
    moved = {(prefix[(f[0], f[5])], dt.date.fromisoformat(f[3][:10])) for f in (x.split(",") for x in RESENT[1:6])}
    assert set(index) - in_silver == moved  # e2, e3, e4, e5, e6 at their new dates; e1 stayed on its day


def test_the_merge_reads_the_batchs_partitions_and_those_its_known_keys_live_in():
    march, april = dt.date(2024, 3, 10), dt.date(2024, 4, 2)
    assert ingest_flow.partitions_to_read(C.EVENT_DATE, [april], [march, april]) == [march, april]
    assert ingest_flow.partitions_to_read(C.EVENT_MONTH, ["2024-04"], [march, april]) == ["2024-03", "2024-04"]
    assert ingest_flow.partitions_to_read(C.EVENT_DATE, [april], []) == [april]


RATINGS = ["userId,movieId,rating,timestamp", "1,10,4.0,1710064800", "1,11,3.5,1710064800", "2,10,5.0,1709251200"]


def test_rating_dumps_keep_their_identity_user_item_time_rating(spark, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "ratings.csv").write_text("\n".join(RATINGS) + "\n")
    first = run(spark, lake, str(tmp_path / "r1"), "movielens")
    assert (first["loaded"], first["partition_column"]) == (3, C.EVENT_MONTH)
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / "ratings.csv").write_text("\n".join([
        RATINGS[0],
        "1,10,4.0,1710064800",  # the same rating again: a duplicate
        "1,10,4.0,1712743200",  # the same user, item and rating a month later: another rating
        "1,11,2.0,1710068400",  # re-rated an hour later: another rating (training keeps the latest)
    ]) + "\n")
    again = run(spark, lake, str(tmp_path / "r2"), "movielens")
    assert (again["loaded"], again["duplicates_in_silver"], again["duplicates_in_batch"]) == (2, 1, 0)
    assert tables.read(spark, lake.silver).count() == 5
    assert not tables.exists(spark, lake.event_keys)  # no source event ids: the index is never needed
