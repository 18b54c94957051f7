"""Build the gold training table from silver events: stable integer ids, one row per (user, item).

    python -m jobs.build_training --lake ./lake --mode implicit [--half-life-days 30] [--min-user-items 5]

implicit: weight = sum of event-type weights (optionally time-decayed), for the weighted ALS of Hu, Koren and
Volinsky; explicit: the latest rating of each (user, item). An optional minimum-support filter (k-core:
--min-user-items, --min-item-users) is applied to the (user, item) rows before ids are assigned, repeated until
every remaining user and item meets it, so the ids, the training table and the model all see the same rows.
New users and items get new integer ids appended to silver/user_ids and silver/item_ids; ids that exist never
change (a user dropped by the filter keeps an id it already had). gold/training is replaced atomically.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/build_training.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from pyspark.sql import functions as F

from jobs import tables
from jobs.cli import Lake, add_lake_arg, base_parser, spark_from_args
from transforms import columns as C
from transforms import ids, kcore, training

MODES = ("implicit", "explicit")


class EmptyInputError(RuntimeError):
    """There is nothing to build from; the message names the table."""


def build_parser():
    parser = base_parser(__doc__.split("\n\n")[0])
    add_lake_arg(parser)
    parser.add_argument("--mode", choices=MODES, default="implicit",
                        help="implicit: confidence weights from events; explicit: latest rating per (user, item)")
    parser.add_argument("--event-weights", default=None, metavar="JSON",
                        help='implicit: weight per event type, null = use the event value, e.g. '
                             f"'{json.dumps(training.DEFAULT_EVENT_WEIGHTS)}' (the default)")
    parser.add_argument("--half-life-days", type=float, default=None,
                        help="implicit: halve an event's weight every this many days before the newest event")
    parser.add_argument("--min-rating", type=float, default=None,
                        help="implicit: ignore rating events below this value (low ratings are not positive feedback)")
    parser.add_argument("--as-of", default=None, metavar="TIMESTAMP",
                        help="implicit with --half-life-days: decay relative to this time (default: the newest event)")
    support = parser.add_argument_group("minimum support (k-core)")
    support.add_argument("--min-user-items", type=int, default=1, help="keep users with at least this many items")
    support.add_argument("--min-item-users", type=int, default=1, help="keep items with at least this many users")
    support.add_argument("--kcore-max-iter", type=int, default=20,
                         help="rounds of the filter before giving up (it fails rather than return a partial result)")
    return parser


def update_id_map(spark, lake: Lake, pairs, *, id_col: str, idx_col: str, name: str):
    """Add ids not yet mapped to silver/<name>; return the full map.

    The new rows go in with an insert-only MERGE on the id, not a blind append: MERGE reads the whole map, so a
    second build_training committing new ids at the same time makes this commit fail with a concurrent-append
    conflict instead of both handing out the same indices (delta-io/delta#550). No new ids, no commit.
    """
    path = lake.table("silver", name)
    existing = tables.read_if_exists(spark, path)
    fresh = ids.new_id_rows(existing, pairs, id_col=id_col, idx_col=idx_col)
    if existing is None or not fresh.isEmpty():
        tables.insert_new(spark, fresh, path, key=id_col)
    return tables.read(spark, path)


def run(spark, args) -> dict:
    started = time.time()
    lake = Lake(args.lake)
    silver_path = lake.table("silver", "interactions")
    if not tables.exists(spark, silver_path):
        raise EmptyInputError(f"no silver events at {silver_path}: run jobs.ingest first")
    silver_version = tables.version(spark, silver_path)
    events = tables.read(spark, silver_path, version=silver_version)

    if args.mode == "implicit":
        weights = json.loads(args.event_weights) if args.event_weights else None
        pairs = training.implicit_training(events, event_weights=weights, half_life_days=args.half_life_days,
                                           as_of_ts=args.as_of, min_rating=args.min_rating)
    else:
        pairs = training.explicit_training(events)
    support = None
    if args.min_user_items > 1 or args.min_item_users > 1:
        pairs, support = kcore.k_core(pairs, min_user_items=args.min_user_items, min_item_users=args.min_item_users,
                                      max_iter=args.kcore_max_iter)
    else:
        pairs = pairs.cache()
    try:
        n_pairs = support.rows_after if support else pairs.count()
        if n_pairs == 0:
            raise EmptyInputError(f"{silver_path} (version {silver_version}) yields no {args.mode} training rows")
        user_map = update_id_map(spark, lake, pairs, id_col=C.USER_ID, idx_col=C.USER_IDX, name="user_ids")
        item_map = update_id_map(spark, lake, pairs, id_col=C.ITEM_ID, idx_col=C.ITEM_IDX, name="item_ids")
        gold = (
            pairs.transform(lambda df: ids.attach_idx(df, user_map, id_col=C.USER_ID, idx_col=C.USER_IDX))
            .transform(lambda df: ids.attach_idx(df, item_map, id_col=C.ITEM_ID, idx_col=C.ITEM_IDX))
        )
        value_col = C.WEIGHT if args.mode == "implicit" else C.RATING
        gold = gold.select(C.USER_ID, C.ITEM_ID, C.USER_IDX, C.ITEM_IDX, value_col, C.N_EVENTS, C.LAST_EVENT_TS)
        gold_path = lake.table("gold", "training")
        tables.overwrite(gold.repartition(C.USER_IDX), gold_path)
        stats = gold.agg(F.countDistinct(C.USER_ID).alias("users"), F.countDistinct(C.ITEM_ID).alias("items")).first()
    finally:
        pairs.unpersist()

    summary = {
        "mode": args.mode,
        "silver_version": silver_version,
        "training_version": tables.version(spark, gold_path),
        "rows": n_pairs,
        "users": stats["users"],
        "items": stats["items"],
        "min_support": None if support is None else {
            "min_user_items": args.min_user_items, "min_item_users": args.min_item_users,
            "rows_before": support.rows_before, "iterations": support.iterations},
        "seconds": round(time.time() - started, 1),
    }
    print(f"build_training ({summary['mode']})  silver v{silver_version} -> gold/training "
          f"v{summary['training_version']}  {summary['seconds']} s")
    for key in ("rows", "users", "items"):
        print(f"  {key:<8} {summary[key]:>12,}")
    if support is not None:
        print(f"  k-core (users >= {args.min_user_items} items, items >= {args.min_item_users} users): "
              f"{support.rows_before:,} -> {support.rows_after:,} rows in {support.iterations} round(s)")
    print(json.dumps(summary), file=sys.stderr)
    return summary


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    spark = spark_from_args("recsys-build-training", args)
    try:
        run(spark, args)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
