"""jobs.generate_logs --kind events: deterministic for a seed, realistic in shape, every fault where it says."""
from __future__ import annotations

import collections
import datetime as dt

import pytest

from flow import generate_logs as synthetic

SETTINGS = dict(events=3000, users=300, items=120, clusters=4, in_cluster=0.85, start_date="2024-03-04", days=14,
                session_length=6, user_zipf=0.8, item_zipf=1.0, late_rate=0.0, fault_rate=0.0, duplicate_rate=0.0,
                near_duplicate_rate=0.0, bot_users=0, bot_events=0, files=2, output_format="csv")


@pytest.fixture(scope="module")
def clean_lines(spark):
    rows = synthetic.event_rows(spark, seed=5, **SETTINGS).collect()
    return [r["value"].split(",") for r in rows]


def test_same_seed_same_lines_other_seed_other_lines(spark):
    settings = {**SETTINGS, "fault_rate": 0.05, "duplicate_rate": 0.02, "near_duplicate_rate": 0.02,
                "bot_users": 1, "bot_events": 50, "events": 500}
    first = [tuple(r) for r in synthetic.event_rows(spark, seed=3, **settings).collect()]
    again = [tuple(r) for r in synthetic.event_rows(spark, seed=3, **{**settings, "files": 3}).collect()]
    other = [tuple(r) for r in synthetic.event_rows(spark, seed=4, **settings).collect()]
    assert sorted(first) == sorted(again)  # the partitioning does not change the content
    assert sorted(first) != sorted(other)
    assert len(first) == 500 + 10 + 10 + 50


def test_user_popularity_is_skewed(clean_lines):
    per_user = collections.Counter(f[0] for f in clean_lines)
    top = sum(n for _, n in per_user.most_common(len(per_user) // 10))
    assert top / len(clean_lines) > 0.25  # the busiest 10% of users make well over 10% of events


def test_funnel_steps_follow_the_sessions_first_view(clean_lines):
    session = SETTINGS["session_length"]
    types = collections.Counter(f[2] for f in clean_lines)
    assert types["view"] > types["click"] > types["add_to_cart"] > types["purchase"] > 0
    for start in range(0, len(clean_lines), session):
        first = clean_lines[start]
        assert first[2] == "view"
        for f in clean_lines[start + 1:start + session]:
            assert f[0] == first[0]  # one user per session
            if f[2] != "view":
                assert f[1] == first[1]


def test_weekends_and_evenings_are_busier(clean_lines):
    times = [dt.datetime.fromisoformat(f[3].replace("Z", "+00:00")) for f in clean_lines]
    weekend = sum(t.weekday() >= 5 for t in times) / 4  # 4 weekend days in 14 days
    weekday = sum(t.weekday() < 5 for t in times) / 10
    assert weekend > 1.1 * weekday
    evening = sum(18 <= t.hour <= 21 for t in times)
    night = sum(2 <= t.hour <= 5 for t in times)
    assert evening > 3 * night


def test_invalid_utf8_lines_are_not_utf8():
    data = synthetic.invalid_utf8_lines(n=3, seed=1, start_date="2024-01-01", output_format="csv")
    lines = data.splitlines()
    assert len(lines) == 3
    for line in lines:
        with pytest.raises(UnicodeDecodeError):
            line.decode("utf-8")
