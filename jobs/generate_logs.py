"""Generate a synthetic ratings log with Spark: clustered tastes, skewed popularity, and injected faults.

    python -m jobs.generate_logs --output ./sample/ratings --users 2000 --items 500 --ratings 100000 --seed 7

Writes headerless MovieLens-style CSV lines (user,item,rating,unix_ts; ingest with --format movielens) into
--output as part files. Every value is a hash of (seed, row id), so the output is the same for a seed whatever
the cluster size. Users and items fall into --clusters taste groups: a user rates mostly items of their own
group, and rates them high, so a recommender has something real to learn. --fault-rate of the lines are
malformed (wrong field count, missing ids, bad or out-of-range ratings, future timestamps) and --duplicate-rate
of them replay an earlier line exactly; ingest must quarantine the first and drop the second.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/generate_logs.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from pyspark.sql import Column
from pyspark.sql import functions as F

from jobs.cli import base_parser, spark_from_args

START_TS = 1_600_000_000  # 2020-09-13
SPAN_S = 365 * 86_400
FAULT_KINDS = ("wrong_field_count", "missing_user_id", "bad_rating", "rating_out_of_range", "future_timestamp")


def build_parser():
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="folder to write the part files into (replaced)")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--ratings", type=int, default=100_000, help="lines before duplicates are added")
    parser.add_argument("--clusters", type=int, default=8, help="taste groups of users and items")
    parser.add_argument("--in-cluster", type=float, default=0.85, help="share of a user's ratings inside their group")
    parser.add_argument("--fault-rate", type=float, default=0.01, help="share of malformed lines")
    parser.add_argument("--duplicate-rate", type=float, default=0.01, help="share of extra lines replaying another")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--files", type=int, default=4, help="number of part files")
    return parser


def uniform(seed: int, salt: int, row: Column) -> Column:
    """A deterministic uniform [0, 1) from (seed, salt, row)."""
    return F.pmod(F.xxhash64(F.lit(seed), F.lit(salt), row), F.lit(1 << 40)).cast("double") / float(1 << 40)


def rating_lines(spark, *, users: int, items: int, ratings: int, clusters: int, in_cluster: float,
                 fault_rate: float, duplicate_rate: float, seed: int, files: int):
    """A DataFrame of one string column ``value``: the lines of the log."""
    for name, value in (("users", users), ("items", items), ("ratings", ratings), ("clusters", clusters)):
        if value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    if items < clusters:
        raise ValueError(f"--items ({items}) must be >= --clusters ({clusters})")
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


def run(spark, args) -> dict:
    lines = rating_lines(spark, users=args.users, items=args.items, ratings=args.ratings, clusters=args.clusters,
                         in_cluster=args.in_cluster, fault_rate=args.fault_rate,
                         duplicate_rate=args.duplicate_rate, seed=args.seed, files=args.files)
    output = args.output if "://" in args.output or args.output.startswith("file:") else Path(args.output).resolve().as_uri()
    lines.write.mode("overwrite").text(output)
    summary = {"output": args.output, "lines": args.ratings + int(args.ratings * args.duplicate_rate),
               "users": args.users, "items": args.items, "seed": args.seed}
    print(f"generate_logs: {summary['lines']:,} lines ({args.users:,} users x {args.items:,} items, "
          f"seed {args.seed}) -> {args.output}")
    print(json.dumps(summary), file=sys.stderr)
    return summary


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    spark = spark_from_args("recsys-generate-logs", args)
    try:
        run(spark, args)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
