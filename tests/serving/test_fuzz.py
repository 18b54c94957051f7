"""Fuzz the running service's HTTP API against its own OpenAPI description (schemathesis, every check).

Valid and invalid requests for every described operation: no server error, every status code and body as
described, invalid requests refused (4xx) and valid ones accepted. schemathesis is a dev-only tool
(requirements/dev.lock) installed into the batch venv; its ``st`` command runs here as a subprocess.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ST = Path(sys.executable).parent / "st"


def test_http_api_fuzzed_against_its_openapi_description(service, tmp_path):
    if not ST.is_file():
        pytest.fail(f"{ST} not found: install the dev tools (pip install -r requirements/dev.lock)")
    report = tmp_path / "schemathesis.json"
    done = subprocess.run(
        [str(ST), "run", service.base_url + "/openapi.json", "--checks", "all", "--max-examples", "40",
         "--seed", "20261123", "--generation-database", "none", "--workers", "2", "--no-color",
         "--suppress-health-check", "all", "--report", "json", "--report-json-path", str(report)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )
    summary = json.loads(report.read_text())
    assert done.returncode == 0, done.stdout[-6000:]
    assert summary["operations"]["tested"] == summary["operations"]["total"] >= 9
    assert summary["test_cases"]["generated"] >= 300, summary["test_cases"]
    print(f"schemathesis: {summary['test_cases']['generated']} cases, {summary['running_time']:.1f} s")
    assert summary["failures"] == [] and summary["errors"] == []
    log = service.log_text()
    assert "MICROSERVICE_INTERNAL_ERROR" not in log and "look-up failed" not in log
