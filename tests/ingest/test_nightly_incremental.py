"""The nightly ingests incrementally by default (issue 34, item 3): a second night over the same folder skips its
files, adds nothing to bronze, silver or quarantine, skips the raw gate (no run to check) and still trains and
publishes from silver, through every other gate. The input is a pairs file (play counts, no times) with log1p
weights, so the pairs format goes through the gates too."""
from __future__ import annotations

import math
import random

import pytest
from pyspark.sql import functions as F

from flow.nightly import NightlyOptions, nightly
from flow.score import ScoreOptions
from flow.train import TrainOptions
from flow.training_table import TrainingTableOptions
from lake import tables
from lake.registry import Lake
from models.als import AlsParams

pytestmark = pytest.mark.slow
TABLES = ("bronze", "silver", "quarantine", "ingested_files")


def play_counts(users: int = 40, items: int = 30, per_user: int = 8, seed: int = 5) -> list[str]:
    """user<TAB>artist<TAB>plays lines: two taste groups, one unusable line (a count that is not a number)."""
    rng = random.Random(seed)
    lines = ["user_id\titem_id\tweight"]
    for u in range(users):
        offset = 0 if u % 2 else items // 2
        for j in rng.sample(range(items // 2), per_user):
            lines.append(f"u{u}\ta{offset + j}\t{rng.randint(1, 500)}")
    return lines + ["u1\ta1\tlots"]


def fingerprint(spark, path: str) -> tuple[int, int]:
    return tables.version(spark, path), tables.read(spark, path).count()


def options(model_version: str, folder: str) -> NightlyOptions:
    return NightlyOptions(input=folder, fmt="pairs", training=TrainingTableOptions(weight_scaling="log1p"),
                          train=TrainOptions(als=AlsParams(rank=2, max_iter=2), model_version=model_version,
                                             evaluate=False),
                          score=ScoreOptions(n=3, recent_days=0, similar="none"))


@pytest.fixture(scope="module")
def two_nights(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("nightly-incremental")
    folder = base / "incoming"
    folder.mkdir()
    (folder / "plays.tsv").write_text("\n".join(play_counts()) + "\n")
    lake = Lake(str(base / "lake"))
    first = nightly(spark, lake, options("night-1", str(folder)))
    after_first = {name: fingerprint(spark, getattr(lake, name)) for name in TABLES}
    second = nightly(spark, lake, options("night-2", str(folder)))
    after_second = {name: fingerprint(spark, getattr(lake, name)) for name in TABLES}
    return {"lake": lake, "first": first, "second": second, "after_first": after_first,
            "after_second": after_second}


def test_the_first_night_ingests_the_pairs_and_passes_every_gate(two_nights):
    ingest = two_nights["first"]["ingest"]
    assert ingest["incremental"] and ingest["files_new"] == 1
    assert (ingest["headers"], ingest["quarantined"], ingest["loaded"]) == (1, 1, 40 * 8)
    assert set(ingest["gates"]) == {"raw", "silver"}
    assert two_nights["first"]["publish"]["gates"].keys() == {"snapshot"}


def test_a_second_night_over_the_same_folder_adds_nothing(two_nights):
    ingest = two_nights["second"]["ingest"]
    assert ingest["status"] == "nothing new" and (ingest["files_new"], ingest["files_skipped"]) == (0, 1)
    assert two_nights["after_second"] == two_nights["after_first"]  # bronze, silver, quarantine, files: versions, rows
    assert ingest["gates"] == {}  # no run to check; the silver gate runs before build_training
    assert "silver" in two_nights["second"]["build_training"]["gates"]
    assert two_nights["second"]["publish"]["model_version"] == "night-2"


def test_training_weights_are_the_log_of_the_play_counts(spark, two_nights):
    lake = two_nights["lake"]
    silver = {(r["user_id"], r["item_id"]): r["value"] for r in tables.read(spark, lake.silver).collect()}
    weights = tables.read(spark, lake.training).select("user_id", "item_id", "weight").collect()
    assert len(weights) == len(silver)
    assert all(math.isclose(r["weight"], math.log1p(silver[(r["user_id"], r["item_id"])])) for r in weights)
    assert tables.read(spark, lake.training).where(F.col("weight") <= 0).count() == 0
