"""The mostly-rejected rule and its message, the value-ignored note, and the flags every input-reading job shares
(no Spark: pure Python and argument parsing)."""
from __future__ import annotations

import argparse

import pytest

from flow import input_checks
from flow.ingest import IngestOptions
from flow.nightly import NightlyOptions
from jobs import evaluate, ingest, nightly
from jobs.cli import event_weights_arg
from transforms import columns as C
from transforms import parse, training

PLAYS = {None: 0, parse.WRONG_FIELD_COUNT: 92_835}  # the play-count file read as movielens-100k


def test_a_run_fails_when_more_than_the_share_is_rejected_headers_aside():
    assert input_checks.mostly_rejected(PLAYS, max_share=0.5)
    assert input_checks.rejected_counts({None: 5, parse.HEADER: 1, parse.BAD_RATING: 5}) == (5, 10)
    assert not input_checks.mostly_rejected({None: 5, parse.HEADER: 1, parse.BAD_RATING: 5}, max_share=0.5)
    assert input_checks.mostly_rejected({None: 4, parse.HEADER: 1, parse.BAD_RATING: 6}, max_share=0.5)
    assert not input_checks.mostly_rejected(PLAYS, max_share=1.0)  # 1: never fails
    assert not input_checks.mostly_rejected({parse.HEADER: 1}, max_share=0.0)  # nothing that counts
    with pytest.raises(ValueError, match="between 0 and 1"):
        input_checks.mostly_rejected(PLAYS, max_share=50)


def test_the_message_names_the_expected_columns_and_shows_the_first_offending_line_of_each_top_reason():
    by_reason = {None: 10, parse.HEADER: 1, parse.RATING_OUT_OF_RANGE: 978, parse.BAD_RATING: 3,
                 parse.WRONG_FIELD_COUNT: 3, parse.MISSING_USER_ID: 1}
    assert input_checks.top_reasons(by_reason) == [parse.RATING_OUT_OF_RANGE, parse.BAD_RATING,
                                                   parse.WRONG_FIELD_COUNT]
    examples = {parse.RATING_OUT_OF_RANGE: {"raw": "u1\ta1\t12\t0", "source_file": "file:/d/plays.tsv",
                                            "source_line": 1},
                parse.BAD_RATING: {"raw": "x" * 500, "source_file": "file:/d/plays.tsv"}}
    message = input_checks.rejection_message(parse.get_format("movielens-100k"), by_reason, examples, max_share=0.5)
    lines = message.splitlines()
    assert lines[0] == "985 of 995 row(s) rejected (99.0%), more than --max-rejected-share 0.5 allows"
    assert lines[1] == "expected movielens-100k: MovieLens 100K u.data: user<TAB>item<TAB>rating<TAB>unix_ts"
    assert lines[3] == "  rating_out_of_range 978  e.g. file:/d/plays.tsv line 1: 'u1\\ta1\\t12\\t0'"
    assert lines[4].startswith("  bad_rating 3  e.g. file:/d/plays.tsv: 'xxx") and lines[4].endswith("...'")
    assert lines[5] == "  wrong_field_count 3" and len(lines) == 6
    no_limit = input_checks.rejection_message(parse.get_format("pairs"), PLAYS, {}, max_share=None)
    assert no_limit.splitlines()[0] == "92,835 of 92,835 row(s) rejected (100.0%)"
    assert "user_id,item_id[,weight]" in no_limit


def test_expected_layout_follows_the_event_logs_column_order():
    fmt = parse.with_columns(parse.get_format("events"), ["event_ts", "user_id", "item_id", "event_type"])
    assert parse.expected_layout(fmt).startswith("events: CSV lines event_ts,user_id,item_id,event_type (required:")
    assert parse.expected_layout(parse.get_format("pairs-parquet")).startswith("pairs-parquet: pairs without times")


def test_values_a_fixed_weight_ignores_are_named():
    found = {"view": 7, "purchase": 2, C.RATING_EVENT: 40, C.PAIR_EVENT: 9, "click": 0}
    assert training.value_ignored_by_type(found) == {"purchase": 2, "view": 7}
    assert training.value_ignored_by_type(found, {"view": None, "purchase": 3.0}) == {"purchase": 2}
    note = training.value_ignored_note({"purchase": 2, "view": 7})
    assert "purchase 2, view 7 event(s) carry a value" in note and "--event-weights" in note
    assert training.value_ignored_note({}) is None


def test_pairs_weigh_by_their_value_by_default():
    assert training.DEFAULT_EVENT_WEIGHTS[C.PAIR_EVENT] is None and C.PAIR_EVENT in parse.DEFAULT_EVENT_TYPES
    assert training.WEIGHT_SCALINGS == ("linear", "log1p")


def weighting(args: argparse.Namespace) -> tuple:
    return args.event_types, args.rating_max, args.event_weights, args.weight_scaling


def test_ingest_nightly_and_evaluate_take_the_same_weighting_flags():
    flags = ["--event-types", "view, click,,play", "--rating-max", "10", "--event-weights",
             '{"view": 1, "play": null}', "--weight-scaling", "log1p", "--max-rejected-share", "0.8"]
    expected = (("view", "click", "play"), 10.0, {"view": 1.0, "play": None}, "log1p")
    ingest_args = ingest.build_parser().parse_args(["--lake", "l", "--input", "i", "--format", "events", *flags])
    nightly_args = nightly.build_parser().parse_args(["--lake", "l", "--input", "i", *flags])
    evaluate_args = evaluate.build_parser().parse_args(["--input", "i", "--format", "pairs", "--output", "o", *flags])
    assert weighting(ingest_args) == weighting(nightly_args) == weighting(evaluate_args) == expected
    nightly_options = nightly.options(nightly_args)
    assert nightly_options.ingest.event_types == expected[0] and nightly_options.ingest.rating_max == 10.0
    assert nightly_options.ingest.max_rejected_share == 0.8
    assert (nightly_options.training.event_weights, nightly_options.training.weight_scaling) == expected[2:]
    evaluate_options = evaluate.options(evaluate_args)
    assert (evaluate_options.event_types, evaluate_options.rating_max, evaluate_options.event_weights,
            evaluate_options.weight_scaling, evaluate_options.max_rejected_share) == (*expected, 0.8)


@pytest.mark.parametrize("text", ["[1, 2]", "{}", '{"view": "high"}', '{"view": true}', "view=1"])
def test_event_weights_must_be_an_object_of_numbers_or_nulls(text):
    with pytest.raises(argparse.ArgumentTypeError):
        event_weights_arg(text)


def test_the_nightly_ingests_incrementally_unless_told_to_reread_and_jobs_ingest_the_other_way_round():
    assert NightlyOptions().ingest.incremental and not IngestOptions().incremental
    base = ["--lake", "l", "--input", "i"]
    assert nightly.options(nightly.build_parser().parse_args(base)).ingest.incremental
    for flag in ("--full-reread", "--no-incremental"):
        assert not nightly.options(nightly.build_parser().parse_args([*base, flag])).ingest.incremental
    assert nightly.options(nightly.build_parser().parse_args([*base, "--incremental"])).ingest.incremental
    ingest_base = [*base, "--format", "events"]
    assert not ingest.build_parser().parse_args(ingest_base).incremental
    assert ingest.build_parser().parse_args([*ingest_base, "--incremental"]).incremental
