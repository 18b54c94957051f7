"""Whether a run's input is usable: the share of its rows rejected, and an error that says why.

A run whose input is mostly rejected (more than ``max_rejected_share`` of its rows, headers not counted) has
almost always been given the wrong format or the wrong flags, not bad data: flow.ingest fails it before anything
is merged into silver, flow.evaluate before any model is fitted. The error names what the format expects
(transforms.parse.expected_layout) and shows, for each of the top reasons, its count and its first row.

    problem = mostly_rejected(by_reason, max_share=0.5)   # None when the input is usable
    if problem: raise MostlyRejectedError(rejection_message(fmt, by_reason, first_rejected_rows(...), ...))
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from transforms import columns as C
from transforms import parse

DEFAULT_MAX_REJECTED_SHARE = 0.5
TOP_REASONS = 3
MAX_SHOWN_CHARS = 200  # of an example row's raw text


class MostlyRejectedError(ValueError):
    """Most of a run's input was rejected; the message has the top reasons, an example row of each and what the
    format expects. ``summary``: the failed ingest run's summary, when ingest raised it."""

    def __init__(self, message: str):
        super().__init__(message)
        self.summary: dict | None = None


def rejected_counts(by_reason: dict) -> tuple[int, int]:
    """(rejected rows, rows that count) of ``by_reason`` (reason -> rows; None: good rows; headers count for
    neither)."""
    rejected = sum(n for reason, n in by_reason.items() if reason not in (None, parse.HEADER))
    return rejected, rejected + by_reason.get(None, 0)


def mostly_rejected(by_reason: dict, *, max_share: float) -> bool:
    """True when more than ``max_share`` (0..1) of the rows that count were rejected (rejected_counts)."""
    if not 0 <= max_share <= 1:
        raise ValueError(f"max_rejected_share must be between 0 and 1, got {max_share}")
    rejected, rows = rejected_counts(by_reason)
    return rows > 0 and rejected > max_share * rows


def top_reasons(by_reason: dict, n: int = TOP_REASONS) -> list[str]:
    """The ``n`` reasons with the most rows (ties: by name), headers and good rows left out."""
    reasons = [(reason, rows) for reason, rows in by_reason.items() if reason not in (None, parse.HEADER) and rows]
    return [reason for reason, _ in sorted(reasons, key=lambda kv: (-kv[1], kv[0]))[:n]]


def first_rejected_rows(rows: DataFrame, reasons: list[str], *, order: list[str]) -> dict[str, dict]:
    """For each of ``reasons``: its first row of ``rows`` (smallest ``order`` columns) as {raw, source_file and,
    when ``rows`` has it, source_line}; one aggregation over the rows with those reasons."""
    if not reasons:
        return {}
    shown = [c for c in (C.RAW, C.SOURCE_FILE, C.SOURCE_LINE) if c in rows.columns]
    firsts = (rows.where(F.col(C.REASON).isin(*reasons)).groupBy(C.REASON)
              .agg(F.min_by(F.struct(*shown), F.struct(*order)).alias("_first")).collect())
    return {r[C.REASON]: r["_first"].asDict() for r in firsts}


def _example(row: dict | None) -> str:
    if row is None:
        return ""
    raw = row.get(C.RAW) or ""
    raw = raw if len(raw) <= MAX_SHOWN_CHARS else raw[:MAX_SHOWN_CHARS] + "..."
    where = row.get(C.SOURCE_FILE) or "?"
    if row.get(C.SOURCE_LINE) is not None:
        where += f" line {row[C.SOURCE_LINE]}"
    return f"  e.g. {where}: {raw!r}"


def rejection_message(fmt, by_reason: dict, examples: dict[str, dict], *, max_share: float | None) -> str:
    """What went wrong, in lines: how many rows were rejected (against ``max_share``, None: no limit applied),
    what ``fmt`` expects, then each top reason with its count and example (first_rejected_rows)."""
    rejected, rows = rejected_counts(by_reason)
    share = rejected / rows if rows else 0.0
    limit = "" if max_share is None else f", more than --max-rejected-share {max_share:g} allows"
    lines = [f"{rejected:,} of {rows:,} row(s) rejected ({share:.1%}){limit}",
             f"expected {parse.expected_layout(fmt)}", "top reasons:"]
    for reason in top_reasons(by_reason):
        lines.append(f"  {reason} {by_reason[reason]:,}{_example(examples.get(reason))}")
    return "\n".join(lines)
