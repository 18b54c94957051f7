"""The reference path (models.speed, RECSYS_REFERENCE_PATH=1) against the default one, each in a fresh JVM.

Both fit the same implicit ALS model and score it from Parquet files: the default path loads Spark ALS's BLAS
library (when built) and lets the scorer read the files with pyarrow; the reference path does neither. Factors
must agree to rounding and the top-N lists must be the same.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from models import als_blas, speed

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import json, sys
    from pyspark.sql import functions as F
    from jobs.spark_session import build_spark
    from models import als_blas, parquet_direct
    from models.als import AlsParams, fit_als
    from models.topn import recommend_top_n

    out, data = sys.argv[1], sys.argv[2]
    spark = build_spark("reference-path-test", master="local[2]", conf={"spark.sql.shuffle.partitions": "2"})
    reads = []  # the plain Parquet scans the driver found to read with pyarrow
    real_source = parquet_direct.parquet_source
    parquet_direct.parquet_source = lambda df: (lambda found: (reads.append(found is not None), found)[1])(real_source(df))
    import random
    rng = random.Random(11)
    rows = [(u, i, float(rng.randint(1, 5))) for u in range(60) for i in range(40) if rng.random() < 0.3]
    spark.createDataFrame(rows, "user_idx int, item_idx int, weight double").write.parquet(data + "/pairs")
    pairs = spark.read.parquet(data + "/pairs")
    fit = fit_als(pairs, AlsParams(rank=8, max_iter=8, reg_param=0.1, alpha=5.0, implicit=True, seed=7),
                  checkpoint_dir=data + "/ckpt")
    fit.user_factors.write.parquet(data + "/users")
    fit.item_factors.write.parquet(data + "/items")
    users, items = spark.read.parquet(data + "/users"), spark.read.parquet(data + "/items")
    top = recommend_top_n(users, items, pairs.select("user_idx", "item_idx"), n=6)
    lists = {}
    for r in top.orderBy("user_idx", "rank").collect():
        lists.setdefault(str(r["user_idx"]), []).append((r["item_idx"], r["score"]))
    factors = {str(r["user_idx"]): list(r["features"]) for r in users.collect()}
    json.dump({"blas": als_blas.loaded_library(spark), "direct_reads": sum(reads), "lists": lists,
               "factors": factors}, open(out, "w"))
    spark.stop()
""")


def _run(tmp_path: Path, name: str, reference: bool) -> dict:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop(speed.REFERENCE_PATH_ENV, None)
    if reference:
        env[speed.REFERENCE_PATH_ENV] = "1"
    out = tmp_path / f"{name}.json"
    subprocess.run([sys.executable, "-c", CHILD, str(out), str(tmp_path / name)], cwd=ROOT, env=env, check=True,
                   timeout=600)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_reference_path_turns_every_trick_off_and_gives_the_same_recommendations(tmp_path):
    fast = _run(tmp_path, "fast", reference=False)
    reference = _run(tmp_path, "reference", reference=True)

    built = als_blas.library_path({})
    assert fast["blas"] == (str(built) if built else None)
    assert reference["blas"] is None
    assert fast["direct_reads"] > 0 and reference["direct_reads"] == 0

    users = sorted(fast["factors"])
    assert users == sorted(reference["factors"])
    got = np.array([fast["factors"][u] for u in users])
    want = np.array([reference["factors"][u] for u in users])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert sorted(fast["lists"]) == sorted(reference["lists"])
    for user, ranked in reference["lists"].items():
        scores = [score for _, score in ranked]
        np.testing.assert_allclose([score for _, score in fast["lists"][user]], scores, rtol=1e-4, atol=1e-5)
        if max(np.diff(scores), default=-1) < -1e-4:  # no near-ties in the top 6: the same top 5, in order
            assert [item for item, _ in fast["lists"][user]][:5] == [item for item, _ in ranked][:5], user


def test_the_switch_reads_one_variable():
    assert speed.tricks_enabled({})
    assert speed.tricks_enabled({speed.REFERENCE_PATH_ENV: "0"})
    assert not speed.tricks_enabled({speed.REFERENCE_PATH_ENV: "1"})
    assert not speed.tricks_enabled({speed.REFERENCE_PATH_ENV: " True "})
    assert als_blas.library_path({speed.REFERENCE_PATH_ENV: "1"}) is None
