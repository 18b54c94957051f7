"""Fixtures for the gate tests: a small lake built by the real jobs, run in nightly's order with the gates."""
from __future__ import annotations

import pytest

from tests.validation.helpers import run_gated_nightly, write_logs


@pytest.fixture(scope="session")
def published_lake(spark, tmp_path_factory):
    """A lake where one gated nightly run passed every gate and published model 'v1'."""
    base = tmp_path_factory.mktemp("gated")
    logs = write_logs(spark, base / "logs-1", seed=3)
    lake = str(base / "lake")
    done = run_gated_nightly(spark, lake, logs, "v1")
    return {"base": base, "lake": lake, "logs": logs, "done": done}
