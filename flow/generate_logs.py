"""Synthetic interaction logs written with Spark: clustered tastes, skewed popularity, and injected faults.

    summary = generate_logs(spark, "file:/tmp/logs", GenerateOptions(kind="events", events=1_000_000))

Every value is a hash of (seed, row id), so the output is the same for a seed whatever the cluster size. Users
and items fall into ``clusters`` taste groups: a user interacts mostly with items of their own group, so a
recommender has something real to learn. What each kind writes and which faults it injects: jobs/generate_logs.py.
EVENT_FAULTS maps each event fault to the reason flow.ingest must give it.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, fields
from typing import NamedTuple

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lake import fs
from transforms import parse

START_TS = 1_600_000_000  # 2020-09-13
SPAN_S = 365 * 86_400
FAULT_KINDS = ("wrong_field_count", "missing_user_id", "bad_rating", "rating_out_of_range", "future_timestamp")
KINDS = ("ratings", "events")

# --kind events: each injected fault and the reason jobs.ingest gives it ("malformed_line" depends on the format).
EVENT_FAULTS = {
    "malformed_line": {"csv": parse.WRONG_FIELD_COUNT, "json": parse.MALFORMED_JSON},
    "missing_user_id": parse.MISSING_USER_ID,
    "missing_item_id": parse.MISSING_ITEM_ID,
    "missing_timestamp": parse.MISSING_TIMESTAMP,
    "bad_timestamp": parse.BAD_TIMESTAMP,
    "future_timestamp": parse.FUTURE_TIMESTAMP,
    "unknown_event_type": parse.UNKNOWN_EVENT_TYPE,
    "bad_value": parse.BAD_VALUE,
}
# Labels of the rows that are not faults: what ingest does with them.
GOOD, EXACT_DUPLICATE, NEAR_DUPLICATE, BOT, INVALID_UTF8 = "good", "duplicate", "near_duplicate", "bot", "invalid_utf8"
FUNNEL = (("view", 0.70), ("click", 0.85), ("add_to_cart", 0.93), ("purchase", 0.97), ("rating", 1.0))
WEEKDAY_FACTOR = (1.0, 0.95, 0.95, 1.0, 1.1, 1.35, 1.3)  # Monday .. Sunday
HOUR_FACTOR = (0.3, 0.2, 0.15, 0.1, 0.1, 0.15, 0.3, 0.6, 0.8, 0.9, 1.0, 1.0,
               1.1, 1.0, 0.9, 0.9, 1.0, 1.2, 1.5, 1.8, 1.9, 1.6, 1.1, 0.6)
INVALID_UTF8_FILE = "part-99999-invalid-utf8"


def uniform(seed: int, salt: int, row: Column) -> Column:
    """A deterministic uniform [0, 1) from (seed, salt, row)."""
    return F.pmod(F.xxhash64(F.lit(seed), F.lit(salt), row), F.lit(1 << 40)).cast("double") / float(1 << 40)


def _check_counts(counts: tuple[tuple[str, int], ...], *, items: int, clusters: int) -> None:
    """ValueError naming the first option of ``counts`` (name, value) below 1, or --items below --clusters."""
    for name, value in counts:
        if value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    if items < clusters:
        raise ValueError(f"--items ({items}) must be >= --clusters ({clusters})")


def rating_lines(spark, *, users: int, items: int, ratings: int, clusters: int, in_cluster: float,
                 fault_rate: float, duplicate_rate: float, seed: int, files: int):
    """A DataFrame of one string column ``value``: the lines of the log."""
    _check_counts((("users", users), ("items", items), ("ratings", ratings), ("clusters", clusters)),
                  items=items, clusters=clusters)
    total = ratings + int(ratings * duplicate_rate)
    rows = spark.range(0, total, numPartitions=max(1, files))
    # rows past `ratings` replay an earlier row: same base id, so the very same line
    base = F.when(F.col("id") < ratings, F.col("id")).otherwise(
        F.pmod(F.xxhash64(F.lit(seed), F.lit(99), F.col("id")), F.lit(ratings)))
    rows = rows.select(base.alias("row"))
    r = F.col("row")
    user = F.floor(F.pow(uniform(seed, 1, r), 1.6) * users).cast("long")
    group = F.pmod(user, F.lit(clusters))
    per_group = items // clusters
    inside = uniform(seed, 2, r) < in_cluster
    popularity = F.pow(uniform(seed, 3, r), 2.0)
    item = F.when(inside, F.floor(popularity * per_group) * clusters + group).otherwise(
        F.floor(popularity * items)).cast("long")
    half_steps = F.floor(uniform(seed, 4, r) * 3)  # 0, 1, 2
    rating = F.when(inside, F.lit(4.0) + half_steps * 0.5).otherwise(F.lit(1.0) + half_steps)
    ts = (F.lit(START_TS) + F.floor(uniform(seed, 5, r) * SPAN_S)).cast("long")
    user_s, item_s = (user + 1).cast("string"), (item + 1).cast("string")
    good = F.concat_ws(",", user_s, item_s, rating.cast("string"), ts.cast("string"))

    kind = F.floor(uniform(seed, 7, r) * len(FAULT_KINDS)).cast("int")
    faulty = (
        F.when(kind == 0, F.concat_ws(",", user_s, item_s, rating.cast("string")))
        .when(kind == 1, F.concat_ws(",", F.lit(""), item_s, rating.cast("string"), ts.cast("string")))
        .when(kind == 2, F.concat_ws(",", user_s, item_s, F.lit("five"), ts.cast("string")))
        .when(kind == 3, F.concat_ws(",", user_s, item_s, F.lit("99"), ts.cast("string")))
        .otherwise(F.concat_ws(",", user_s, item_s, rating.cast("string"), F.lit(str(4_000_000_000))))
    )
    return rows.select(F.when(uniform(seed, 6, r) < fault_rate, faulty).otherwise(good).alias("value"))


def zipf_rank(u: Column, n: int, s: float) -> Column:
    """A rank in [0, n) with P(rank = r) roughly proportional to 1 / (r + 1)^s (inverse CDF of the continuous law)."""
    if abs(s - 1.0) < 1e-9:
        x = F.exp(u * math.log(n + 1))
    else:
        x = F.pow(u * float((n + 1) ** (1 - s) - 1) + 1.0, 1.0 / (1 - s))
    return F.least(F.greatest(F.floor(x) - 1, F.lit(0)), F.lit(n - 1)).cast("long")


def _lookup(table: list[int], u: Column) -> Column:
    """table[floor(u * len(table))]: a discrete distribution given as a list of equally likely outcomes."""
    return F.element_at(F.array(*[F.lit(v) for v in table]), (F.floor(u * len(table)) + 1).cast("int"))


def _weighted_table(weights: list[float], size: int = 1000) -> list[int]:
    total = sum(weights)
    table, acc = [], 0.0
    for index, w in enumerate(weights):
        acc += w
        while len(table) < round(acc / total * size):
            table.append(index)
    return table


@dataclass(frozen=True)
class _Tastes:
    """Who a base event's session belongs to and which item it is on: Zipf-like users, each session focused on one
    taste group (the user's own with probability ``in_cluster``), Zipf-like items within that group."""

    seed: int
    users: int
    clusters: int
    in_cluster: float
    user_zipf: float
    item_zipf: float
    per_cluster: int
    session_length: int

    def session_of(self, row: Column) -> Column:
        return F.floor(row / self.session_length).cast("long")

    def user(self, session: Column) -> Column:
        return zipf_rank(uniform(self.seed, 11, session), self.users, self.user_zipf)

    def focus_cluster(self, session: Column) -> Column:
        return F.when(uniform(self.seed, 12, session) < self.in_cluster,
                      F.pmod(self.user(session), F.lit(self.clusters))).otherwise(
            F.floor(uniform(self.seed, 13, session) * self.clusters).cast("long"))

    def base_item(self, row: Column) -> Column:
        return (zipf_rank(uniform(self.seed, 14, row), self.per_cluster, self.item_zipf) * self.clusters
                + self.focus_cluster(self.session_of(row)))


class _Event(NamedTuple):
    """The columns of one event line before it is formatted."""

    user: Column
    item: Column
    event_type: Column
    ts: Column
    value: Column
    event_id: Column


def _funnel_type(t: Column, pos: Column) -> Column:
    """The type of the event at position ``pos`` of its session: a view first, then a FUNNEL step drawn by ``t``."""
    etype = F.lit(FUNNEL[-1][0])
    for name, upper in reversed(FUNNEL[:-1]):
        etype = F.when(t < upper, F.lit(name)).otherwise(etype)
    return F.when(pos == 0, F.lit("view")).otherwise(etype)


def _event_value(etype: Column, v: Column, in_group: Column) -> Column:
    """The value text of an event (``v`` uniform): seconds of a view, a quantity, a rating (higher in group)."""
    return (F.when(etype == "view", F.floor(5 + v * 295))
            .when(etype.isin("add_to_cart", "purchase"), 1 + F.floor(v * 3))
            .when(etype == "rating", F.when(in_group, 4 + F.floor(v * 2)).otherwise(1 + F.floor(v * 3)))
            .cast("long").cast("string"))


def _session_event(r: Column, tastes: _Tastes, *, start_ts: int, day_table: list[int], hour_table: list[int],
                   late_rate: float) -> tuple[_Event, Column]:
    """(the base event of row ``r``, its session's day index): the session's user, day and hour (``late_rate`` of
    the sessions dated 1-3 days early), a minute per position, and the funnel's steps on the session's first item."""
    seed = tastes.seed
    session, pos = tastes.session_of(r), F.pmod(r, F.lit(tastes.session_length))
    user_n = tastes.user(session)
    in_group = F.pmod(user_n, F.lit(tastes.clusters)) == tastes.focus_cluster(session)
    day = _lookup(day_table, uniform(seed, 15, session))
    hour = _lookup(hour_table, uniform(seed, 16, session))
    late_days = F.when(uniform(seed, 17, session) < late_rate, 1 + F.floor(uniform(seed, 18, session) * 3)).otherwise(0)
    ts = (F.lit(start_ts) + (day - late_days) * 86_400 + hour * 3600 + F.floor(uniform(seed, 19, session) * 3000)
          + pos * 60 + F.floor(uniform(seed, 20, r) * 60)).cast("long")
    etype = _funnel_type(uniform(seed, 21, r), pos)
    # the funnel: clicks, carts, purchases and ratings are on the item the session opened with (its first view)
    item_n = F.when((etype == "view") | (pos == 0), tastes.base_item(r)).otherwise(tastes.base_item(r - pos))
    value = _event_value(etype, uniform(seed, 22, r), in_group)
    event = _Event(F.concat(F.lit("u"), user_n), F.concat(F.lit("i"), item_n), etype, ts, value,
                   F.concat(F.lit(f"e{seed}-"), r))
    return event, day


def _bot_event(rid: Column, *, near_end: int, bot_events: int, bot_day: int, seed: int, items: int,
               item_zipf: float) -> _Event:
    """The event of bot row ``rid`` (bot rows start at ``near_end``): user bot-<b>, ``bot_events`` views spread
    over the day that starts at ``bot_day`` (unix seconds), no value."""
    bot_k = rid - near_end
    bot_b = F.floor(bot_k / max(1, bot_events)).cast("long")
    ts = F.lit(bot_day) + F.floor(F.pmod(bot_k, F.lit(max(1, bot_events))) * 86_400.0
                                  / max(1, bot_events)).cast("long")
    item = F.concat(F.lit("i"), zipf_rank(uniform(seed, 23, rid), items, item_zipf))
    return _Event(F.concat(F.lit("bot-"), bot_b), item, F.lit("view"), ts, F.lit(None).cast("string"),
                  F.concat(F.lit(f"b{seed}-"), rid))


def _fault(r: Column, is_bot: Column, *, seed: int, fault_rate: float) -> Column:
    """The EVENT_FAULTS name injected into row ``r`` (``fault_rate`` of the rows that are not bots), else null."""
    fault_names = list(EVENT_FAULTS)
    faulty = (~is_bot) & (uniform(seed, 24, r) < fault_rate)
    kind = F.floor(uniform(seed, 25, r) * len(fault_names)).cast("int")
    return F.when(faulty, F.element_at(F.array(*[F.lit(f) for f in fault_names]), kind + 1))


def _with_fault(event: _Event, fault: Column, *, day: Column, iso: Column) -> _Event:
    """``event`` as its line shows it with ``fault`` injected; its time is text (``iso`` unless the fault is there)."""
    f_user = F.when(fault == "missing_user_id", F.lit(None)).otherwise(event.user)
    f_item = F.when(fault == "missing_item_id", F.lit(None)).otherwise(event.item)
    f_type = (F.when(fault == "unknown_event_type", F.lit("hover")).when(fault == "bad_value", F.lit("purchase"))
              .otherwise(event.event_type))
    f_ts = (F.when(fault == "missing_timestamp", F.lit(None)).when(fault == "bad_timestamp", F.concat(F.lit("day "), day))
            .when(fault == "future_timestamp", F.lit("2999-01-01T00:00:00Z")).otherwise(iso))
    f_value = F.when(fault == "bad_value", F.lit("lots")).otherwise(event.value)
    return _Event(f_user, f_item, f_type, f_ts, f_value, event.event_id)


def _csv_line(*cols: Column) -> Column:
    return F.concat_ws(",", *[F.coalesce(c.cast("string"), F.lit("")) for c in cols])


def _csv_lines(event: _Event, shown: _Event, fault: Column, iso: Column) -> tuple[Column, Column]:
    """(the CSV line of ``shown``, or a malformed one for that fault; the near replay of ``event``)."""
    malformed = F.concat_ws(";", event.user, event.item, event.event_type, iso)
    line = F.when(fault == "malformed_line", malformed).otherwise(_csv_line(*shown))
    near_line = _csv_line(F.concat(F.lit(" "), event.user, F.lit(" ")), event.item, F.upper(event.event_type),
                          event.ts, F.concat(event.value, F.lit(".0")), event.event_id)
    return line, near_line


def _json_lines(event: _Event, shown: _Event, fault: Column) -> tuple[Column, Column]:
    """(the JSON line of ``shown``, cut short for the malformed_line fault; the near replay of ``event``)."""
    line = F.to_json(F.struct(shown.user.alias("user_id"), shown.item.alias("item_id"),
                              shown.event_type.alias("event_type"), shown.ts.alias("event_ts"),
                              shown.value.alias("value"), shown.event_id.alias("event_id")))
    line = F.when(fault == "malformed_line", F.substring(line, 1, 30)).otherwise(line)
    near_line = F.to_json(F.struct(event.event_id.alias("event_id"), event.ts.alias("event_ts"),
                                   event.value.cast("double").alias("value"), event.item.alias("item_id"),
                                   F.upper(event.event_type).alias("event_type"), event.user.alias("user_id")))
    return line, near_line


def event_rows(spark, *, events: int, users: int, items: int, clusters: int, in_cluster: float, start_date: str,
               days: int, session_length: int, user_zipf: float, item_zipf: float, late_rate: float,
               fault_rate: float, duplicate_rate: float, near_duplicate_rate: float, bot_users: int,
               bot_events: int, seed: int, files: int, output_format: str) -> DataFrame:
    """(value, label): the lines of the event log and what each is (GOOD, a fault of EVENT_FAULTS, a replay, a bot).

    Rows [0, events) are base events; then exact replays, near replays and bot events follow, each a function of
    its row id. A replay of a faulty line carries that fault's label (ingest quarantines it again).
    """
    _check_counts((("events", events), ("users", users), ("items", items), ("clusters", clusters),
                   ("days", days), ("session-length", session_length)), items=items, clusters=clusters)
    start = dt.datetime.fromisoformat(start_date).replace(tzinfo=dt.timezone.utc)
    start_ts = int(start.timestamp())
    n_exact, n_near = int(events * duplicate_rate), int(events * near_duplicate_rate)
    n_bots = bot_users * bot_events
    total = events + n_exact + n_near + n_bots
    day_table = _weighted_table([WEEKDAY_FACTOR[(start + dt.timedelta(days=d)).weekday()] * (1 + 0.2 * d / days)
                                 for d in range(days)])
    hour_table = _weighted_table(list(HOUR_FACTOR))
    tastes = _Tastes(seed=seed, users=users, clusters=clusters, in_cluster=in_cluster, user_zipf=user_zipf,
                     item_zipf=item_zipf, per_cluster=items // clusters, session_length=session_length)

    rid = F.col("id")
    exact_end, near_end = events + n_exact, events + n_exact + n_near
    base = (F.when(rid < events, rid)
            .when(rid < near_end, F.pmod(F.xxhash64(F.lit(seed), F.lit(99), rid), F.lit(events)))
            .otherwise(F.lit(None).cast("long")))
    rows = spark.range(0, total, numPartitions=max(1, files)).select(rid, base.alias("row"))

    r = F.col("row")
    session_event, day = _session_event(r, tastes, start_ts=start_ts, day_table=day_table, hour_table=hour_table,
                                        late_rate=late_rate)
    # bots: user bot-<b>, --bot-events views spread over one day (the middle of the log)
    bot_event = _bot_event(rid, near_end=near_end, bot_events=bot_events, bot_day=start_ts + (days // 2) * 86_400,
                           seed=seed, items=items, item_zipf=item_zipf)
    is_bot = rid >= near_end
    event = _Event(*(F.when(is_bot, bot).otherwise(base_col) for bot, base_col in zip(bot_event, session_event)))
    iso = F.date_format(F.timestamp_seconds(event.ts), "yyyy-MM-dd'T'HH:mm:ss'Z'")
    fault = _fault(r, is_bot, seed=seed, fault_rate=fault_rate)
    shown = _with_fault(event, fault, day=day, iso=iso)

    near = (rid >= exact_end) & (rid < near_end) & fault.isNull()
    if output_format == "csv":
        line, near_line = _csv_lines(event, shown, fault, iso)
    elif output_format == "json":
        line, near_line = _json_lines(event, shown, fault)
    else:
        raise ValueError(f"--output-format must be csv or json, got {output_format!r}")
    label = (F.when(is_bot, F.lit(BOT)).when(fault.isNotNull(), fault)
             .when(rid >= exact_end, F.lit(NEAR_DUPLICATE)).when(rid >= events, F.lit(EXACT_DUPLICATE))
             .otherwise(F.lit(GOOD)))
    return rows.select(F.when(near, near_line).otherwise(line).alias("value"), label.alias("label"))


def invalid_utf8_lines(*, n: int, seed: int, start_date: str, output_format: str) -> bytes:
    """``n`` lines that carry a byte sequence which is not UTF-8 (0xFF 0xFE) inside the item id."""
    iso = f"{start_date}T12:00:00Z"
    lines = []
    for k in range(n):
        item = b"i\xff\xfe" + str(k).encode()
        if output_format == "json":
            lines.append(b'{"user_id":"u%d","item_id":"%s","event_type":"view","event_ts":"%s","event_id":"x%d-%d"}'
                         % (k, item, iso.encode(), seed, k))
        else:
            lines.append(b"u%d,%s,view,%s,,x%d-%d" % (k, item, iso.encode(), seed, k))
    return b"\n".join(lines) + (b"\n" if lines else b"")


@dataclass(frozen=True, kw_only=True)
class GenerateOptions:
    """What to generate; the job's flags map to these fields one to one (``--in-cluster`` -> ``in_cluster``)."""
    kind: str = "ratings"  # one of KINDS
    users: int = 2000
    items: int = 500
    ratings: int = 100_000  # ratings: lines before duplicates are added
    clusters: int = 8  # taste groups of users and items
    in_cluster: float = 0.85  # share of a user's ratings inside their group
    fault_rate: float = 0.01  # share of malformed lines
    duplicate_rate: float = 0.01  # share of extra lines replaying another
    seed: int = 7
    files: int = 4  # number of part files
    events: int = 100_000  # events: events before replays and bots are added
    output_format: str = "csv"  # events: csv (--format events) or json (--format events-json)
    start_date: str = "2024-01-01"  # events: first day of the log (UTC)
    days: int = 7  # events: days the log spans
    session_length: int = 6  # events per session
    user_zipf: float = 0.8  # Zipf exponent of user activity
    item_zipf: float = 1.0  # Zipf exponent of item popularity
    late_rate: float = 0.0  # share of sessions dated 1-3 days early
    near_duplicate_rate: float = 0.01  # share of extra lines replaying an event in another formatting
    bot_users: int = 0  # bot-like users added
    bot_events: int = 20_000  # events of each bot, all on one day
    invalid_utf8_lines: int = 0  # lines with non-UTF-8 bytes (an extra part file)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def generate_logs(spark, output: str, options: GenerateOptions = GenerateOptions()) -> dict:
    """Write the log into the folder ``output`` (a URI; replaced); returns a summary with the number of lines."""
    if options.kind == "events":
        return _write_events(spark, output, options)
    o = options
    lines = rating_lines(spark, users=o.users, items=o.items, ratings=o.ratings, clusters=o.clusters,
                         in_cluster=o.in_cluster, fault_rate=o.fault_rate, duplicate_rate=o.duplicate_rate,
                         seed=o.seed, files=o.files)
    lines.write.mode("overwrite").text(output)
    return {"output": output, "kind": "ratings", "lines": o.ratings + int(o.ratings * o.duplicate_rate),
            "users": o.users, "items": o.items, "seed": o.seed}


def _write_events(spark, output: str, o: GenerateOptions) -> dict:
    rows = event_rows(spark, events=o.events, users=o.users, items=o.items, clusters=o.clusters,
                      in_cluster=o.in_cluster, start_date=o.start_date, days=o.days,
                      session_length=o.session_length, user_zipf=o.user_zipf, item_zipf=o.item_zipf,
                      late_rate=o.late_rate, fault_rate=o.fault_rate, duplicate_rate=o.duplicate_rate,
                      near_duplicate_rate=o.near_duplicate_rate, bot_users=o.bot_users,
                      bot_events=o.bot_events, seed=o.seed, files=o.files, output_format=o.output_format)
    rows.select("value").write.mode("overwrite").text(output)
    if o.invalid_utf8_lines:
        ext = "json" if o.output_format == "json" else "csv"
        fs.write_bytes(spark, f"{output}/{INVALID_UTF8_FILE}.{ext}",
                       invalid_utf8_lines(n=o.invalid_utf8_lines, seed=o.seed, start_date=o.start_date,
                                          output_format=o.output_format))
    lines = (o.events + int(o.events * o.duplicate_rate) + int(o.events * o.near_duplicate_rate)
             + o.bot_users * o.bot_events + o.invalid_utf8_lines)
    return {"output": output, "kind": "events", "format": o.output_format, "lines": lines, "events": o.events,
            "users": o.users, "items": o.items, "seed": o.seed, "start_date": o.start_date, "days": o.days}
