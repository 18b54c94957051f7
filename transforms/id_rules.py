"""The id contract (serving.ids) as Spark column expressions: ingest's checks and build_training's filter.

Everything is derived from serving.ids's constants, so the JVM and the service apply one rule:

* ``normalised_id``: NFC, then leading and trailing ids.TRIM_CHARS removed; null when nothing is left. NFC is ICU's
  (bundled with Spark for its collations, called through ``reflect``); ASCII text is already NFC;
* ``too_long``: more than ids.MAX_ID_CHARS characters (code points);
* ``has_forbidden``: a character of ids.FORBIDDEN_RANGES, found with a Java regular expression built from them;
* ``valid_stored_id``: the column already holds an id in normal form that keeps the contract (ids.valid_id).

Most ids are printable ASCII (U+0020..U+007E): of TRIM_CHARS they can only hold the space, and none of them is
forbidden, so for those the expressions take a shortcut (a plain space trim, no NFC, no regular expression) that
gives the same result. The shortcut is taken only while the constants make it exact (``_PRINTABLE_ASCII_SHORTCUT``).
"""
from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from serving import ids

ICU_NORMALIZER = "com.ibm.icu.text.Normalizer"
STRING_UTILS = "org.apache.commons.lang3.StringUtils"  # isAsciiPrintable: every char in U+0020..U+007E
FORBIDDEN_REGEX = "[" + "".join(f"\\x{{{lo:X}}}-\\x{{{hi:X}}}" for lo, hi in ids.FORBIDDEN_RANGES) + "]"
_PRINTABLE_ASCII = [chr(c) for c in range(0x20, 0x7F)]
_PRINTABLE_ASCII_SHORTCUT = (
    not any(lo <= ord(c) <= hi for c in _PRINTABLE_ASCII for lo, hi in ids.FORBIDDEN_RANGES)
    and [c for c in _PRINTABLE_ASCII if c in ids.TRIM_CHARS] == [" "])


def _printable_ascii(col: Column) -> Column:
    """True when every character of ``col`` is printable ASCII (U+0020..U+007E); always false without the shortcut."""
    if not _PRINTABLE_ASCII_SHORTCUT:
        return F.lit(False)
    return F.reflect(F.lit(STRING_UTILS), F.lit("isAsciiPrintable"), col) == F.lit("true")


def _nfc(col: Column) -> Column:
    """``col`` in Unicode NFC (Normalizer.compose(text, compat=false) is ICU's NFC)."""
    non_ascii = F.octet_length(col) != F.length(col)
    composed = F.reflect(F.lit(ICU_NORMALIZER), F.lit("compose"), col, F.lit(False))
    return F.when(non_ascii, composed).otherwise(col)


def normalised_id(col: Column) -> Column:
    """The text ``col`` as an id in normal form (ids.normalise_id); null for null or blank text."""
    general = F.trim(_nfc(col), F.lit(ids.TRIM_CHARS))
    trimmed = F.when(_printable_ascii(col), F.trim(col)).otherwise(general)
    return F.nullif(trimmed, F.lit(""))  # nullif evaluates ``trimmed`` once


def too_long(normalised: Column) -> Column:
    return F.length(normalised) > F.lit(ids.MAX_ID_CHARS)


def has_forbidden(normalised: Column) -> Column:
    return F.when(_printable_ascii(normalised), F.lit(False)).otherwise(normalised.rlike(FORBIDDEN_REGEX))


def valid_stored_id(col: Column) -> Column:
    """True when ``col`` holds an id that keeps the contract as it is (ids.valid_id); false for null."""
    kept = (col == normalised_id(col)) & ~too_long(col) & ~has_forbidden(col)
    return F.coalesce(kept, F.lit(False))
