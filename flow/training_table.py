"""The gold training table from silver events: stable integer ids, one row per (user, item).

    summary = build_training(spark, Lake("./lake"), TrainingTableOptions(mode="implicit", min_user_items=5))

implicit: weight = sum of event-type weights (optionally time-decayed; ``weight_scaling`` log1p takes
log(1 + sum)), for the weighted ALS of Hu, Koren and Volinsky; explicit: the latest rating of each (user, item).
An optional minimum-support filter (k-core: ``min_user_items``, ``min_item_users``) is applied to the (user, item) rows before ids are assigned, repeated until
every remaining user and item meets it, so the ids, the training table and the model all see the same rows.
New users and items get new integer ids appended to silver/user_ids and silver/item_ids; ids that exist never
change (a user dropped by the filter keeps an id it already had). gold/training is replaced atomically.

Pairs whose user or item id breaks the id contract (serving.ids; silver rows ingested before it was enforced) are
left out before anything else, and counted in the summary (``refused_ids``): the service could not serve them.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from flow.model_runs import NoModelError
from lake import tables
from lake.registry import Lake
from transforms import columns as C
from transforms import id_rules, ids, kcore, training

MODES = ("implicit", "explicit")
_IDS_KEPT = "_ids_kept"


class EmptyInputError(RuntimeError):
    """There is nothing to build from; the message names the table."""


@dataclass(frozen=True, kw_only=True)
class TrainingTableOptions:
    mode: str = "implicit"  # one of MODES
    event_weights: Mapping[str, float | None] | None = None  # implicit: weight per event type (None: the default)
    half_life_days: float | None = None  # implicit: halve an event's weight every this many days
    weight_scaling: str = "linear"  # implicit: one of transforms.training.WEIGHT_SCALINGS, applied to each pair's sum
    min_rating: float | None = None  # implicit: ignore rating events below this value
    as_of: str | None = None  # implicit with half_life_days: decay relative to this time (default: newest event)
    min_user_items: int = 1  # k-core: keep users with at least this many items
    min_item_users: int = 1  # k-core: keep items with at least this many users
    kcore_max_iter: int = 20  # k-core: rounds before giving up


def training_mode(columns: list[str]) -> bool:
    """True for implicit (weight column), False for explicit (rating column)."""
    if C.WEIGHT in columns:
        return True
    if C.RATING in columns:
        return False
    raise ValueError(f"gold/training has neither {C.WEIGHT!r} nor {C.RATING!r} (columns: {columns}): "
                     "rebuild it with jobs.build_training")


def read_training(spark: SparkSession, lake: Lake) -> tuple[int, DataFrame]:
    """(version, rows) of gold/training at its current version; NoModelError when there is none."""
    if not tables.exists(spark, lake.training):
        raise NoModelError(f"no training table at {lake.training}: run jobs.build_training first")
    version = tables.version(spark, lake.training)
    return version, tables.read(spark, lake.training, version=version)


def update_id_map(spark: SparkSession, path: str, pairs: DataFrame, *, id_col: str, idx_col: str) -> DataFrame:
    """Add ids not yet mapped to the id map at ``path``; return the full map.

    The new rows go in with an insert-only MERGE on the id, not a blind append: MERGE reads the whole map, so a
    second build_training committing new ids at the same time makes this commit fail with a concurrent-append
    conflict instead of both handing out the same indices (delta-io/delta#550). No new ids, no commit.
    """
    existing = tables.read_if_exists(spark, path)
    fresh = ids.new_id_rows(existing, pairs, id_col=id_col, idx_col=idx_col)
    if existing is None or not fresh.isEmpty():
        tables.insert_new(spark, fresh, path, key=id_col)
    return tables.read(spark, path)


def training_pairs(events: DataFrame, options: TrainingTableOptions) -> DataFrame:
    """One row per (user, item) of ``events`` by the options' mode (before the k-core filter and the ids)."""
    if options.mode == "explicit":
        return training.explicit_training(events)
    if options.mode != "implicit":
        raise ValueError(f"mode must be one of {MODES}, got {options.mode!r}")
    weights = dict(options.event_weights) if options.event_weights else None
    return training.implicit_training(events, event_weights=weights, half_life_days=options.half_life_days,
                                      as_of_ts=options.as_of, min_rating=options.min_rating,
                                      weight_scaling=options.weight_scaling)


def flag_contract_ids(pairs: DataFrame) -> DataFrame:
    """``pairs`` plus ``_ids_kept``: whether both its user and its item id keep the id contract as stored."""
    return pairs.withColumn(_IDS_KEPT, id_rules.valid_stored_id(F.col(C.USER_ID))
                            & id_rules.valid_stored_id(F.col(C.ITEM_ID)))


def _count_refused(flagged: DataFrame) -> tuple[int, dict]:
    """(pairs kept, {"pairs", "events"} refused) of flag_contract_ids' output, in one aggregation."""
    refused = ~F.col(_IDS_KEPT)
    row = flagged.agg(F.count(F.when(F.col(_IDS_KEPT), F.lit(1))).alias("kept"),
                      F.count(F.when(refused, F.lit(1))).alias("pairs"),
                      F.sum(F.when(refused, F.col(C.N_EVENTS))).alias("events")).first()
    return row["kept"], {"pairs": row["pairs"], "events": int(row["events"] or 0)}


def build_training(spark: SparkSession, lake: Lake, options: TrainingTableOptions) -> dict:
    """Replace gold/training from the current silver events; returns the summary (versions, counts, k-core, pairs
    left out for ids that break the id contract)."""
    started = time.time()
    if not tables.exists(spark, lake.silver):
        raise EmptyInputError(f"no silver events at {lake.silver}: run jobs.ingest first")
    silver_version = tables.version(spark, lake.silver)
    flagged = flag_contract_ids(training_pairs(tables.read(spark, lake.silver, version=silver_version),
                                               options)).cache()
    try:
        n_pairs, refused = _count_refused(flagged)
        pairs = flagged.where(F.col(_IDS_KEPT)).drop(_IDS_KEPT)
        support = None
        if options.min_user_items > 1 or options.min_item_users > 1:
            pairs, support = kcore.k_core(pairs, min_user_items=options.min_user_items,
                                          min_item_users=options.min_item_users, max_iter=options.kcore_max_iter)
            n_pairs = support.rows_after
            flagged.unpersist()  # k_core's result is materialised on its own
        if n_pairs == 0:
            raise EmptyInputError(f"{lake.silver} (version {silver_version}) yields no {options.mode} training rows")
        stats = _write_gold(spark, lake, pairs, options.mode)
    finally:
        flagged.unpersist()
    return {
        "mode": options.mode,
        "silver_version": silver_version,
        "training_version": tables.version(spark, lake.training),
        "rows": n_pairs,
        "refused_ids": refused,
        "users": stats["users"],
        "items": stats["items"],
        "min_support": None if support is None else {
            "min_user_items": options.min_user_items, "min_item_users": options.min_item_users,
            "rows_before": support.rows_before, "iterations": support.iterations},
        "seconds": round(time.time() - started, 1),
    }


def _write_gold(spark: SparkSession, lake: Lake, pairs: DataFrame, mode: str):
    """Give ``pairs`` their integer ids (new ones appended to the id maps) and replace gold/training with them;
    returns the distinct users and items written."""
    user_map = update_id_map(spark, lake.user_ids, pairs, id_col=C.USER_ID, idx_col=C.USER_IDX)
    item_map = update_id_map(spark, lake.item_ids, pairs, id_col=C.ITEM_ID, idx_col=C.ITEM_IDX)
    gold = (
        pairs.transform(lambda df: ids.attach_idx(df, user_map, id_col=C.USER_ID, idx_col=C.USER_IDX))
        .transform(lambda df: ids.attach_idx(df, item_map, id_col=C.ITEM_ID, idx_col=C.ITEM_IDX))
    )
    value_col = C.WEIGHT if mode == "implicit" else C.RATING
    gold = gold.select(C.USER_ID, C.ITEM_ID, C.USER_IDX, C.ITEM_IDX, value_col, C.N_EVENTS, C.LAST_EVENT_TS)
    tables.overwrite(gold.repartition(C.USER_IDX), lake.training)
    return gold.agg(F.countDistinct(C.USER_ID).alias("users"), F.countDistinct(C.ITEM_ID).alias("items")).first()
