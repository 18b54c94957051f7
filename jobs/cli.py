"""Flags every job shares, and the small helpers that turn them into a session and typed options (lake
addresses: lake.registry)."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from flow.ingest import DEFAULT_BOT_MAX_EVENTS_PER_DAY, PARTITION_GRAINS, IngestOptions
from flow.input_checks import DEFAULT_MAX_REJECTED_SHARE
from flow.tune import SEARCHES, TuneOptions
from jobs.spark_session import build_spark
from models import speed
from models.als import AlsParams
from models.tuning import DEFAULT_TUNE_TEST_FOLDS
from transforms import parse, training


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where they say nothing: on-off flags, None, or a help text that already names one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)) or action.default is None
                or "default" in text):
            return text
        return super()._get_help_string(action)


# the flags whose values are storage locations: one on object storage gives the session the S3A connector
URI_ARGS = ("lake", "input", "snapshot_root")


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    spark = parser.add_argument_group("spark")
    spark.add_argument("--master", default=None,
                       help="Spark master (local[*] when not under spark-submit; ignored under spark-submit)")
    spark.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                       help="any Spark setting, overrides the defaults; repeat the flag for more")
    spark.add_argument("--jars-dir", default=None,
                       help="folder of jars (e.g. from `make delta-jars`) used instead of fetching Delta with Ivy")
    spark.add_argument("--log-level", default="WARN", help="Spark log level")
    spark.add_argument("--reference-path", action="store_true",
                       help="run without any speed trick (models.speed; same as RECSYS_REFERENCE_PATH=1): Spark "
                            "ALS on the system BLAS, scoring inputs read through Spark")
    return parser


def parse_conf(pairs: list[str]) -> dict[str, str]:
    conf = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--conf expects KEY=VALUE, got {pair!r}")
        conf[key.strip()] = value
    return conf


def comma_list(text: str | None) -> tuple[str, ...] | None:
    """``"a, b,,c"`` -> ``("a", "b", "c")``; None or an empty list -> None (the default applies)."""
    items = tuple(t.strip() for t in (text or "").split(",") if t.strip())
    return items or None


def spark_from_args(app_name: str, args: argparse.Namespace):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if args.reference_path:
        speed.use_reference_path()
    uris = tuple(getattr(args, name, None) for name in URI_ARGS)
    return build_spark(app_name, master=args.master, conf=parse_conf(args.conf), jars_dir=args.jars_dir,
                       log_level=args.log_level, uris=uris)


def add_lake_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lake", required=True, help="root folder (or URI) of the Delta lake")


def event_weights_arg(text: str) -> dict[str, float | None]:
    """--event-weights: a JSON object of event type -> weight (a number, or null for "the event's value")."""
    try:
        weights = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error}): {text!r}") from None
    if not isinstance(weights, dict) or not weights or not all(
            w is None or (isinstance(w, (int, float)) and not isinstance(w, bool)) for w in weights.values()):
        raise argparse.ArgumentTypeError(
            f"expected a non-empty JSON object of event type -> number or null, got {text!r}")
    return {str(k): None if w is None else float(w) for k, w in weights.items()}


def add_weighting_args(parser: argparse.ArgumentParser) -> None:
    """The event and weighting flags every job that reads input takes (jobs.ingest, jobs.nightly, jobs.evaluate;
    jobs.validate --ingest-flags): known event types, the top of the rating scale, each type's implicit weight
    and the scaling of a pair's summed weight. ``args.event_types`` is a tuple or None, ``args.event_weights`` a
    dict or None (transforms.training's defaults)."""
    group = parser.add_argument_group("event types and weights")
    group.add_argument("--event-types", type=comma_list, default=None,
                       help=f"event logs: comma-separated known event types (default: "
                            f"{','.join(parse.DEFAULT_EVENT_TYPES)}); others are quarantined as unknown_event_type")
    group.add_argument("--rating-max", type=float, default=None,
                       help="highest valid rating (default: the format's); higher ones: rating_out_of_range")
    group.add_argument("--event-weights", type=event_weights_arg, default=None, metavar="JSON",
                       help="implicit: weight per event type, null = the event's value (ratings, the pairs formats' "
                            f"weight); default '{json.dumps(training.DEFAULT_EVENT_WEIGHTS)}'. Ingest stores values as "
                            "read and reports those a fixed weight ignores")
    add_weight_scaling_arg(group)


def add_weight_scaling_arg(parser) -> None:
    """--weight-scaling (linear or log1p), for the jobs that build training pairs (and ingest, which passes it on
    to its gates)."""
    parser.add_argument("--weight-scaling", choices=training.WEIGHT_SCALINGS, default="linear",
                        help="implicit: a (user, item) pair's summed weight w enters ALS (confidence 1 + alpha * it) "
                             "as w (linear) or log(1 + w) (log1p: for play or purchase counts); applied where the "
                             "training pairs are built (build_training, nightly, evaluate); ingest stores weights "
                             "unscaled")


def add_incremental_arg(parser: argparse.ArgumentParser, *, default: bool) -> None:
    """--incremental / --no-incremental (alias --full-reread), on by ``default``: skip the files already in
    meta/ingested_files with the same path, size and modification time."""
    parser.add_argument("--incremental", action=argparse.BooleanOptionalAction, default=default,
                        help="read only files not yet in meta/ingested_files (same path, size and modification "
                             f"time); --no-incremental or --full-reread reads every file (default: "
                             f"{'on' if default else 'off'})")
    parser.add_argument("--full-reread", dest="incremental", action="store_false",
                        help="same as --no-incremental: read every matched file again (silver gains nothing; bronze "
                             "and quarantine record the rows again)")


def add_rejection_arg(parser: argparse.ArgumentParser) -> None:
    """--max-rejected-share: a run rejecting more of its input rows (headers aside) fails (flow.input_checks)."""
    parser.add_argument("--max-rejected-share", type=float, default=DEFAULT_MAX_REJECTED_SHARE, metavar="SHARE",
                        help="fail, with the top reasons and an example row of each, when more than this share "
                             "(0..1) of the input rows is rejected; 1 never fails")


def add_ingest_options_args(parser: argparse.ArgumentParser, *, incremental: bool = False) -> None:
    """The flags of flow.ingest.IngestOptions (jobs.ingest; jobs.validate --ingest-flags), --incremental on by
    ``incremental``; ``ingest_options_from_args`` turns them into IngestOptions."""
    parser.add_argument("--run-id", default=None, help="ingest run id (default: a new UUID)")
    add_incremental_arg(parser, default=incremental)
    parser.add_argument("--partition-grain", choices=sorted(PARTITION_GRAINS), default=None,
                        help="silver partitions: date (event_date) or month (event_month); default: the existing "
                             "table's, else date for event logs and month for rating files and pairs")
    parser.add_argument("--rating-min", type=float, default=None, help="lowest valid rating (default: the format's)")
    add_weighting_args(parser)
    add_rejection_arg(parser)
    events = parser.add_argument_group("event logs")
    events.add_argument("--columns", default=None,
                        help=f"CSV field order (default: {','.join(parse.EVENT_FIELDS)}); other names are ignored")
    events.add_argument("--max-value", type=float, default=None,
                        help="largest value of a non-rating event (quantity, dwell s) or pairs weight; default 1e6")
    parser.add_argument("--bot-max-events-per-day", type=int, default=None,
                        help="quarantine (bot_suspected) all events of a user-day with more good events than this "
                             f"in one run; 0 = off (default: {DEFAULT_BOT_MAX_EVENTS_PER_DAY:,} for event logs, off "
                             "for rating files)")
    parser.add_argument("--future-tolerance-hours", type=float, default=IngestOptions.future_tolerance_hours,
                        help="events later than now plus this are quarantined as future_timestamp")
    parser.add_argument("--min-event-date", default=IngestOptions.min_event_date, metavar="YYYY-MM-DD",
                        help="events before this day (UTC) are quarantined as timestamp_before_floor (default: "
                             f"{parse.DEFAULT_MIN_EVENT_DATE} for event logs; rating files only refuse times before "
                             "1970)")
    parser.add_argument("--progress-every", type=float, default=IngestOptions.progress_every,
                        help="seconds between progress lines on long runs (0: off)")


def ingest_options_from_args(args: argparse.Namespace) -> IngestOptions:
    """flow.ingest.IngestOptions from the flags of add_ingest_options_args."""
    return IngestOptions(
        run_id=args.run_id, incremental=args.incremental, partition_grain=args.partition_grain,
        rating_min=args.rating_min, rating_max=args.rating_max, event_types=args.event_types,
        columns=tuple(args.columns.split(",")) if args.columns else None, max_value=args.max_value,
        bot_max_events_per_day=args.bot_max_events_per_day, future_tolerance_hours=args.future_tolerance_hours,
        min_event_date=args.min_event_date, progress_every=args.progress_every,
        max_rejected_share=args.max_rejected_share, event_weights=args.event_weights)


def add_input_args(parser: argparse.ArgumentParser, *, input_help: str) -> None:
    """--input (a file, folder or glob, ``input_help``) and --format (one of transforms.parse.FORMATS)."""
    parser.add_argument("--input", required=True, help=input_help)
    parser.add_argument("--format", required=True, choices=sorted(parse.FORMATS),
                        help="; ".join(f"{f.name}: {f.description}" for f in parse.FORMATS.values()))


def lake_parser(doc: str) -> argparse.ArgumentParser:
    """base_parser with --lake, described by the first paragraph of the job's docstring ``doc``."""
    parser = base_parser(doc.split("\n\n")[0])
    add_lake_arg(parser)
    return parser


def print_json(summary: dict) -> dict:
    """``summary`` as one JSON line on stderr (for the logs); returns it."""
    print(json.dumps(summary, default=str), file=sys.stderr)
    return summary


def run_job(app_name: str, build_parser, run, argv: list[str] | None = None) -> int:
    """A job's main: parse ``argv``, start the session, ``run(spark, args)``, stop the session; exit code 0."""
    args = build_parser().parse_args(argv)
    spark = spark_from_args(app_name, args)
    try:
        run(spark, args)
    finally:
        spark.stop()
    return 0


def add_als_args(parser: argparse.ArgumentParser, *, title: str = "ALS", with_seed: bool = True) -> None:
    """The ALS flags (defaults: models.als.AlsParams); ``als_params`` turns them into AlsParams."""
    defaults = AlsParams()
    als = parser.add_argument_group(title)
    als.add_argument("--rank", type=int, default=defaults.rank, help="number of latent factors")
    als.add_argument("--reg-param", type=float, default=defaults.reg_param,
                     help="L2 regularisation (Spark scales it by each user's and item's count: ALS-WR)")
    als.add_argument("--alpha", type=float, default=defaults.alpha, help="implicit: confidence = 1 + alpha * weight")
    als.add_argument("--max-iter", type=int, default=defaults.max_iter, help="ALS iterations")
    if with_seed:
        als.add_argument("--seed", type=int, default=defaults.seed, help="random seed (same seed, same factors)")
    als.add_argument("--num-blocks", type=int, default=None, help="user/item blocks (default: Spark's parallelism)")


def als_params(args: argparse.Namespace) -> AlsParams:
    """models.als.AlsParams from the flags of add_als_args (and --seed)."""
    return AlsParams(rank=args.rank, reg_param=args.reg_param, alpha=args.alpha, max_iter=args.max_iter,
                     seed=args.seed, num_blocks=args.num_blocks)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in comma_list(text) or ())


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in comma_list(text) or ())


