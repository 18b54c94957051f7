"""A run whose input is mostly rejected fails (issue 34, item 5): a play-count file (user, artist, plays) given as
movielens-100k stops before silver with the top reasons, the first offending line and the columns expected;
silver stays the last good one, quarantine keeps the rows, meta/ingested_files does not list the file and the
run's record says failed. --max-rejected-share 1 lets such a run through."""
from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from flow import runs
from flow.input_checks import MostlyRejectedError
from jobs import ingest
from lake import tables
from lake.registry import Lake
from transforms import columns as C
from transforms import parse

pytestmark = pytest.mark.slow

GOOD = ["1\t10\t4\t881250949", "1\t11\t3\t881250950", "2\t10\t5\t881250951", "2\t12\tbad\t881250952"]
PLAYS = ["u1\tartist-1\t120", "u1\tartist-2\t3", "u2\tartist-1\t40", "u3\tartist-9\t1", "u3\tartist-9\t120\t7"]


def run(spark, lake: Lake, source, *extra: str) -> dict:
    argv = ["--lake", lake.root, "--input", str(source), "--format", "movielens-100k", "--progress-every", "0",
            "--incremental", *extra]
    return ingest.run(spark, ingest.build_parser().parse_args(argv))


@pytest.fixture(scope="module")
def rejected(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("mostly-rejected")
    lake = Lake(str(base / "lake"))
    (base / "good").mkdir()
    (base / "good" / "u.data").write_text("\n".join(GOOD) + "\n")
    (base / "plays").mkdir()
    plays = base / "plays" / "plays.tsv"
    plays.write_text("\n".join(PLAYS) + "\n")
    good = run(spark, lake, base / "good")
    before = {name: tables.version(spark, getattr(lake, name)) for name in ("silver", "bronze", "quarantine")}
    with pytest.raises(MostlyRejectedError) as failure:
        run(spark, lake, base / "plays")
    after = {name: tables.version(spark, getattr(lake, name)) for name in ("silver", "bronze", "quarantine")}
    let_through = run(spark, lake, base / "plays", "--max-rejected-share", "1")
    return {"lake": lake, "plays": plays, "good": good, "error": failure.value, "before": before, "after": after,
            "let_through": let_through}


def test_the_error_names_the_expected_columns_and_the_first_offending_line(rejected):
    message = str(rejected["error"])
    assert "5 of 5 row(s) rejected (100.0%), more than --max-rejected-share 0.5 allows" in message
    assert "expected movielens-100k: MovieLens 100K u.data: user<TAB>item<TAB>rating<TAB>unix_ts" in message
    assert f"wrong_field_count 4  e.g. file:{rejected['plays']} line 1: 'u1\\tartist-1\\t120'" in message
    assert f"rating_out_of_range 1  e.g. file:{rejected['plays']} line 5: 'u3\\tartist-9\\t120\\t7'" in message


def test_silver_stays_the_last_good_one_and_quarantine_keeps_the_rows(spark, rejected):
    before, after, lake = rejected["before"], rejected["after"], rejected["lake"]
    assert after["silver"] == before["silver"]
    assert after["bronze"] == before["bronze"] + 1 and after["quarantine"] == before["quarantine"] + 1
    run_id = rejected["error"].summary["run_id"]
    quarantined = tables.read(spark, lake.quarantine).where(F.col(C.INGEST_RUN_ID) == run_id)
    assert sorted(r[C.RAW] for r in quarantined.collect()) == sorted(PLAYS)
    assert tables.read(spark, lake.silver).count() == rejected["good"]["loaded"] == 3


def test_the_run_is_recorded_failed_and_its_file_left_for_the_next_run(spark, rejected):
    lake, summary = rejected["lake"], rejected["error"].summary
    assert summary["status"] == "failed: input mostly rejected"
    assert summary["quarantined_by_reason"] == {parse.WRONG_FIELD_COUNT: 4, parse.RATING_OUT_OF_RANGE: 1}
    state = runs.read_states(spark, lake, "ingest").where(F.col(C.INGEST_RUN_ID) == summary["run_id"]).first()
    assert state[runs.STATE] == runs.FAILED and "expected movielens-100k" in state[runs.ERROR]
    assert (state["read"], state["loaded"], state["quarantined"]) == (5, 0, 5)
    # not recorded as ingested: the incremental run after it read the file again
    assert rejected["let_through"]["files_new"] == 1


def test_a_higher_share_lets_the_run_through(rejected):
    summary = rejected["let_through"]
    assert summary["status"] == "ok" and (summary["loaded"], summary["quarantined"]) == (0, 5)
