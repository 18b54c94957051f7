"""The nightly flow in one process: ingest -> build_training -> train -> score -> publish, with the gates.

    python -m jobs.nightly --input ratings.csv --format movielens --lake ./data-lake

Each step is the library function its own job calls, so a step behaves here as it does alone (`python -m
jobs.<step>`, spark-submit, or a SparkApplication); this runner shares one Spark session between them. After each
step it runs the data-quality gates (raw and silver after ingest; training, recommendations and snapshot after
their steps; --no-gates skips them); without --input the silver gate runs before build_training, so the silver
version training reads is always checked. It stops at the first failing step or gate with a non-zero exit: what
earlier steps committed stays, and the published snapshot stays the last good one.

Ingest is incremental here by default: files already ingested (same path, size, modification time) are skipped,
so a second night over the same folder adds nothing to bronze, silver or quarantine; --full-reread (or
--no-incremental) reads every file again. Every flag of jobs.ingest applies to the ingest step; the weighting
flags (--event-weights, --weight-scaling) also to build_training.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/nightly.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from flow.nightly import NightlyOptions, nightly
from flow.publish import PublishOptions
from flow.score import DEFAULT_N, ScoreOptions
from flow.train import TrainOptions
from flow.training_table import MODES, TrainingTableOptions
from flow.tune import TuneOptions
from jobs.cli import add_als_args, add_ingest_options_args, als_params, ingest_options_from_args, lake_parser, run_job
from lake.registry import Lake
from transforms import parse


def build_parser():
    parser = lake_parser(__doc__)
    parser.add_argument("--input", default=None,
                        help="rating file(s) or event logs to ingest first (omit to start from silver)")
    parser.add_argument("--format", choices=sorted(parse.FORMATS), default="movielens",
                        help="input format, as for jobs.ingest")
    add_ingest_options_args(parser, incremental=True)
    parser.add_argument("--mode", choices=MODES, default="implicit")
    parser.add_argument("--min-rating", type=float, default=None, help="implicit: ignore ratings below this")
    parser.add_argument("--half-life-days", type=float, default=None,
                        help="implicit: time decay of event weights (jobs.build_training --half-life-days)")
    parser.add_argument("--tune", action="store_true",
                        help="choose ALS params by cross-validation before training (jobs.train --tune)")
    add_als_args(parser)
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="recommendations per user")
    parser.add_argument("--model-version", default=None)
    parser.add_argument("--snapshot-root", default=None,
                        help="folder or s3a:// URI of the snapshots (default: <lake>/snapshots)")
    parser.add_argument("--no-gates", dest="gates", action="store_false",
                        help="skip the data-quality gates (jobs.validate) between steps")
    return parser


def options(args) -> NightlyOptions:
    return NightlyOptions(
        input=args.input, fmt=args.format, ingest=ingest_options_from_args(args),
        training=TrainingTableOptions(
            mode=args.mode, min_rating=args.min_rating, half_life_days=args.half_life_days,
            event_weights=args.event_weights, weight_scaling=args.weight_scaling),
        train=TrainOptions(als=als_params(args), model_version=args.model_version,
                           tune=TuneOptions() if args.tune else None),
        score=ScoreOptions(n=args.n), publish=PublishOptions(snapshot_root=args.snapshot_root), gates=args.gates)


def print_step(name: str, summary: dict) -> None:
    """One line per step with its plain numbers and names (nested parts: see the step's own job)."""
    def shown(value) -> str:
        return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)

    plain = ", ".join(f"{key} {shown(value)}" for key, value in summary.items() if isinstance(value, (str, int, float)))
    print(f"== {name}: {plain}", flush=True)


def run(spark, args) -> dict:
    try:
        results = nightly(spark, Lake(args.lake), options(args), on_step=print_step)
    except Exception as exc:
        print(f"!! nightly stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise
    model_version = results["train"]["model_version"]
    print("nightly done: " + ", ".join(f"{k} {v['step_seconds']} s" for k, v in results.items())
          + f"; model {model_version} published")
    return results


def main(argv=None) -> int:
    return run_job("recsys-nightly", build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
