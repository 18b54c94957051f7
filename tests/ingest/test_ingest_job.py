"""jobs.ingest and jobs.build_training on a generated two-day event log, into a temporary Delta lake.

One module fixture runs the sequence a landing folder sees (day 1, the same again, day 2 with late events, a full
re-read) and the tests check what each run left behind against what the generator says it wrote.
"""
from __future__ import annotations

import shutil

import pytest
from pyspark.sql import functions as F

from flow import ingest as ingest_flow
from flow import generate_logs as synthetic
from flow import runs
from jobs import build_training, generate_logs, ingest
from lake import tables
from lake.registry import Lake
from transforms import columns as C
from transforms import parse

pytestmark = pytest.mark.slow

DAY1 = dict(events=1500, users=150, items=60, clusters=4, in_cluster=0.85, start_date="2024-03-01", days=2,
            session_length=5, user_zipf=0.8, item_zipf=1.0, late_rate=0.0, fault_rate=0.06, duplicate_rate=0.02,
            near_duplicate_rate=0.02, bot_users=1, bot_events=400, seed=7, files=2, output_format="csv")
DAY2 = {**DAY1, "start_date": "2024-03-03", "late_rate": 0.3, "seed": 8, "bot_users": 0}
UTF8_LINES = 2
BOT_LIMIT = 300  # busiest real user: about 100 events a day here; the bot sends 400 in one day
DATA_TABLES = {"bronze": "bronze", "silver": "silver", "quarantine": "quarantine", "files": "ingested_files",
               "runs": "ingest_runs"}


def generate(spark, settings: dict, output: str) -> None:
    argv = ["--kind", "events", "--output", output, "--invalid-utf8-lines", str(UTF8_LINES)]
    for key, value in settings.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    generate_logs.run(spark, generate_logs.build_parser().parse_args(argv))


def truth(spark, settings: dict) -> dict:
    """What ingest must report for a generated log: loaded, duplicates and quarantined by reason."""
    labels = {r["label"]: r["count"] for r in synthetic.event_rows(spark, **settings).groupBy("label").count().collect()}
    quarantined = {parse.INVALID_UTF8: UTF8_LINES}
    for fault, reason in synthetic.EVENT_FAULTS.items():
        reason = reason[settings["output_format"]] if isinstance(reason, dict) else reason
        if labels.get(fault):
            quarantined[reason] = quarantined.get(reason, 0) + labels[fault]
    if labels.get(synthetic.BOT):
        quarantined[parse.BOT_SUSPECTED] = labels[synthetic.BOT]
    return {"loaded": labels[synthetic.GOOD],
            "duplicates": labels.get(synthetic.EXACT_DUPLICATE, 0) + labels.get(synthetic.NEAR_DUPLICATE, 0),
            "quarantined_by_reason": quarantined}


def fingerprint(spark, path: str) -> tuple[int, int, int]:
    """(version, rows, order-independent content hash) of a Delta table."""
    df = tables.read(spark, path)
    row = df.agg(F.count(F.lit(1)), F.sum(F.xxhash64(F.to_json(F.struct(*df.columns))).cast("decimal(38,0)"))).first()
    return tables.version(spark, path), row[0], row[1]


def ingest_run(spark, lake: Lake, source: str, *extra: str) -> dict:
    argv = ["--lake", lake.root, "--input", source, "--format", "events", "--bot-max-events-per-day",
            str(BOT_LIMIT), "--progress-every", "0", *extra]
    return ingest.run(spark, ingest.build_parser().parse_args(argv))


def id_map(spark, lake: Lake, name: str, id_col: str, idx_col: str) -> dict:
    return {r[id_col]: r[idx_col] for r in tables.read(spark, lake.table("silver", name)).collect()}


