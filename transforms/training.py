"""Build the training table: one row per (user, item) with an implicit confidence weight or an explicit rating."""
from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from transforms import columns as C

# Weight of one event of each type in implicit mode; None means "use the event's value" (a rating, a play count).
# A fixed weight ignores the event's value (value_ignored_by_type says how many events carried one).
DEFAULT_EVENT_WEIGHTS: dict[str, float | None] = {
    "view": 1.0,
    "click": 2.0,
    "add_to_cart": 4.0,
    "purchase": 8.0,
    C.RATING_EVENT: None,
    C.PAIR_EVENT: None,  # the ``pairs`` formats: the weight column (1 when absent)
}
# How a (user, item) pair's summed weight w becomes the ALS confidence input: as is, or log(1 + w) (Hu, Koren and
# Volinsky's log scaling: a thousand plays are not a thousand times one play). ALS then takes 1 + alpha * it.
WEIGHT_SCALINGS = ("linear", "log1p")


def implicit_training(events: DataFrame, *, event_weights: Mapping[str, float | None] | None = None,
                      half_life_days: float | None = None, as_of_ts: str | None = None,
                      min_rating: float | None = None, weight_scaling: str = "linear") -> DataFrame:
    """(user_id, item_id, weight, n_events, last_event_ts): summed event weights, optionally time-decayed, then
    scaled by ``weight_scaling`` (WEIGHT_SCALINGS: ``linear`` keeps the sum, ``log1p`` takes log(1 + sum)).

    An event weighs its type's weight in ``event_weights``, or its value where that weight is None (ratings, the
    pairs formats' weight). ``half_life_days`` halves an event's weight per that many days before ``as_of_ts``
    (default: the newest event). ``min_rating`` drops rating events below it (a low rating is not positive
    feedback). Event types absent from ``event_weights`` contribute nothing; ingest quarantines unknown types
    before they get here. Pairs whose weight is not positive are left out.
    """
    weights = DEFAULT_EVENT_WEIGHTS if event_weights is None else event_weights
    if not weights:
        raise ValueError("event_weights is empty: no event type would count")
    if weight_scaling not in WEIGHT_SCALINGS:
        raise ValueError(f"weight_scaling must be one of {WEIGHT_SCALINGS}, got {weight_scaling!r}")
    weight = F.lit(None).cast("double")
    for event_type, w in weights.items():
        value = F.col(C.VALUE) if w is None else F.lit(float(w))
        weight = F.when(F.col(C.EVENT_TYPE) == event_type, value).otherwise(weight)
    df = events
    if min_rating is not None:
        df = df.where((F.col(C.EVENT_TYPE) != C.RATING_EVENT) | (F.col(C.VALUE) >= min_rating))
    df = df.withColumn(C.WEIGHT, weight).where(F.col(C.WEIGHT).isNotNull() & (F.col(C.WEIGHT) > 0))
    if half_life_days is not None:
        if half_life_days <= 0:
            raise ValueError(f"half_life_days must be positive, got {half_life_days}")
        if as_of_ts is None:
            newest = df.agg(F.max(C.EVENT_TS)).first()[0]
            as_of = F.lit(newest).cast("timestamp")
        else:
            as_of = F.lit(as_of_ts).cast("timestamp")
        age_days = (F.unix_micros(as_of) - F.unix_micros(F.col(C.EVENT_TS))) / F.lit(86_400e6)
        df = df.withColumn(C.WEIGHT, F.col(C.WEIGHT) * F.pow(F.lit(0.5), F.greatest(age_days, F.lit(0.0)) / half_life_days))
    summed = F.sum(C.WEIGHT)
    return df.groupBy(C.USER_ID, C.ITEM_ID).agg(
        (F.log1p(summed) if weight_scaling == "log1p" else summed).alias(C.WEIGHT),
        F.count(F.lit(1)).alias(C.N_EVENTS),
        F.max(C.EVENT_TS).alias(C.LAST_EVENT_TS),
    )


def value_ignored_by_type(values_by_type: dict[str, int],
                          event_weights: Mapping[str, float | None] | None = None) -> dict[str, int]:
    """Of ``values_by_type`` (event type -> good events carrying a value), the types whose value implicit training
    ignores: those with a fixed weight in ``event_weights`` (default DEFAULT_EVENT_WEIGHTS), sorted by type."""
    weights = DEFAULT_EVENT_WEIGHTS if event_weights is None else event_weights
    return {t: n for t, n in sorted(values_by_type.items()) if n and weights.get(t) is not None}


def value_ignored_note(ignored: dict[str, int]) -> str | None:
    """One line saying which events' values implicit training ignores (value_ignored_by_type), or None."""
    if not ignored:
        return None
    counts = ", ".join(f"{t} {n:,}" for t, n in ignored.items())
    return (f"value ignored by implicit training (fixed weight per event type): {counts} event(s) carry a value; "
            "give the type a null weight in --event-weights to weigh such events by their value")


def explicit_training(events: DataFrame) -> DataFrame:
    """(user_id, item_id, rating, n_events, last_event_ts): the latest rating of each pair (ties: larger event_id)."""
    ratings = events.where(F.col(C.EVENT_TYPE) == C.RATING_EVENT)
    return ratings.groupBy(C.USER_ID, C.ITEM_ID).agg(
        F.max_by(C.VALUE, F.struct(C.EVENT_TS, C.EVENT_ID)).alias(C.RATING),
        F.count(F.lit(1)).alias(C.N_EVENTS),
        F.max(C.EVENT_TS).alias(C.LAST_EVENT_TS),
    )


def popular_items(training: DataFrame, *, n: int) -> DataFrame:
    """Top ``n`` items by distinct users (ties: more events, then item_id): (rank, item_id, score)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    counts = training.groupBy(C.ITEM_ID).agg(
        F.countDistinct(C.USER_ID).alias("users"), F.sum(C.N_EVENTS).alias("events")
    )
    top = counts.orderBy(F.col("users").desc(), F.col("events").desc(), F.col(C.ITEM_ID)).limit(n).collect()
    rows = [(rank, r[C.ITEM_ID], float(r["users"])) for rank, r in enumerate(top, start=1)]
    return training.sparkSession.createDataFrame(rows, f"{C.RANK} int, {C.ITEM_ID} string, {C.SCORE} double")


def recent_popular_items(training: DataFrame, *, n: int, days: float, as_of_ts: str | None = None) -> DataFrame:
    """``popular_items`` over the pairs last seen within ``days`` before ``as_of_ts`` (default: the newest
    ``last_event_ts`` in the table, so the window follows the data, not the wall clock).

    A pair counts when the user's latest event on the item falls in the window: "what people engaged with lately".
    """
    if days <= 0:
        raise ValueError(f"days must be positive, got {days}")
    if C.LAST_EVENT_TS not in training.columns:
        raise ValueError(f"the training table has no {C.LAST_EVENT_TS!r} column (columns: {training.columns})")
    if as_of_ts is None:
        newest = training.agg(F.max(C.LAST_EVENT_TS)).first()[0]
        if newest is None:
            return popular_items(training, n=n)  # empty table: empty result
        as_of = F.lit(newest).cast("timestamp")
    else:
        as_of = F.lit(as_of_ts).cast("timestamp")
    since = F.timestamp_micros(F.unix_micros(as_of) - F.lit(int(days * 86_400e6)))
    window = training.where((F.col(C.LAST_EVENT_TS) >= since) & (F.col(C.LAST_EVENT_TS) <= as_of))
    return popular_items(window, n=n)
