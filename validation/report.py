"""What a gate found, in one shape for people (``describe``), machines (``to_json``) and callers (``GateFailed``).

A gate run checks one pipeline stage. Its checks come from three places, all reported the same way:

* ``expectation``: a great-expectations expectation of the stage's suite (validation/suites.py);
* ``drift``: a metric compared with the previous successful run of the same stage (validation/drift.py);
* ``custom``: a check outside great-expectations, e.g. the snapshot manifest verifying.

Example rows are bounded (a handful per failed check, long strings cut), so a report never holds a table.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EXPECTATION = "expectation"
DRIFT = "drift"
CUSTOM = "custom"

MAX_EXAMPLE_CHARS = 200


@dataclass
class CheckResult:
    """One check of one target: what was checked, whether it held, what was seen, and a few offending rows."""

    target: str  # the table or frame checked, e.g. "silver_interactions"
    name: str  # expectation type (expect_column_values_to_not_be_null) or drift/custom check name
    description: str  # a sentence a person understands: "user_id is never null"
    kind: str  # EXPECTATION, DRIFT or CUSTOM
    success: bool
    observed: Any = None  # observed value; for row-wise checks {"unexpected_count", "element_count", ...}
    expected: Any = None  # the expectation's arguments or the drift threshold
    examples: list = field(default_factory=list)  # a few offending rows (dicts) or values
    error: str | None = None  # set when the check could not be evaluated (e.g. a missing column)

    def headline(self) -> str:
        return f"{self.target}: {self.description} [{self.name}]"

    def observed_text(self) -> str:
        """The observed value in words: '3 of 1,000 rows unexpected (0.30%)', or the value itself."""
        if self.error:
            return f"error: {self.error}"
        obs = self.observed
        if isinstance(obs, dict) and "unexpected_count" in obs:
            count, total = obs.get("unexpected_count"), obs.get("element_count")
            pct = obs.get("unexpected_percent")
            text = f"{_num(count)} of {_num(total)} rows unexpected" if total is not None else f"{_num(count)} unexpected"
            return text + (f" ({pct:.4g}%)" if isinstance(pct, (int, float)) else "")
        if isinstance(obs, dict):
            return ", ".join(f"{k} {_num(v)}" for k, v in obs.items())
        return _num(obs)


@dataclass
class GateResult:
    """The outcome of one gate run over every target of a stage."""

    stage: str
    run_id: str
    started_at: dt.datetime
    seconds: float
    targets: dict[str, dict]  # target name -> {"source": path, "version": int | None, "rows": int}
    checks: list[CheckResult]
    metrics: dict[str, dict]  # target name -> profile (validation/drift.py), kept for the next run's drift checks
    model_version: str | None = None
    previous_run_id: str | None = None  # the successful run drift was measured against (None: first run)
    drift_checked: bool = False  # drift thresholds applied (with no previous_run_id: the first run, no baseline)
    report_path: str | None = None
    docs_path: str | None = None
    actions: list[str] = field(default_factory=list)  # what the gate did on failure, e.g. LATEST re-pointed

    @property
    def success(self) -> bool:
        return all(c.success for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success]

    def failed_names(self) -> list[str]:
        """'target: description' of each failed check, e.g. ['silver_interactions: user_id is never null']."""
        return [f"{c.target}: {c.description}" for c in self.failures]

    def describe(self, *, examples: int = 3) -> str:
        """A readable report: one line for a pass; for a failure, each failed check, its observed value and rows."""
        status = "passed" if self.success else "FAILED"
        head = (f"gate {self.stage} {status}: {len(self.checks) - len(self.failures)}/{len(self.checks)} checks "
                f"passed on {', '.join(f'{k} ({_num(v.get('rows'))} rows)' for k, v in self.targets.items())} "
                f"(run {self.run_id[:8]}, {self.seconds:.1f} s)")
        lines = [head]
        for check in self.failures:
            lines.append(f"  FAILED {check.headline()}")
            lines.append(f"      observed: {check.observed_text()}")
            if check.expected not in (None, {}, []):
                lines.append(f"      expected: {_short(check.expected)}")
            for example in check.examples[:examples]:
                lines.append(f"      e.g. {_short(example)}")
        for action in self.actions:
            lines.append(f"  action: {action}")
        if self.previous_run_id:
            lines.append(f"  drift measured against run {self.previous_run_id[:8]}")
        elif self.drift_checked:
            lines.append(f"  no baseline: no earlier {self.stage} gate passed, so drift was not measured; "
                         + ("this run's profiles are recorded as the baseline for the next run" if self.success
                            else "the next run that passes records the baseline"))
        if self.report_path:
            lines.append(f"  report: {self.report_path}")
        if self.docs_path:
            lines.append(f"  data docs: {self.docs_path}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        doc = asdict(self)
        doc["started_at"] = self.started_at.isoformat()
        doc["success"] = self.success
        doc["failed"] = self.failed_names()
        return json_safe(doc)


class GateFailed(RuntimeError):
    """A data-quality gate failed; the message lists each failed check with its observed value and example rows.

    ``result`` holds the full GateResult (also written as JSON and appended to meta/validation_runs).
    """

    def __init__(self, result: GateResult):
        self.result = result
        super().__init__(result.describe())


def write_report(reports: Path, result: GateResult) -> Path:
    """Write ``result`` as JSON to <reports>/results/<stage>/<started>-<run>.json; sets its report_path."""
    folder = reports / "results" / result.stage
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result.started_at:%Y%m%dT%H%M%SZ}-{result.run_id[:8]}.json"
    result.report_path = str(path)
    path.write_text(json.dumps(result.to_json(), indent=2))
    return path


def json_safe(value: Any) -> Any:
    """Plain JSON types: datetimes as ISO strings, NaN/inf as strings, long strings cut, unknown types as str."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if len(value) <= MAX_EXAMPLE_CHARS else value[:MAX_EXAMPLE_CHARS] + "..."
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return json_safe(str(value))


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.6g}"
    return _short(value)


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(json_safe(value), default=str)
    return text if len(text) <= limit else text[:limit] + "..."