def add_tuning_args(parser: argparse.ArgumentParser, *, with_flag: bool = True) -> None:
    """The search flags shared by jobs.tune, jobs.train --tune and jobs.evaluate --tune (defaults:
    flow.tune.TuneOptions); ``tune_options`` turns them into TuneOptions."""
    tune = parser.add_argument_group("tuning")
    if with_flag:
        tune.add_argument("--tune", action="store_true", help="choose ALS params by K-fold CV first")
    tune.add_argument("--tune-folds", type=int, default=TuneOptions.folds,
                      help="folds of the tuning CV, dealt per user (default %(default)s)")
    tune.add_argument("--tune-test-folds", type=int, default=TuneOptions.test_folds,
                      help=f"how many of those folds are held out and scored in turn (default: at most "
                           f"{DEFAULT_TUNE_TEST_FOLDS}); with 10 folds every fit trains on 90%% of the data, which "
                           f"matters as the best rank grows with the data")
    tune.add_argument("--search", choices=SEARCHES, default=TuneOptions.search, help="grid or random search")
    tune.add_argument("--n-configs", type=int, default=TuneOptions.n_configs,
                      help="random search: configurations to draw")
    tune.add_argument("--ranks", type=_ints, default=None, help="comma list (default: a small built-in grid)")
    tune.add_argument("--reg-params", type=_floats, default=None,
                      help="comma list; random search draws log-uniform between min and max. Spark scales "
                           "regParam per user/item count (ALS-WR): search a wide log range")
    tune.add_argument("--alphas", type=_floats, default=None, help="implicit only; comma list or random range")
    tune.add_argument("--max-iters", type=_ints, default=None, help="comma list")
    tune.add_argument("--parallelism", type=int, default=TuneOptions.parallelism,
                      help="fits run at once (raise on a cluster with idle executors; 1 is best on 2 cores)")
    tune.add_argument("--metric", default=TuneOptions.metric,
                      help="selection metric (default: ndcg@k implicit, rmse explicit)")


def tune_options(args: argparse.Namespace) -> TuneOptions:
    """flow.tune.TuneOptions from the flags of add_tuning_args."""
    return TuneOptions(folds=args.tune_folds, test_folds=args.tune_test_folds, search=args.search,
                       n_configs=args.n_configs, ranks=args.ranks, reg_params=args.reg_params, alphas=args.alphas,
                       max_iters=args.max_iters, parallelism=args.parallelism, metric=args.metric)
