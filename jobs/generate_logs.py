"""Generate a synthetic interaction log with Spark: clustered tastes, skewed popularity, and injected faults.

    python -m jobs.generate_logs --output ./sample/ratings --users 2000 --items 500 --ratings 100000 --seed 7
    python -m jobs.generate_logs --kind events --output ./incoming/day1 --events 1000000 --start-date 2024-03-01

Every value is a hash of (seed, row id), so the output is the same for a seed whatever the cluster size, and the
job scales like any Spark job (10^8 events is a matter of executors). Users and items fall into --clusters taste
groups: a user interacts mostly with items of their own group, so a recommender has something real to learn.

--kind ratings (default) writes headerless MovieLens-style CSV lines (user,item,rating,unix_ts; ingest with
--format movielens). --fault-rate of the lines are malformed (wrong field count, missing ids, bad or out-of-range
ratings, future timestamps) and --duplicate-rate of them replay an earlier line exactly.

--kind events writes an event log (CSV lines user_id,item_id,event_type,event_ts,value,event_id for --format
events, or JSON lines for --format events-json): Zipf-like user and item popularity, sessions of --session-length
events whose types follow a funnel (view -> click -> add_to_cart -> purchase, some ratings; a session opens with
a view and its deeper steps are on that first item), weekly and daily seasonality over --days days from
--start-date, and --late-rate of the sessions dated 1-3 days before --start-date (late arrivals). Injected faults, each at its own rate: --fault-rate
malformed lines, missing fields, unparseable and future timestamps, unknown event types and bad values;
--duplicate-rate exact replays; --near-duplicate-rate replays of the same event formatted differently (unix
time instead of ISO, upper-case type, padded ids); --bot-users users with --bot-events events each in one day;
--invalid-utf8-lines lines with bytes that are not UTF-8, written as an extra part file through the Hadoop
FileSystem API (Spark's text writer only writes valid strings). EVENT_FAULTS maps each fault to the reason
jobs.ingest must give it.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/generate_logs.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from flow.generate_logs import KINDS, GenerateOptions, generate_logs
from jobs.cli import base_parser, print_json, run_job

D = GenerateOptions()


def build_parser():
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="folder to write the part files into (replaced)")
    parser.add_argument("--kind", choices=KINDS, default=D.kind, help="ratings file or event log")
    parser.add_argument("--users", type=int, default=D.users)
    parser.add_argument("--items", type=int, default=D.items)
    parser.add_argument("--ratings", type=int, default=D.ratings, help="ratings: lines before duplicates are added")
    parser.add_argument("--clusters", type=int, default=D.clusters, help="taste groups of users and items")
    parser.add_argument("--in-cluster", type=float, default=D.in_cluster, help="share of a user's ratings inside their group")
    parser.add_argument("--fault-rate", type=float, default=D.fault_rate, help="share of malformed lines")
    parser.add_argument("--duplicate-rate", type=float, default=D.duplicate_rate, help="share of extra lines replaying another")
    parser.add_argument("--seed", type=int, default=D.seed)
    parser.add_argument("--files", type=int, default=D.files, help="number of part files")
    events = parser.add_argument_group("--kind events")
    events.add_argument("--events", type=int, default=D.events, help="events before replays and bots are added")
    events.add_argument("--output-format", choices=("csv", "json"), default=D.output_format,
                        help="csv: ingest with --format events; json: --format events-json")
    events.add_argument("--start-date", default=D.start_date, help="first day of the log (UTC)")
    events.add_argument("--days", type=int, default=D.days, help="days the log spans")
    events.add_argument("--session-length", type=int, default=D.session_length, help="events per session")
    events.add_argument("--user-zipf", type=float, default=D.user_zipf, help="Zipf exponent of user activity")
    events.add_argument("--item-zipf", type=float, default=D.item_zipf, help="Zipf exponent of item popularity")
    events.add_argument("--late-rate", type=float, default=D.late_rate, help="share of sessions dated 1-3 days early")
    events.add_argument("--near-duplicate-rate", type=float, default=D.near_duplicate_rate,
                        help="share of extra lines replaying an event in another formatting")
    events.add_argument("--bot-users", type=int, default=D.bot_users, help="bot-like users added")
    events.add_argument("--bot-events", type=int, default=D.bot_events, help="events of each bot, all on one day")
    events.add_argument("--invalid-utf8-lines", type=int, default=D.invalid_utf8_lines, help="lines with non-UTF-8 bytes")
    return parser


def run(spark, args) -> dict:
    output = args.output if "://" in args.output or args.output.startswith("file:") else Path(args.output).resolve().as_uri()
    options = GenerateOptions(**{name: getattr(args, name) for name in GenerateOptions.field_names()})
    summary = {**generate_logs(spark, output, options), "output": args.output}
    if options.kind == "events":
        print(f"generate_logs: {summary['lines']:,} {options.output_format} event lines ({options.users:,} users x "
              f"{options.items:,} items, {options.days} days from {options.start_date}, seed {options.seed}) -> "
              f"{args.output}")
    else:
        print(f"generate_logs: {summary['lines']:,} lines ({options.users:,} users x {options.items:,} items, "
              f"seed {options.seed}) -> {args.output}")
    return print_json(summary)


def main(argv=None) -> int:
    return run_job("recsys-generate-logs", build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
