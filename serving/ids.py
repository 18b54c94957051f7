"""The id contract: which user and item ids the system keeps, and the one spelling of each.

Defined here once and used everywhere an id crosses a boundary: ingest quarantines ids that break it
(transforms.id_rules, the same rules as Spark column expressions), build_training drops silver rows that break it,
the snapshot check (serving.snapshot.verify_snapshot: publish, the snapshot gate) and the service's loader refuse
snapshots that hold such an id, and the service normalises every requested id the same way before looking it up.

An id is kept in its normal form: Unicode NFC, then without leading and trailing white space (TRIM_CHARS, the
Unicode White_Space characters). A normalised id keeps the contract when it

* is not empty (an empty id is a missing one);
* has at most MAX_ID_CHARS characters (code points), the longest id the service answers for;
* holds none of FORBIDDEN_RANGES: the C0 and C1 control characters and DEL, the line and paragraph separators,
  the bidirectional embedding, override and isolate controls, the byte-order mark (U+FEFF), U+FFFD (bytes lost
  before they reached us), the noncharacters U+FFFE and U+FFFF, and surrogates.

NFC follows the Unicode version of the normaliser: Python's unicodedata here (Unicode 15.0 in Python 3.12), ICU's
in the JVM (transforms.id_rules). Unicode's stability policy makes them agree on every character assigned in the
older version; on characters assigned later the JVM may compose or reorder where Python does not. Such an id still
keeps the contract here (what the batch writes is always valid_id), but a request spelling it in another form may
not find it.

Standard library and pyarrow only: the batch and the serving environments both import it.
"""
from __future__ import annotations

import re
import unicodedata

import pyarrow as pa
import pyarrow.compute as pc

MAX_ID_CHARS = 256

# Unicode White_Space: removed from both ends of an id (after NFC). Inside an id only the ones not forbidden stay.
TRIM_CHARS = ("\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B))
              + "\u2028\u2029\u202f\u205f\u3000")

# Inclusive code point ranges no id may hold anywhere (after trimming).
FORBIDDEN_RANGES = (
    (0x0000, 0x001F),  # C0 controls
    (0x007F, 0x009F),  # DEL and C1 controls
    (0x2028, 0x202E),  # line and paragraph separators, bidirectional embeddings and overrides
    (0x2066, 0x2069),  # bidirectional isolates
    (0xD800, 0xDFFF),  # surrogates (never valid in UTF-8; a Python str can hold them)
    (0xFEFF, 0xFEFF),  # byte-order mark
    (0xFFFD, 0xFFFF),  # replacement character, noncharacters
)

# Why a normalised id breaks the contract (id_problem).
EMPTY = "empty"
TOO_LONG = "too_long"
INVALID = "invalid"

_FORBIDDEN = re.compile("[" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in FORBIDDEN_RANGES) + "]")
# Printable ASCII, no surrounding space, 1..MAX_ID_CHARS long: every id this matches keeps the contract (the
# common case, checked for a whole column at once; RE2 and Python re read it alike).
PLAIN_ID_PATTERN = f"^[!-~]([ -~]{{0,{MAX_ID_CHARS - 2}}}[!-~])?$"


def normalise_id(value: str) -> str:
    """``value`` in normal form: NFC, then without leading and trailing TRIM_CHARS."""
    if not value.isascii():  # ASCII text is already NFC
        value = unicodedata.normalize("NFC", value)
    return value.strip(TRIM_CHARS)


def forbidden_at(value: str) -> int | None:
    """The index of the first forbidden character of ``value``, or None."""
    found = _FORBIDDEN.search(value)
    return None if found is None else found.start()


def id_problem(normalised: str) -> str | None:
    """Why the normalised id breaks the contract (EMPTY, TOO_LONG or INVALID), or None when it keeps it."""
    if not normalised:
        return EMPTY
    if len(normalised) > MAX_ID_CHARS:
        return TOO_LONG
    if forbidden_at(normalised) is not None:
        return INVALID
    return None


def valid_id(value) -> bool:
    """True when ``value`` is a string in normal form that keeps the contract: what a snapshot may hold."""
    return isinstance(value, str) and id_problem(value) is None and normalise_id(value) == value


def why_invalid(value: str) -> str:
    """What is wrong with the stored id ``value`` (valid_id false), for messages."""
    problem = id_problem(value)
    if problem == EMPTY:
        return "is empty"
    if problem == TOO_LONG:
        return f"is {len(value):,} characters long; the limit is {MAX_ID_CHARS}"
    if problem == INVALID:
        at = forbidden_at(value)
        return f"holds the forbidden character U+{ord(value[at]):04X} at position {at}"
    return "is not in normal form (Unicode NFC, without leading or trailing white space)"


def first_invalid(values: pa.Array | pa.ChunkedArray) -> str | None:
    """The first non-null string of ``values`` that is not valid_id, or None when all are.

    Plain printable ASCII ids are accepted in one vectorised pass; only the others are checked one by one.
    """
    if len(values) == 0:
        return None
    plain = pc.fill_null(pc.match_substring_regex(values, PLAIN_ID_PATTERN), True)
    others = pc.filter(values, pc.invert(plain))
    for value in others.to_pylist():
        if not valid_id(value):
            return value
    return None


def shown(value: str, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (ids can be 10,000 characters long)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
