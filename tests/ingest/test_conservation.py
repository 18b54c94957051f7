"""Nothing is dropped silently: the run checks read = headers + loaded + duplicates + quarantined and fails loudly."""
from __future__ import annotations

import dataclasses

import pytest
from pyspark.sql import functions as F

from flow import ingest as ingest_flow
from flow import runs
from jobs import ingest
from lake import tables
from lake.registry import Lake
from transforms import columns as C
from transforms import parse

GOOD = {"counted_total": 19, "counted_good": 10, "counted_rejected": 8, "headers": 1, "bronze_rows": 19,
        "quarantine_rows": 8, "source_rows": 9, "inserted": 9}


def test_consistent_numbers_pass():
    assert ingest_flow.conservation_problems(GOOD) == []
    ingest_flow.check_conservation(GOOD)


@pytest.mark.parametrize("change, message", [
    ({"bronze_rows": 18}, "bronze got 18 rows but 19 were read"),
    ({"quarantine_rows": 7}, "quarantine got 7 rows but 8 were rejected"),
    ({"source_rows": 11}, "saw 11 distinct events from 10 good rows"),
    ({"inserted": 10}, "inserted 10 rows from 9 distinct events"),
])
def test_each_lost_or_invented_row_is_named(change, message):
    problems = ingest_flow.conservation_problems({**GOOD, **change})
    assert any(message in p for p in problems), problems
    with pytest.raises(ingest_flow.ConservationError, match="rows not accounted for"):
        ingest_flow.check_conservation({**GOOD, **change})


def messy_ratings_run(tmp_path, fixtures_dir, *extra: str) -> tuple[Lake, list[str]]:
    """A new lake and the ingest flags that load the messy ratings fixture (19 lines) into it."""
    lake = Lake(str(tmp_path / "lake"))
    return lake, ["--lake", lake.root, "--input", str(fixtures_dir / "ratings_messy.csv"), "--format", "movielens",
                  "--progress-every", "0", *extra]


@pytest.mark.slow
def test_a_row_lost_before_quarantine_fails_the_run_and_the_retry_is_safe(spark, tmp_path, fixtures_dir, monkeypatch):
    lake, argv = messy_ratings_run(tmp_path, fixtures_dir, "--incremental")
    real = parse.rejected_rows
    # a bug that drops the empty lines on their way to quarantine
    monkeypatch.setattr(parse, "rejected_rows", lambda parsed: real(parsed).where(F.col(C.REASON) != parse.EMPTY_LINE))
    with pytest.raises(ingest_flow.ConservationError, match="quarantine got 7 rows but 8 were rejected"):
        ingest.run(spark, ingest.build_parser().parse_args(argv))
    recorded = runs.read_states(spark, lake, "ingest").collect()
    assert [(r["status"], r[runs.STATE]) for r in recorded] == [("failed: rows not accounted for", "failed")]
    assert recorded[0][runs.ERROR].startswith("ConservationError: rows not accounted for: quarantine got 7 rows")
    assert not tables.exists(spark, lake.ingested_files)  # the file will be read again

    monkeypatch.undo()
    again = ingest.run(spark, ingest.build_parser().parse_args(argv))
    assert again["status"] == "ok" and again["files_new"] == 1
    assert (again["loaded"], again["duplicates_in_silver"], again["quarantined"]) == (0, 9, 8)
    assert tables.read(spark, lake.silver).count() == 9


@pytest.mark.slow
def test_a_file_that_changes_while_it_is_read_fails_the_run(spark, tmp_path, fixtures_dir, monkeypatch):
    lake, argv = messy_ratings_run(tmp_path, fixtures_dir, "--incremental")
    real = ingest_flow.split_rows

    def grown_after_the_first_scan(rows):  # the first scan saw one row fewer than the parse will
        first, *rest = real(rows)
        return [dataclasses.replace(first, rows=first.rows - 1), *rest]

    monkeypatch.setattr(ingest_flow, "split_rows", grown_after_the_first_scan)
    with pytest.raises(ingest_flow.ConservationError, match="input changed while it was read: .*ratings_messy.csv: 18 rows "
                                                       "when first read, 19 in bronze"):
        ingest.run(spark, ingest.build_parser().parse_args(argv))
    assert not tables.exists(spark, lake.ingested_files)  # the file will be read again


@pytest.mark.slow
def test_rows_of_a_split_the_first_scan_did_not_see_reach_bronze_and_fail_the_run(spark, tmp_path, fixtures_dir,
                                                                                 monkeypatch):
    lake, argv = messy_ratings_run(tmp_path, fixtures_dir)
    monkeypatch.setattr(ingest_flow, "split_rows", lambda rows: [])  # as if the file's rows had arrived after the scan
    with pytest.raises(ingest_flow.ConservationError, match="ratings_messy.csv: 0 rows when first read, 19 in bronze"):
        ingest.run(spark, ingest.build_parser().parse_args(argv))
    assert tables.read(spark, lake.bronze).count() == 19  # kept, not dropped by the join
