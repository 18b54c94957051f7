"""Benchmark batch scoring: our exact top-N versus Spark's recommendForAllUsers and the implicit library.

    make bench-scoring                 # = .venv/bin/python bench/scoring.py
    .venv/bin/python bench/scoring.py --sizes 100000x20000,200000x40000 --rank 64 --n 100

For each size (users x items), the same factor matrices and the same seen items go to every method:

* ``ours``: models.topn.recommend_top_n (mapInArrow, float32 BLAS blocks, compiled selection, seen excluded),
  timed from the call until the result is fully computed (Spark ``noop`` write), so the seen-item index,
  the item broadcast and the Arrow transfer are all inside the time. Before the clock starts, the engine is
  warmed on a toy problem (``warm_engine``: Python workers started, kernel loaded, the JVM's Parquet and Arrow
  code run once), as implicit is timed after its import; the warm-up's time is ``ours_warmup_runs_s``. One extra
  run without it comes first, reported as ``ours_cold_s`` (a fresh JVM's first job: what a one-off run pays).
  Each process then runs the same job a second time, reported apart as ``ours_second_run_s`` (not used in any
  ratio): the JVM has compiled its hot loops for this volume by then, which the first run pays for (about 1 s).
  The seen pairs and the item factors are plain Parquet files here, so the driver reads them with pyarrow
  (models.parquet_direct; ``ours_read_directly`` says it did), as implicit's loader does, and so do the scoring
  tasks their share of the user factors (since 2026-12-05, session 28).
* ``ours_read_through_spark``: the same with ``direct_read=False``: all three read through Spark, as for tables on
  an object store. Runs in the same rounds; ``speedup_vs_implicit_read_through_spark`` is its ratio.
* ``spark_builtin``: ``ALSModel.recommendForAllUsers(n + max seen)``, then seen items removed (anti-join) and the
  first n kept, materialised the same way. An ALSModel cannot be built from given factors, so a tiny model of
  the same rank is trained, saved, and its userFactors/itemFactors parquet replaced by ours before loading: the
  model then scores exactly our factors (same ids, same vectors).
* ``implicit``: ``AlternatingLeastSquares.recommend(all users, user_items, N=n, filter_already_liked_items=True)``
  on the same float32 factors, with BLAS limited to one thread as implicit asks (its own threads use both cores).
  Timed like ours, from the same Parquet files (the two factor tables read into matrices, the seen pairs into the
  sparse user x item matrix it filters with) to every list in memory: ``implicit_s``. The recommend call alone, on
  inputs already in memory, is ``implicit_recommend_s`` (and ``speedup_vs_implicit_recommend_call``); runs before
  2026-12-05 timed only that call.

Each method runs in its own fresh process (Spark: local[2], a new JVM), so the peak resident memory of that
process tree (JVM, Python workers) is the method's own; it is sampled every 0.1 s. Factors are random normal
(seeded), seen items are drawn with a skewed (Zipf-like) popularity, 10-90 per user.

Exactness: on a sample of users, each method's lists are checked against a float64 brute force: same items in
the same order, where only scores closer than a float32 rounding error (near-ties) may swap. ``exact`` is true
when ours agrees on every sampled user; the other two are reported as ``spark_builtin_agrees``/``implicit_agrees``.

The kernel is also timed alone (``kernel``), single-threaded, per 1,000 users: the matrix product with numpy's
BLAS and with BLIS, in blocks of 64 users and of the scorer's block size, numpy's argpartition on its scores, and
our select_top_n.

Rounds: ours, ours through Spark and implicit run ``--rounds`` times each (3 by default), in turns, so all see the
same background load; ``*_s`` is the best run and ratios use it, ``*_median_s`` is the middle one, and
``speedup_vs_implicit_median`` their ratio: on a noisy machine a fresh process's first run varies by a third.

Writes bench/results/scoring.json: a list of records with users, items, rank, n, ours_s, spark_builtin_s,
implicit_s, speedup_vs_spark, speedup_vs_implicit, exact, users_per_s figures, peak memory and the kernel times.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "scoring.json"
METHODS = ("ours", "ours_read_through_spark", "spark_builtin", "implicit")
SAMPLE_USERS = 2000
SPARK_CONF = {
    "spark.driver.memory": "6g",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
}


# --------------------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------------------

def make_data(folder: Path, users: int, items: int, rank: int, seed: int) -> dict:
    """Write users.parquet, items.parquet (id, features list<float>) and seen.parquet (user_idx, item_idx)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("users", users), ("items", items)):
        vecs = rng.standard_normal((count, rank), dtype=np.float32)
        id_col = "user_idx" if name == "users" else "item_idx"
        features = pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float32()), rank).cast(
            pa.list_(pa.float32()))
        table = pa.table({id_col: pa.array(np.arange(count, dtype=np.int32)), "features": features})
        pq.write_table(table, folder / f"{name}.parquet", row_group_size=max(1, count // 4))
        np.save(folder / f"{name}.npy", vecs)
    per_user = rng.integers(10, 91, size=users)
    popularity = 1.0 / (np.arange(items) + 10.0) ** 0.8
    popularity /= popularity.sum()
    cols = rng.choice(items, size=int(per_user.sum()), p=popularity).astype(np.int64)
    rows = np.repeat(np.arange(users, dtype=np.int64), per_user)
    pairs = np.unique(rows * items + cols)
    seen_rows, seen_cols = (pairs // items).astype(np.int32), (pairs % items).astype(np.int32)
    pq.write_table(pa.table({"user_idx": seen_rows, "item_idx": seen_cols}), folder / "seen.parquet")
    max_seen = int(np.bincount(seen_rows, minlength=users).max())
    sample = np.sort(rng.choice(users, size=min(SAMPLE_USERS, users), replace=False)).astype(np.int32)
    np.save(folder / "sample.npy", sample)
    return {"seen_pairs": int(len(pairs)), "max_seen": max_seen}


def load_seen_csr(folder: Path, users: int, items: int):
    import pyarrow.parquet as pq
    import scipy.sparse as sp

    seen = pq.read_table(folder / "seen.parquet")
    rows = seen.column("user_idx").to_numpy()
    cols = seen.column("item_idx").to_numpy()
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(users, items))


# --------------------------------------------------------------------------------------------------------------
# workers: one method per process
# --------------------------------------------------------------------------------------------------------------

def spark_session():
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from jobs.spark_session import build_spark

    spark = build_spark("bench-scoring", master="local[2]", conf=SPARK_CONF, log_level="ERROR")
    spark.range(100).count()  # JVM and first job warm, outside the timing
    return spark


def sample_lists(rows, user_col="user_idx", item_col="item_idx", rank_col="rank") -> dict[int, list[int]]:
    out: dict[int, list] = {}
    for r in sorted(rows, key=lambda r: (r[user_col], r[rank_col])):
        out.setdefault(int(r[user_col]), []).append(int(r[item_col]))
    return out


def worker_ours(folder: Path, n: int, warm: bool = True, direct_read: bool = True, **_) -> dict:
    from pyspark.sql import functions as F

    from models.parquet_direct import parquet_source
    from models.topn import recommend_top_n

    spark = spark_session()
    warmup_s = warm_engine(spark, folder / "toy", direct_read=direct_read) if warm else None
    users = spark.read.parquet(str(folder / "users.parquet"))
    items = spark.read.parquet(str(folder / "items.parquet"))
    seen = spark.read.parquet(str(folder / "seen.parquet"))
    # what the scorer reads with pyarrow when direct_read is on (all three, for these plain Parquet files)
    read_directly = direct_read and all(parquet_source(df.select(*cols)) is not None for df, cols in (
        (items, ("item_idx", "features")), (seen, ("user_idx", "item_idx")), (users, ("user_idx", "features"))))
    started = time.perf_counter()
    top = recommend_top_n(users, items, seen, n=n, direct_read=direct_read)
    top.write.format("noop").mode("overwrite").save()
    seconds = time.perf_counter() - started
    second_s = None
    if warm:  # the same job once more in this JVM: its code paths now compiled for this volume
        again = time.perf_counter()
        again_top = recommend_top_n(users, items, seen, n=n, direct_read=direct_read)
        again_top.write.format("noop").mode("overwrite").save()
        second_s = time.perf_counter() - again
    sample = np.load(folder / "sample.npy").tolist()
    subset = users.where(F.col("user_idx").isin(sample))
    lists = sample_lists(recommend_top_n(subset, items, seen, n=n, direct_read=direct_read).collect())
    spark.stop()
    return {"seconds": seconds, "lists": lists, "warmup_s": warmup_s, "second_run_s": second_s,
            "read_directly": read_directly}


def worker_ours_read_through_spark(folder: Path, n: int, warm: bool = True, **_) -> dict:
    """Ours with the seen pairs and item factors collected through Spark (what an object store gets)."""
    return worker_ours(folder, n, warm=warm, direct_read=False)


def warm_engine(spark, folder: Path, direct_read: bool = True) -> float:
    """Run our scorer once on a toy problem (8 users x 300 items, rank 4) read from Parquet, like the real one.

    implicit is timed after its import, in a process that has run Python before; Spark's built-in runs in a JVM
    that has run one job. This gives our scorer a comparable start: the session's Python workers exist and hold
    numpy, pyarrow and the compiled kernel (from numba's on-disk cache), and the JVM has run once the code that
    reads Parquet and moves Arrow batches (its JIT still compiles the hot loops only under real volume, so a first
    large job stays slower than later ones). Nothing of the measured data is touched. Returns seconds.
    """
    from pyspark.sql import functions as F

    from models.topn import recommend_top_n

    started = time.perf_counter()
    parallelism = spark.sparkContext.defaultParallelism
    vectors = F.array(*[F.rand(seed) for seed in range(4)]).cast("array<float>").alias("features")
    spark.range(0, 8, 1, parallelism).select(F.col("id").cast("int").alias("user_idx"), vectors) \
        .write.mode("overwrite").parquet(str(folder / "users"))
    spark.range(0, 300, 1, 1).select(F.col("id").cast("int").alias("item_idx"), vectors) \
        .write.mode("overwrite").parquet(str(folder / "items"))
    spark.createDataFrame([(0, 1), (3, 7)], "user_idx int, item_idx int").write.mode("overwrite").parquet(
        str(folder / "seen"))
    toy = [spark.read.parquet(str(folder / name)) for name in ("users", "items", "seen")]
    recommend_top_n(*toy, n=5, direct_read=direct_read).write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started


def worker_spark_builtin(folder: Path, n: int, rank: int, max_seen: int, **_) -> dict:
    from pyspark.ml.recommendation import ALS, ALSModel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    spark = spark_session()
    model_dir = str(folder / "als_model")
    toy = spark.createDataFrame([(u, i, 1.0) for u in range(4) for i in range(4)], "user int, item int, rating float")
    ALS(rank=rank, maxIter=1, userCol="user", itemCol="item", ratingCol="rating", implicitPrefs=True,
        seed=1).fit(toy).write().overwrite().save(model_dir)
    for name, id_col, target in (("users", "user_idx", "userFactors"), ("items", "item_idx", "itemFactors")):
        (spark.read.parquet(str(folder / f"{name}.parquet"))
         .select(F.col(id_col).alias("id"), "features").write.mode("overwrite").parquet(f"{model_dir}/{target}"))
    model = ALSModel.load(model_dir)
    seen = spark.read.parquet(str(folder / "seen.parquet"))
    k = n + max_seen

    def without_seen(recs):
        exploded = recs.select("user", F.posexplode("recommendations").alias("pos", "rec")).select(
            F.col("user").alias("user_idx"), "pos", F.col("rec.item").alias("item_idx"), F.col("rec.rating").alias("score"))
        kept = exploded.join(seen, on=["user_idx", "item_idx"], how="left_anti")
        order = Window.partitionBy("user_idx").orderBy("pos")
        return kept.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= n)

    started = time.perf_counter()
    without_seen(model.recommendForAllUsers(k)).write.format("noop").mode("overwrite").save()
    seconds = time.perf_counter() - started
    sample = np.load(folder / "sample.npy").tolist()
    subset = spark.createDataFrame([(u,) for u in sample], "user int")
    lists = sample_lists(without_seen(model.recommendForUserSubset(subset, k)).collect())
    partitions = model.userFactors.rdd.getNumPartitions()
    spark.stop()
    return {"seconds": seconds, "lists": lists, "user_factor_partitions": partitions}


def worker_implicit(folder: Path, n: int, rank: int, users: int, items: int, **_) -> dict:
    """implicit's recommend-all, timed like ours: from the same Parquet files (factor tables, seen pairs) to every
    user's list in memory. ``recommend_s`` is the recommend call alone, on factors and a seen matrix already built."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    # The same start as ours (warm_engine): the readers and the library run once on a toy problem first
    toy = folder / "toy-implicit"
    make_data(toy, 50, 300, 4, seed=0)
    toy_model = AlternatingLeastSquares(factors=4, num_threads=0)
    toy_model.user_factors = read_factors(toy / "users.parquet", "user_idx", 4)
    toy_model.item_factors = read_factors(toy / "items.parquet", "item_idx", 4)
    toy_model.recommend(np.arange(50), load_seen_csr(toy, 50, 300), N=5, filter_already_liked_items=True)
    with threadpool_limits(1, "blas"):
        started = time.perf_counter()
        user_vecs = read_factors(folder / "users.parquet", "user_idx", rank)
        item_vecs = read_factors(folder / "items.parquet", "item_idx", rank)
        seen = load_seen_csr(folder, users, items)
        model = AlternatingLeastSquares(factors=rank, num_threads=0)
        model.user_factors = user_vecs
        model.item_factors = item_vecs
        called = time.perf_counter()
        ids, _ = model.recommend(np.arange(users), seen, N=n, filter_already_liked_items=True)
        finished = time.perf_counter()
    sample = np.load(folder / "sample.npy")
    # implicit pads users with fewer unseen items than n with id -1 (none here: n + 90 < items)
    lists = {int(u): [int(i) for i in ids[u] if i >= 0] for u in sample}
    return {"seconds": finished - started, "recommend_s": finished - called, "lists": lists}


def read_factors(path: Path, id_col: str, rank: int) -> np.ndarray:
    """A factor table written by make_data as a float32 matrix, row i holding the factors of id i."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    ids = table.column(id_col).to_numpy()
    values = pc.list_flatten(table.column("features")).to_numpy().astype(np.float32, copy=False)
    vecs = np.empty((len(ids), rank), np.float32)
    vecs[ids] = values.reshape(len(ids), rank)
    return vecs


WORKERS = {"ours": worker_ours, "ours_read_through_spark": worker_ours_read_through_spark,
           "spark_builtin": worker_spark_builtin, "implicit": worker_implicit}


# --------------------------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------------------------

def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (the JVM and its Python workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                parent = int(fh.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def run_method(method: str, folder: Path, params: dict) -> dict:
    """Run one method in a fresh process; return its result plus the peak RSS of its process tree."""
    out_file = folder / f"result-{method}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--data", str(folder),
           "--params", json.dumps(params), "--result", str(out_file)]
    # implicit runs as its authors recommend: OpenBLAS without its own thread pool (implicit parallelises itself)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"} if method == "implicit" else None
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss_bytes(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    stop.set()
    sampler.join()
    if code != 0:
        raise RuntimeError(f"{method} worker failed with exit code {code}")
    result = json.loads(out_file.read_text())
    result["lists"] = {int(k): v for k, v in result["lists"].items()}
    result["peak_rss_mb"] = round(peak / 2**20)
    return result


def reference_check(folder: Path, lists: dict[int, list[int]], n: int, items: int) -> dict:
    """Compare a method's sampled lists with a float64 brute force; near-ties (within float32 error) may swap."""
    user_vecs = np.load(folder / "users.npy", mmap_mode="r")
    item_vecs = np.load(folder / "items.npy").astype(np.float64)
    sample = np.load(folder / "sample.npy")
    seen = load_seen_csr(folder, user_vecs.shape[0], items)
    identical = agree = 0
    worst = None
    for u in sample:
        scores = item_vecs @ np.asarray(user_vecs[u], np.float64)
        seen_items = seen[int(u)].indices
        scores[seen_items] = -np.inf
        expected = np.lexsort((np.arange(items), -scores))[:n]
        got = lists.get(int(u), [])
        if got == expected.tolist():
            identical += 1
            agree += 1
            continue
        tolerance = 1e-5 * max(1.0, float(np.abs(scores[expected]).max()))
        ok = (len(got) == len(expected) and len(set(got)) == len(got) and not set(got) & set(seen_items.tolist())
              and np.all(np.abs(scores[got] - scores[expected]) <= tolerance))
        agree += bool(ok)
        if not ok and worst is None:
            worst = {"user": int(u), "expected": expected[:10].tolist(), "got": got[:10]}
    return {"sampled_users": len(sample), "agree": agree, "identical": identical, "first_mismatch": worst}


def kernel_times(items: int, rank: int, n: int, seed: int = 0) -> dict:
    """Single-threaded cost per 1,000 users of the matrix product (numpy's BLAS, in blocks of 64 users and of the
    scorer's MAX_BLOCK_USERS), numpy's argpartition, and our selection. Best of several rounds."""
    from threadpoolctl import threadpool_limits

    from models.select import MAX_BLOCK_USERS, select_top_n

    rng = np.random.default_rng(seed)
    item_vecs_t = np.ascontiguousarray(rng.standard_normal((items, rank), dtype=np.float32).T)
    blocks = sorted({64, MAX_BLOCK_USERS})
    users = {b: rng.standard_normal((b, rank), dtype=np.float32) for b in blocks}
    scores = {b: np.empty((b, items), np.float32) for b in blocks}
    best: dict[str, float] = {}

    def timed(key, fn, block):
        started = time.perf_counter()
        fn()
        ms = (time.perf_counter() - started) * 1000.0 * 1000 / block
        best[key] = min(best.get(key, float("inf")), ms)

    with threadpool_limits(1, "blas"):
        for _ in range(7):
            for b in blocks:
                timed(f"matmul_{b}_users_ms_per_1k_users",
                      lambda: np.matmul(users[b], item_vecs_t, out=scores[b]), b)
        block = MAX_BLOCK_USERS
        for _ in range(3):
            timed("argpartition_ms_per_1k_users", lambda: np.argpartition(-scores[block], n - 1, axis=1)[:, :n], block)
        for _ in range(5):
            timed("select_ms_per_1k_users", lambda: select_top_n(scores[block], n), block)
    return {"block_users": MAX_BLOCK_USERS,
            **{key: round(ms, 1) for key, ms in sorted(best.items())}}


def bench_size(users: int, items: int, rank: int, n: int, seed: int, methods: list[str], workdir: Path,
               rounds: int, builtin_max_pairs: float) -> dict:
    folder = workdir / f"{users}x{items}x{rank}"
    print(f"== {users:,} users x {items:,} items, rank {rank}, n {n}: writing synthetic factors", flush=True)
    info = make_data(folder, users, items, rank, seed)
    params = {"n": n, "rank": rank, "users": users, "items": items, "max_seen": info["max_seen"]}
    record: dict = {"users": users, "items": items, "rank": rank, "n": n, **info}
    skipped = []
    if "spark_builtin" in methods and users * items > builtin_max_pairs:
        skipped.append("spark_builtin")
        record["spark_builtin_s"] = None
        record["spark_builtin_note"] = (f"not run: {users:,} x {items:,} is over --builtin-max-pairs "
                                        f"{builtin_max_pairs:.0e} (it grows with users x items; see the smaller size)")
    # ours and implicit alternate (rounds each, best kept) so that both see the same background load;
    # the slow built-in runs once, between them.
    cold_first = "ours" in methods and rounds > 1  # one cold run of ours first, reported apart
    order = ["ours"] if cold_first else []
    for r in range(rounds):
        order += [m for m in ("ours", "ours_read_through_spark", "implicit") if m in methods]
        if r == 0 and "spark_builtin" in methods and "spark_builtin" not in skipped:
            order.append("spark_builtin")
    for position, method in enumerate(order):
        cold = cold_first and position == 0
        print(f"   {method}{' (cold: no warm-up)' if cold else ''} ...", flush=True)
        result = run_method(method, folder, {**params, "warm": not cold})
        if cold:
            record["ours_cold_s"] = round(result["seconds"], 2)
            print(f"   ours, cold: {result['seconds']:.1f} s", flush=True)
            continue
        record.setdefault(f"{method}_runs_s", []).append(round(result["seconds"], 2))
        if result.get("warmup_s") is not None:
            record.setdefault(f"{method}_warmup_runs_s", []).append(round(result["warmup_s"], 2))
        if result.get("second_run_s") is not None:
            record.setdefault(f"{method}_second_run_s", []).append(round(result["second_run_s"], 2))
        if result.get("recommend_s") is not None:
            record.setdefault(f"{method}_recommend_runs_s", []).append(round(result["recommend_s"], 2))
        if result.get("read_directly") is not None:
            record[f"{method}_read_directly"] = result["read_directly"]
        record[f"{method}_peak_rss_mb"] = max(record.get(f"{method}_peak_rss_mb", 0), result["peak_rss_mb"])
        aside = ""
        if result.get("recommend_s") is not None:
            aside = f" (recommend call {result['recommend_s']:.1f} s)"
        elif result.get("second_run_s") is not None:
            aside = f" (second run in the same JVM {result['second_run_s']:.1f} s)"
        print(f"   {method}: {result['seconds']:.1f} s{aside}, {users / result['seconds']:,.0f} users/s, "
              f"peak {result['peak_rss_mb']:,} MB (load {os.getloadavg()[0]:.1f})", flush=True)
        if f"{method}_check" not in record:
            check = reference_check(folder, result["lists"], n, items)
            record[f"{method}_check"] = check
            print(f"   {method}: agrees on {check['agree']}/{check['sampled_users']} sampled users "
                  f"({check['identical']} identical)", flush=True)
    for method in methods:
        if f"{method}_runs_s" in record:
            best = min(record[f"{method}_runs_s"])
            record[f"{method}_s"] = best
            record[f"{method}_users_per_s"] = round(users / best)
            record[f"{method}_median_s"] = round(statistics.median(record[f"{method}_runs_s"]), 2)
    if record.get("implicit_recommend_runs_s"):
        record["implicit_recommend_s"] = min(record["implicit_recommend_runs_s"])
        record["speedup_vs_implicit_recommend_call"] = (round(record["implicit_recommend_s"] / record["ours_s"], 1)
                                                        if record.get("ours_s") else None)
    for other, key in (("spark_builtin", "speedup_vs_spark"), ("implicit", "speedup_vs_implicit")):
        if record.get(f"{other}_s") and record.get("ours_s"):
            record[key] = round(record[f"{other}_s"] / record["ours_s"], 1)
        else:
            record[key] = None
    if record.get("implicit_median_s") and record.get("ours_median_s"):  # the ratio of the typical runs
        record["speedup_vs_implicit_median"] = round(record["implicit_median_s"] / record["ours_median_s"], 1)
    if record.get("implicit_s") and record.get("ours_read_through_spark_s"):
        record["speedup_vs_implicit_read_through_spark"] = round(
            record["implicit_s"] / record["ours_read_through_spark_s"], 1)
    for method in methods:
        if f"{method}_check" in record:
            check = record[f"{method}_check"]
            record["exact" if method == "ours" else f"{method}_agrees"] = check["agree"] == check["sampled_users"]
    record["kernel"] = kernel_times(items, rank, n)
    print(f"   kernel (1 thread, per 1k users): {record['kernel']}", flush=True)
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000x20000,200000x40000", help="USERSxITEMS, comma separated")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of ours and of implicit, alternating (best and median kept)")
    parser.add_argument("--builtin-max-pairs", type=float, default=2e9,
                        help="skip Spark's built-in above this many users x items (it takes about an hour there)")
    parser.add_argument("--workdir", default=None, help="where the synthetic data goes (default: a temp folder)")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:  # inside a fresh process: run one method and write its result
        result = WORKERS[args.worker](Path(args.data), **json.loads(args.params))
        Path(args.result).write_text(json.dumps(result))
        return 0

    methods = [m for m in args.methods.split(",") if m]
    records = []
    with tempfile.TemporaryDirectory(prefix="bench-scoring-", dir=args.workdir) as tmp:
        for size in args.sizes.split(","):
            users, items = (int(x) for x in size.lower().split("x"))
            record = bench_size(users, items, args.rank, args.n, args.seed, methods, Path(tmp), args.rounds,
                                args.builtin_max_pairs)
            record["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                                 "load_avg_1m_after": round(os.getloadavg()[0], 1)}
            records.append(record)
            Path(args.output).write_text(json.dumps(records, indent=2) + "\n")  # keep what is done so far
    print(f"wrote {args.output}")
    for r in records:
        print(f"{r['users']:>9,} x {r['items']:>7,} rank {r['rank']}: ours {r.get('ours_s')} s, "
              f"spark {r.get('spark_builtin_s')} s ({r.get('speedup_vs_spark')}x), "
              f"implicit {r.get('implicit_s')} s ({r.get('speedup_vs_implicit')}x; its recommend call alone "
              f"{r.get('implicit_recommend_s')} s, {r.get('speedup_vs_implicit_recommend_call')}x), "
              f"exact {r.get('exact')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