@pytest.fixture(scope="module")
def landing(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("landing")
    lake = Lake(str(base / "lake"))
    incoming = base / "incoming"
    generate(spark, DAY1, str(incoming / "2024-03-01"))
    out = {"lake": lake, "incoming": incoming, "truth1": truth(spark, DAY1), "truth2": truth(spark, DAY2)}
    paths = {name: getattr(lake, table) for name, table in DATA_TABLES.items()}

    out["run1"] = ingest_run(spark, lake, str(incoming), "--incremental")
    out["after1"] = {name: fingerprint(spark, p) for name, p in paths.items()}
    out["run2"] = ingest_run(spark, lake, str(incoming), "--incremental")
    out["after2"] = {name: fingerprint(spark, p) for name, p in paths.items()}
    bt = ["--lake", lake.root, "--mode", "implicit"]
    out["build1"] = build_training.run(spark, build_training.build_parser().parse_args(bt))
    out["users1"] = id_map(spark, lake, "user_ids", C.USER_ID, C.USER_IDX)
    out["items1"] = id_map(spark, lake, "item_ids", C.ITEM_ID, C.ITEM_IDX)

    # day 2 lands beside day 1 (generated elsewhere, then moved in, as files arrive)
    staging = base / "staging"
    generate(spark, DAY2, str(staging))
    shutil.move(str(staging), str(incoming / "2024-03-03"))
    out["silver_before_day2"] = tables.version(spark, paths["silver"])
    out["run3"] = ingest_run(spark, lake, str(incoming), "--incremental")
    out["build2"] = build_training.run(spark, build_training.build_parser().parse_args(
        bt + ["--min-user-items", "2", "--min-item-users", "2"]))
    out["users2"] = id_map(spark, lake, "user_ids", C.USER_ID, C.USER_IDX)
    out["items2"] = id_map(spark, lake, "item_ids", C.ITEM_ID, C.ITEM_IDX)

    out["silver_before_full"] = fingerprint(spark, paths["silver"])
    out["run4"] = ingest_run(spark, lake, str(incoming))  # not incremental: every file read again
    out["silver_after_full"] = fingerprint(spark, paths["silver"])
    return out


def test_every_fault_class_lands_in_quarantine_with_the_generators_reason(landing):
    run, expected = landing["run1"], landing["truth1"]
    assert run["status"] == "ok"
    assert run["quarantined_by_reason"] == expected["quarantined_by_reason"]
    assert run["loaded"] == expected["loaded"]
    assert run["duplicates"] == expected["duplicates"]
    assert set(expected["quarantined_by_reason"]) >= {
        parse.WRONG_FIELD_COUNT, parse.MISSING_USER_ID, parse.MISSING_ITEM_ID, parse.MISSING_TIMESTAMP,
        parse.BAD_TIMESTAMP, parse.FUTURE_TIMESTAMP, parse.UNKNOWN_EVENT_TYPE, parse.BAD_VALUE,
        parse.INVALID_UTF8, parse.BOT_SUSPECTED}


def test_every_run_accounts_for_every_row(spark, landing):
    for name in ("run1", "run3", "run4"):
        s = landing[name]
        assert s["read"] == s["headers"] + s["loaded"] + s["duplicates"] + s["quarantined"], name
        assert s["quarantined"] == sum(s["quarantined_by_reason"].values()), name
    recorded = {r[C.INGEST_RUN_ID]: r for r in runs.read_states(spark, landing["lake"], "ingest").collect()}
    assert set(recorded) == {landing[n]["run_id"] for n in ("run1", "run3", "run4")}  # run2 read nothing
    assert {r[runs.STATE] for r in recorded.values()} == {runs.SUCCEEDED}
    assert recorded[landing["run1"]["run_id"]]["loaded"] == landing["run1"]["loaded"]


def test_rerunning_the_same_input_incrementally_changes_no_table(landing):
    assert landing["run2"]["status"] == "nothing new" and landing["run2"]["files_skipped"] == 3
    assert landing["after2"] == landing["after1"]  # versions and contents of every table


def test_a_full_reread_adds_nothing_to_silver(landing):
    run = landing["run4"]
    assert run["loaded"] == 0
    assert run["duplicates_in_silver"] == landing["run1"]["loaded"] + landing["run3"]["loaded"]
    # the version and the content: a MERGE that inserts nothing commits nothing
    assert landing["silver_after_full"] == landing["silver_before_full"]


def test_the_second_day_reads_only_its_own_files(landing):
    run, expected = landing["run3"], landing["truth2"]
    assert (run["files_new"], run["files_skipped"]) == (3, 3)
    assert run["loaded"] == expected["loaded"] and run["duplicates"] == expected["duplicates"]
    assert run["quarantined_by_reason"] == expected["quarantined_by_reason"]


def test_late_events_land_in_their_own_date_partition(spark, landing):
    silver = tables.read(spark, landing["lake"].silver)
    assert silver.where(F.col(C.EVENT_DATE) != F.to_date(C.EVENT_TS)).count() == 0
    day2 = silver.where(F.col(C.INGEST_RUN_ID) == landing["run3"]["run_id"])
    late_dates = {r[0] for r in day2.where(F.col(C.EVENT_DATE) < "2024-03-03").select(C.EVENT_DATE).distinct().collect()}
    assert late_dates and min(late_dates).isoformat() < "2024-03-01"  # a partition day 1 never had
    assert late_dates & {r[0] for r in silver.where(F.col(C.INGEST_RUN_ID) == landing["run1"]["run_id"])
                         .select(C.EVENT_DATE).distinct().collect()}  # and partitions it had, merged into
    assert silver.count() == landing["run1"]["loaded"] + landing["run3"]["loaded"]


def test_bronze_keeps_each_row_with_its_file_and_line(spark, landing):
    bronze = tables.read(spark, landing["lake"].bronze)
    run1 = bronze.where(F.col(C.INGEST_RUN_ID) == landing["run1"]["run_id"])
    assert run1.count() == landing["run1"]["read"]
    one_file = run1.where(~F.col(C.SOURCE_FILE).contains(synthetic.INVALID_UTF8_FILE)).select(C.SOURCE_FILE).first()[0]
    rows = run1.where(F.col(C.SOURCE_FILE) == one_file).orderBy(C.SOURCE_LINE).collect()
    with open(one_file.removeprefix("file:"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert [r[C.SOURCE_LINE] for r in rows] == list(range(1, len(lines) + 1))
    assert [r[C.RAW] for r in rows] == lines
    assert {r[C.SOURCE_OFFSET] for r in rows} == {0}


def test_bronze_rows_carry_the_parse_and_link_to_silver_and_quarantine(spark, landing):
    run_id = landing["run1"]["run_id"]
    bronze = tables.read(spark, landing["lake"].bronze).where(F.col(C.INGEST_RUN_ID) == run_id)
    silver_ids = {r[0] for r in tables.read(spark, landing["lake"].silver)
                  .where(F.col(C.INGEST_RUN_ID) == run_id).select(C.EVENT_ID).collect()}
    good = bronze.where(F.col(C.PARSE_REASON).isNull()).select(C.EVENT_ID, C.USER_ID).collect()
    assert good and all(r[C.EVENT_ID] and r[C.USER_ID] for r in good)
    bots = {r[C.EVENT_ID] for r in good if r[C.USER_ID].startswith("bot-")}  # quarantined later, by the policy
    assert bots and {r[C.EVENT_ID] for r in good} - bots == silver_ids  # every other good line's event is in silver
    where = [C.SOURCE_FILE, C.SOURCE_OFFSET, C.SOURCE_LINE]
    rejected = {tuple(r[c] for c in where): r[C.PARSE_REASON] for r in
                bronze.where(F.col(C.PARSE_REASON).isNotNull() & (F.col(C.PARSE_REASON) != parse.HEADER)).collect()}
    quarantined = {tuple(r[c] for c in where): r[C.REASON] for r in
                   tables.read(spark, landing["lake"].quarantine)
                   .where((F.col(C.INGEST_RUN_ID) == run_id) & (F.col(C.REASON) != parse.BOT_SUSPECTED)).collect()}
    assert rejected and rejected == quarantined
    assert len(set(rejected.values())) >= 5  # several fault classes, each with the parser's reason


def test_quarantine_rows_point_at_their_source_line(spark, landing):
    quarantine = tables.read(spark, landing["lake"].quarantine)
    row = quarantine.where(F.col(C.REASON) == parse.MISSING_USER_ID).first()
    with open(row[C.SOURCE_FILE].removeprefix("file:"), encoding="utf-8") as f:
        assert f.read().splitlines()[row[C.SOURCE_LINE] - 1] == row[C.RAW]
    bots = quarantine.where((F.col(C.REASON) == parse.BOT_SUSPECTED)
                            & (F.col(C.INGEST_RUN_ID) == landing["run1"]["run_id"]))
    assert bots.count() == DAY1["bot_events"] and bots.where(~F.col(C.RAW).startswith("bot-")).count() == 0


def test_ingested_files_are_tracked(spark, landing):
    files = tables.read(spark, landing["lake"].ingested_files).collect()
    assert len({r["path"] for r in files}) == 6
    per_run = {}
    for r in files:
        per_run[r[C.INGEST_RUN_ID]] = per_run.get(r[C.INGEST_RUN_ID], 0) + r["rows"]
    assert per_run == {landing[n]["run_id"]: landing[n]["read"] for n in ("run1", "run3", "run4")}


def test_ids_are_stable_across_runs_and_new_ones_appended(landing):
    for before, after in (("users1", "users2"), ("items1", "items2")):
        old, new = landing[before], landing[after]
        assert all(new[k] == v for k, v in old.items())  # existing ids never change
        added = sorted(v for k, v in new.items() if k not in old)
        assert added == list(range(len(old), len(new)))  # appended densely after the largest
    assert landing["build2"]["min_support"]["rows_before"] >= landing["build2"]["rows"]


def test_partition_grain_must_match_the_existing_table(spark, landing):
    with pytest.raises(ingest_flow.PartitionGrainError, match="event_date"):
        ingest_run(spark, landing["lake"], str(landing["incoming"]), "--partition-grain", "month")


def test_bronze_and_silver_are_created_with_statistics_only_on_their_filter_columns(spark, landing):
    from delta.tables import DeltaTable

    for path, expected in ((landing["lake"].bronze, ingest_flow.BRONZE_PROPERTIES),
                           (landing["lake"].silver, ingest_flow.SILVER_PROPERTIES)):
        table = DeltaTable.forPath(spark, path)
        properties = table.detail().select("properties").first()[0]
        assert {k: properties.get(k) for k in expected} == expected
        # set by the first write itself, not by a later ALTER TABLE (ensure_properties) commit
        assert "SET TBLPROPERTIES" not in {r["operation"] for r in table.history().select("operation").collect()}


def test_new_table_properties_conf_names_delta_session_defaults():
    assert tables.new_table_properties_conf({"delta.dataSkippingStatsColumns": "a,b", "delta.appendOnly": "true"}) == {
        "spark.databricks.delta.properties.defaults.dataSkippingStatsColumns": "a,b",
        "spark.databricks.delta.properties.defaults.appendOnly": "true"}
