"""Outlier policy: rows that parse fine but are not believable are quarantined (reason ``bot_suspected``), not deleted.

A user with more than ``max_events_per_day`` good events on one UTC day *within one ingest batch* is treated as a
bot for that day: all of that user's events of that day go to quarantine, where they can be inspected and, if the
policy was wrong, re-ingested. Exact replays count towards the volume (they are rows a client sent). Events the
same user sent in other batches are not added up: the policy looks at one run's input only.
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from transforms import columns as C
from transforms.parse import BOT_SUSPECTED

N_EVENTS_DAY = "n_events_day"


def bot_user_days(parsed: DataFrame, *, max_events_per_day: int) -> DataFrame:
    """(user_id, event_date, n_events_day) for user-days with more than ``max_events_per_day`` good rows."""
    if max_events_per_day < 1:
        raise ValueError(f"max_events_per_day must be >= 1 (0 switches the policy off upstream), got {max_events_per_day}")
    good = parsed.where(F.col(C.REASON).isNull())
    return (
        good.groupBy(C.USER_ID, F.to_date(C.EVENT_TS).alias(C.EVENT_DATE))
        .agg(F.count(F.lit(1)).alias(N_EVENTS_DAY))
        .where(F.col(N_EVENTS_DAY) > max_events_per_day)
    )


def quarantine_bot_rows(parsed: DataFrame, flagged: DataFrame) -> DataFrame:
    """``parsed`` with ``reason = bot_suspected`` on the good rows of each flagged (user_id, event_date).

    ``flagged`` is small (a handful of user-days) and broadcast; the typed columns stay filled on those rows so
    the quarantine keeps who and when.
    """
    marks = F.broadcast(flagged.select(C.USER_ID, F.col(C.EVENT_DATE).alias("_bot_date"), F.lit(True).alias("_bot")))
    joined = parsed.join(
        marks, (parsed[C.USER_ID] == marks[C.USER_ID]) & (F.to_date(parsed[C.EVENT_TS]) == marks["_bot_date"]), "left"
    ).drop(marks[C.USER_ID])
    reason = F.when(F.col(C.REASON).isNull() & F.col("_bot"), F.lit(BOT_SUSPECTED)).otherwise(F.col(C.REASON))
    return joined.withColumn(C.REASON, reason).drop("_bot", "_bot_date")
