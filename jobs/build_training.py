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
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/build_training.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from flow.training_table import MODES, TrainingTableOptions, build_training
from jobs.cli import add_weight_scaling_arg, event_weights_arg, lake_parser, print_json, run_job
from lake.registry import Lake
from transforms import training


def build_parser():
    parser = lake_parser(__doc__)
    parser.add_argument("--mode", choices=MODES, default=TrainingTableOptions.mode,
                        help="implicit: confidence weights from events; explicit: latest rating per (user, item)")
    parser.add_argument("--event-weights", type=event_weights_arg, default=None, metavar="JSON",
                        help='implicit: weight per event type, null = use the event value, e.g. '
                             f"'{json.dumps(training.DEFAULT_EVENT_WEIGHTS)}' (the default)")
    add_weight_scaling_arg(parser)
    parser.add_argument("--half-life-days", type=float, default=TrainingTableOptions.half_life_days,
                        help="implicit: halve an event's weight every this many days before the newest event")
    parser.add_argument("--min-rating", type=float, default=TrainingTableOptions.min_rating,
                        help="implicit: ignore rating events below this value (low ratings are not positive feedback)")
    parser.add_argument("--as-of", default=TrainingTableOptions.as_of, metavar="TIMESTAMP",
                        help="implicit with --half-life-days: decay relative to this time (default: the newest event)")
    support = parser.add_argument_group("minimum support (k-core)")
    support.add_argument("--min-user-items", type=int, help="keep users with at least this many items",
                         default=TrainingTableOptions.min_user_items)
    support.add_argument("--min-item-users", type=int, help="keep items with at least this many users",
                         default=TrainingTableOptions.min_item_users)
    support.add_argument("--kcore-max-iter", type=int, default=TrainingTableOptions.kcore_max_iter,
                         help="rounds of the filter before giving up (it fails rather than return a partial result)")
    return parser


def main(argv=None) -> int:
    return run_job("recsys-build-training", build_parser, run, argv)


def options(args) -> TrainingTableOptions:
    return TrainingTableOptions(
        mode=args.mode, event_weights=args.event_weights, weight_scaling=args.weight_scaling,
        half_life_days=args.half_life_days, min_rating=args.min_rating, as_of=args.as_of,
        min_user_items=args.min_user_items, min_item_users=args.min_item_users, kcore_max_iter=args.kcore_max_iter)


def run(spark, args) -> dict:
    summary = build_training(spark, Lake(args.lake), options(args))
    print(f"build_training ({summary['mode']})  silver v{summary['silver_version']} -> gold/training "
          f"v{summary['training_version']}  {summary['seconds']} s")
    for key in ("rows", "users", "items"):
        print(f"  {key:<8} {summary[key]:>12,}")
    refused = summary["refused_ids"]
    if refused["pairs"]:
        print(f"  left out {refused['pairs']:,} (user, item) pair(s) from {refused['events']:,} silver event(s) whose "
              "ids break the id contract (serving.ids)")
    support = summary["min_support"]
    if support is not None:
        print(f"  k-core (users >= {support['min_user_items']} items, items >= {support['min_item_users']} users): "
              f"{support['rows_before']:,} -> {summary['rows']:,} rows in {support['iterations']} round(s)")
    return print_json(summary)


if __name__ == "__main__":
    sys.exit(main())
