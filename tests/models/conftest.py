"""Small synthetic data for the model tests: two taste groups, so a personalised model must beat popularity."""
from __future__ import annotations

import random

import pytest

from transforms import columns as C


def two_group_ratings(users: int = 24, items: int = 24, per_user: int = 10, seed: int = 3) -> list[tuple]:
    """(user, item, rating, unix_ts): even users rate items of the first half, odd users the second half;
    item popularity is skewed inside each half. ~users * per_user rows."""
    rng = random.Random(seed)
    rows = []
    half = items // 2
    for u in range(users):
        offset = 0 if u % 2 == 0 else half
        weights = [1.0 / (1 + j) for j in range(half)]
        chosen = set()
        while len(chosen) < per_user:
            chosen.add(rng.choices(range(half), weights=weights)[0])
        for j in sorted(chosen):
            rows.append((u, offset + j, float(rng.choice([3, 4, 4, 5, 5])), 1_600_000_000 + 3600 * (u * 31 + j)))
    return rows


@pytest.fixture(scope="session")
def ratings_csv(tmp_path_factory):
    """A MovieLens ratings.csv (header userId,movieId,rating,timestamp) of the two-group data."""
    path = tmp_path_factory.mktemp("data") / "ratings.csv"
    lines = ["userId,movieId,rating,timestamp"] + [f"{u},{i},{r},{t}" for u, i, r, t in two_group_ratings()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def pairs_frame(spark):
    """The two-group data as training pairs with dense ids (weight = rating)."""
    rows = [(u, i, r, r) for u, i, r, _ in two_group_ratings()]
    return spark.createDataFrame(rows, f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.WEIGHT} double, {C.RATING} double").cache()
