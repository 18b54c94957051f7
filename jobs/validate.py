"""Data-quality gate: check one stage's data with great-expectations suites and drift checks; exit 1 on failure.

    python -m jobs.validate --lake ./lake --stage raw [--ingest-run-id R]         # after ingest (default: last run)
    python -m jobs.validate --lake ./lake --stage raw --input ratings.csv --format movielens   # before ingest
    python -m jobs.validate --lake ./lake --stage silver
    python -m jobs.validate --lake ./lake --stage training
    python -m jobs.validate --lake ./lake --stage recommendations [--model-version V] [--n 100]
    python -m jobs.validate --lake ./lake --stage snapshot [--snapshot-root R] [--model-version V]

Stages and what they read:
raw: after ingest, the run's own accounting (meta/ingest_runs, from its commits' metrics) and the lines it
  quarantined, nothing re-read; before ingest (--input/--format, plus --ingest-flags), the files read and parsed
  exactly as that ingest will, which costs one extra parse of the input;
silver: silver/interactions; training: gold/training and the id maps silver/user_ids, silver/item_ids;
recommendations: gold/user_recommendations and gold/popular_items of one model version (default: the latest
  trained) and the training table it was trained on; snapshot: a published snapshot folder (default: LATEST).

Each run prints a readable report (every failed check, its observed value and a few bad rows), writes it as JSON
under <reports-dir>/results/<stage>/, appends a row to meta/validation_runs and renders great-expectations
Data Docs (<reports-dir>/data_docs/index.html; <reports-dir> defaults to <lake>/validation). Drift checks
compare each table's profile with the previous successful run of the same stage.

What a failed gate leaves behind: the steps after it do not run, so gold tables and the served snapshot stay the
last good ones. A failed raw or silver gate for an ingest run restores silver to the version before that run (if
nothing committed since; bronze and quarantine keep the rows). A failed snapshot gate points LATEST back at the
last snapshot that passed.

The gates themselves live in validation/ (validation.gates.run_gate, gates_after); this job is their command line.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/validate.py: import the project from its root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from flow.ingest import IngestOptions
from jobs.cli import (add_ingest_options_args, add_lake_arg, base_parser, ingest_options_from_args,
                      spark_from_args)
from lake.registry import Lake
from transforms import parse
from validation import STAGES
from validation.gates import LATEST_RUN, GateFailed, GateOptions, run_gate


def add_gate_args(parser: argparse.ArgumentParser) -> None:
    gates = parser.add_argument_group("data-quality gates")
    gates.add_argument("--drift-thresholds", default=None, metavar="JSON",
                       help='drift limits, e.g. \'{"rows_ratio": [0.8, 1.5], "silver": {"mean_change": 0.1}}\' '
                            "(keys: see validation/drift.py)")
    gates.add_argument("--no-drift", action="store_true", help="skip drift checks (e.g. for a first backfill)")
    gates.add_argument("--max-quarantine-rate", type=float, default=GateOptions.max_quarantine_rate,
                       help="raw: largest share of input lines that may be quarantined")
    gates.add_argument("--rating-scale", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                       help="valid ratings (default: the input format's scale; all formats' when unknown)")
    gates.add_argument("--reports-dir", default=None, help="JSON reports and Data Docs (default: <lake>/validation)")
    gates.add_argument("--docs-dir", default=None, help="Data Docs folder (default: <reports-dir>/data_docs)")
    gates.add_argument("--examples", type=int, default=GateOptions.examples, help="bad rows shown per failed check")


def gate_options(args: argparse.Namespace) -> GateOptions:
    return GateOptions(drift=not args.no_drift, drift_thresholds=args.drift_thresholds,
                       max_quarantine_rate=args.max_quarantine_rate,
                       rating_scale=tuple(args.rating_scale) if args.rating_scale else None,
                       reports_dir=args.reports_dir, docs_dir=args.docs_dir, examples=args.examples)


def build_parser():
    parser = base_parser(__doc__.split("\n\n")[0])
    add_lake_arg(parser)
    parser.add_argument("--stage", required=True, choices=STAGES)
    parser.add_argument("--ingest-run-id", default=None,
                        help=f"raw, silver: the ingest run to check ('{LATEST_RUN}': the newest); on failure its "
                             "rows are taken back out of silver (raw: the default is the newest run)")
    parser.add_argument("--input", default=None, help="raw before ingest: the file(s) ingest will read")
    parser.add_argument("--format", default=None, choices=sorted(parse.FORMATS),
                        help="raw: their format; silver, training: sets the rating scale")
    parser.add_argument("--ingest-flags", default=None, metavar="FLAGS",
                        help='raw, silver: ingest\'s other flags, as one string (e.g. "--incremental --event-types '
                             'view,click"): the raw gate reads and parses as that ingest will')
    parser.add_argument("--table-version", type=int, default=None,
                        help="silver, training: the Delta version to check (default: the latest)")
    parser.add_argument("--model-version", default=None,
                        help="recommendations: default the latest trained; snapshot: default LATEST")
    parser.add_argument("--n", type=int, default=None,
                        help="recommendations: list length (default: the largest rank); snapshot: the manifest's")
    parser.add_argument("--snapshot-root", default=None, help="snapshot: default <lake>/snapshots")
    add_gate_args(parser)
    return parser


def ingest_options(args: argparse.Namespace) -> IngestOptions | None:
    """The options of the ingest run --input/--format/--ingest-flags describe (None without --input)."""
    if args.ingest_flags and not (args.input and args.format):
        raise SystemExit("--ingest-flags needs --input and --format too (the ingest command line they belong to)")
    if not args.input:
        return None
    if not args.format:
        raise SystemExit("--input needs --format too (as for jobs.ingest)")
    parser = argparse.ArgumentParser(prog="validate --ingest-flags", add_help=False)
    add_ingest_options_args(parser)
    return ingest_options_from_args(parser.parse_args(shlex.split(args.ingest_flags or "")))


def run(spark, args) -> dict:
    result = run_gate(spark, args.stage, Lake(args.lake), options=gate_options(args), fmt=args.format,
                      ingest_options=ingest_options(args), input=args.input, ingest_run_id=args.ingest_run_id,
                      model_version=args.model_version, n=args.n, snapshot_root=args.snapshot_root,
                      table_version=args.table_version)
    return result.to_json()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    spark = spark_from_args(f"recsys-validate-{args.stage}", args)
    try:
        run(spark, args)
    except GateFailed as failed:
        print(f"validate: gate {args.stage} failed: {'; '.join(failed.result.failed_names())}", file=sys.stderr)
        return 1
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
