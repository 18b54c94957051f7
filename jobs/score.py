"""Score a trained model: top-N per user with seen items excluded, similar items, and the popular fallback.

    python -m jobs.score --lake ./lake [--model-version V] --n 100 [--similar als|cooccurrence|none]

Writes, each partitioned by model_version:
  gold/user_recommendations  (model_version, user_id, rank, item_id, score)   exact top-N (models.topn)
  gold/similar_items         (model_version, item_id, rank, similar_item_id, score)   unless --similar none
  gold/popular_items         (model_version, rank, item_id, score)   distinct users per item, all history
  gold/popular_items_recent  (model_version, rank, item_id, score)   the same over the last --recent-days
A re-run for the same model version replaces that version's rows of each table in one Delta commit
(replaceWhere): readers see the old rows or the new, never a mix. With --similar none, the version's similar
items are removed. "Seen" means every (user, item) in the training table version the model was trained on.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/score.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from flow.score import DEFAULT_N, SIMILAR_METHODS, ScoreOptions, score
from jobs.cli import lake_parser, print_json, run_job
from lake.registry import Lake
from models.similar import COOCCURRENCE_MEASURES


def build_parser():
    parser = lake_parser(__doc__)
    parser.add_argument("--model-version", default=None, help="model to score (default: the latest trained)")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="recommendations per user")
    parser.add_argument("--popular-n", type=int, default=None, help="length of the popular fallback (default: --n)")
    parser.add_argument("--recent-days", type=float, default=ScoreOptions.recent_days,
                        help="window of gold/popular_items_recent, in days before the newest event (0: skip it)")
    similar = parser.add_argument_group("similar items")
    similar.add_argument("--similar", choices=SIMILAR_METHODS, default=ScoreOptions.similar,
                         help="als: cosine over item factors; cooccurrence: users in common (Spark); none: skip")
    similar.add_argument("--similar-n", type=int, default=None, help="neighbours per item (default: --n)")
    similar.add_argument("--cooccurrence-measure", choices=COOCCURRENCE_MEASURES, default=ScoreOptions.cooccurrence_measure,
                         help="cooccurrence: raw count of users in common, or normalised by cosine or Jaccard")
    similar.add_argument("--max-items-per-user", type=int, default=ScoreOptions.max_items_per_user,
                         help="cooccurrence: most recent items kept per user (bounds the self-join)")
    similar.add_argument("--min-cooccurrence", type=int, default=ScoreOptions.min_cooccurrence,
                         help="cooccurrence: drop pairs with fewer users in common")
    scoring = parser.add_argument_group("scoring kernel and memory")
    scoring.add_argument("--block-mb", type=int, default=ScoreOptions.block_bytes >> 20,
                         help="bound on one block's score matrix (users x items x 4 bytes) in a Python worker")
    scoring.add_argument("--item-budget-mb", type=int, default=ScoreOptions.item_budget_bytes >> 20,
                         help="item factors up to this size are broadcast whole; larger ones are scored in chunks")
    return parser


def main(argv=None) -> int:
    return run_job("recsys-score", build_parser, run, argv)


def options(args) -> ScoreOptions:
    return ScoreOptions(
        model_version=args.model_version, n=args.n, popular_n=args.popular_n, recent_days=args.recent_days,
        similar=args.similar, similar_n=args.similar_n, cooccurrence_measure=args.cooccurrence_measure,
        max_items_per_user=args.max_items_per_user, min_cooccurrence=args.min_cooccurrence,
        block_bytes=args.block_mb << 20, item_budget_bytes=args.item_budget_mb << 20)


def run(spark, args) -> dict:
    summary = score(spark, Lake(args.lake), options(args))
    similar_note = (f", {summary['similar_rows']:,} similar-item rows ({summary['similar']})"
                    if summary["similar"] != "none" else "")
    print(f"score {summary['model_version']}  top-{summary['n']} for {summary['users']:,} users "
          f"({summary['rows']:,} rows){similar_note}, {summary['popular_items']} popular items  {summary['seconds']} s")
    return print_json(summary)


if __name__ == "__main__":
    sys.exit(main())
