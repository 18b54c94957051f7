"""The nightly flow in one process: ingest -> build_training -> train -> score -> publish.

    python -m jobs.nightly --input ratings.csv --format movielens --lake ./lake

Each step is the same code, fed the same flags, as its own job (`python -m jobs.<step>`, spark-submit, or a
SparkApplication); this runner only shares one Spark session between them. Between steps it runs the
data-quality gates of jobs.validate (raw before ingest; silver, training, recommendations and snapshot after
their steps; --no-gates skips them). It stops at the first failing step or gate with a non-zero exit: what
earlier steps committed stays, and the published snapshot stays the last good one.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/nightly.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from jobs import build_training, ingest, publish, score, train, validate
from jobs.cli import add_lake_arg, base_parser, spark_from_args
from transforms import parse


def build_parser():
    parser = base_parser(__doc__.split("\n\n")[0])
    add_lake_arg(parser)
    parser.add_argument("--input", default=None,
                        help="rating file(s) or event logs to ingest first (omit to start from silver)")
    parser.add_argument("--format", choices=sorted(parse.FORMATS), default="movielens",
                        help="input format, as for jobs.ingest")
    parser.add_argument("--incremental", action="store_true",
                        help="ingest only files not ingested before (jobs.ingest --incremental)")
    parser.add_argument("--mode", choices=build_training.MODES, default="implicit")
    parser.add_argument("--min-rating", type=float, default=None, help="implicit: ignore ratings below this")
    parser.add_argument("--event-weights", default=None, metavar="JSON",
                        help="implicit: weight per event type (jobs.build_training --event-weights)")
    parser.add_argument("--half-life-days", type=float, default=None,
                        help="implicit: time decay of event weights (jobs.build_training --half-life-days)")
    parser.add_argument("--tune", action="store_true",
                        help="choose ALS params by cross-validation before training (jobs.train --tune)")
    train.add_als_args(parser)
    parser.add_argument("--n", type=int, default=score.DEFAULT_N, help="recommendations per user")
    parser.add_argument("--model-version", default=None)
    parser.add_argument("--snapshot-root", default=None, help="default: <lake>/snapshots")
    parser.add_argument("--no-gates", dest="gates", action="store_false",
                        help="skip the data-quality gates (jobs.validate) between steps")
    return parser


def step_args(args: argparse.Namespace) -> list[tuple[str, object, list[str]]]:
    """(name, module, argv) per step: the flags each job would get on its own command line."""
    steps = []
    lake = ["--lake", args.lake]
    if args.input:
        steps.append(("ingest", ingest, lake + ["--input", args.input, "--format", args.format]
                      + (["--incremental"] if args.incremental else [])))
    bt = lake + ["--mode", args.mode]
    if args.min_rating is not None:
        bt += ["--min-rating", str(args.min_rating)]
    if args.event_weights:
        bt += ["--event-weights", args.event_weights]
    if args.half_life_days is not None:
        bt += ["--half-life-days", str(args.half_life_days)]
    steps.append(("build_training", build_training, bt))
    tr = lake + ["--rank", str(args.rank), "--reg-param", str(args.reg_param), "--alpha", str(args.alpha),
                 "--max-iter", str(args.max_iter), "--seed", str(args.seed)]
    if args.num_blocks:
        tr += ["--num-blocks", str(args.num_blocks)]
    if args.model_version:
        tr += ["--model-version", args.model_version]
    if args.tune:
        tr += ["--tune"]
    steps.append(("train", train, tr))
    steps.append(("score", score, lake + ["--n", str(args.n)]))
    pub = lake + (["--snapshot-root", args.snapshot_root] if args.snapshot_root else [])
    steps.append(("publish", publish, pub))
    return steps


def run(spark, args) -> dict:
    results = {}
    model_version = args.model_version
    for name, module, argv in step_args(args):
        if model_version and name in ("score", "publish"):
            argv = argv + ["--model-version", model_version]
        started = time.time()
        print(f"== {name}: {' '.join(argv)}", flush=True)
        step = module.build_parser().parse_args(argv)
        gate_kwargs = dict(step_argv=argv, lake=args.lake, input=args.input, fmt=args.format,
                           model_version=model_version, n=args.n, snapshot_root=args.snapshot_root)
        try:
            if args.gates:
                validate.gate_step(spark, "before", name, **gate_kwargs)
            results[name] = module.run(spark, step)
            if args.gates:
                if name == "train":
                    gate_kwargs["model_version"] = results[name]["model_version"]
                validate.gate_step(spark, "after", name, step_result=results[name], **gate_kwargs)
        except Exception as exc:
            print(f"!! nightly stopped at {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            raise
        results[name]["step_seconds"] = round(time.time() - started, 1)
        if name == "train":
            model_version = results[name]["model_version"]
    print("nightly done: " + ", ".join(f"{k} {v['step_seconds']} s" for k, v in results.items())
          + f"; model {model_version} published")
    return results


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    spark = spark_from_args("recsys-nightly", args)
    try:
        run(spark, args)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
