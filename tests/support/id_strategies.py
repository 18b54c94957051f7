"""Hypothesis strategies for raw ids: what logs and clients may send, aimed at the id contract's edges (serving.ids).

Pieces are mixed: any character, the white space trimmed at the ends, every forbidden range's edges, sequences that
NFC composes, reorders or expands, and long runs around MAX_ID_CHARS (before and after normalisation).
"""
from __future__ import annotations

import string

from hypothesis import strategies as st

from serving import ids

FORBIDDEN_SAMPLES = sorted({chr(c) for lo, hi in ids.FORBIDDEN_RANGES for c in (lo, (lo + hi) // 2, hi)})
SPARK_FORBIDDEN_SAMPLES = [c for c in FORBIDDEN_SAMPLES if not 0xD800 <= ord(c) <= 0xDFFF]  # UTF-8 cannot hold them
NFC_CASES = [
    "e\u0301",           # composes to U+00E9
    "A\u030a", "\u212b",  # both become U+00C5 (the Angstrom sign is a singleton)
    "a\u0316\u0301",     # already in canonical order
    "a\u0301\u0316",     # reordered by NFC
    "\u1100\u1161\u11a8",  # Hangul jamo compose to one syllable
    "\u0344", "\u0f73", "\ufb2c",  # NFC makes them longer (2, 3 and 3 characters)
    "\u2000", "\u2001",  # spaces NFC maps to other spaces
    "\u0301",            # a combining mark with nothing to combine with
    "\u00e9", "\U0001f600", "\u200d", "\u4e2d\u6587",
]
_WORD = st.text(alphabet=string.ascii_letters + string.digits + "-_.:@", min_size=1, max_size=8)


def _piece(chars: st.SearchStrategy[str], forbidden: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(chars, _WORD, st.sampled_from(ids.TRIM_CHARS), st.sampled_from(forbidden),
                     st.sampled_from(NFC_CASES))


def _long(piece: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A run of one piece around the length limit, with a piece before and after it."""
    return st.builds(lambda head, unit, count, tail: head + unit * count + tail, piece,
                     st.sampled_from(["x", "e\u0301", "\u0344", "\u0f73", " "]),
                     st.integers(ids.MAX_ID_CHARS // 3 - 5, ids.MAX_ID_CHARS + 5), piece)


def raw_ids(*, assigned_only: bool = True, surrogates: bool = False) -> st.SearchStrategy[str]:
    """Raw ids. ``assigned_only``: characters assigned in the service's Unicode version (Python's unicodedata),
    where ICU's and Python's NFC agree; otherwise any code point. ``surrogates``: lone surrogates too (a Python
    string can hold them, UTF-8 and so Spark cannot)."""
    excluded = ("Cs", "Cn") if assigned_only else ("Cs",)
    chars = st.characters(exclude_categories=excluded)
    piece = _piece(chars, FORBIDDEN_SAMPLES if surrogates else SPARK_FORBIDDEN_SAMPLES)
    return st.one_of(st.lists(piece, max_size=10).map("".join), st.text(alphabet=chars, max_size=12), _long(piece))
