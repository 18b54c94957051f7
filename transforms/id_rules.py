"""The id contract (serving.ids) as Spark column expressions: ingest's checks and build_training's filter.

Everything is derived from serving.ids's constants, so the JVM and the service apply one rule:

* ``normalised_id``: NFC, then leading and trailing ids.TRIM_CHARS removed; null when nothing is left. NFC is ICU's
  (bundled with Spark for its collations, called through ``reflect``) and only non-ASCII ids are passed to it;
  ASCII text is already NFC;
* ``too_long``: more than ids.MAX_ID_CHARS characters (code points);
* ``has_forbidden``: a character of ids.FORBIDDEN_RANGES, found with a Java regular expression built from them;
* ``valid_stored_id``: the column already holds an id in normal form that keeps the contract (ids.valid_id).
"""
from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from serving import ids

ICU_NORMALIZER = "com.ibm.icu.text.Normalizer"
FORBIDDEN_REGEX = "[" + "".join(f"\\x{{{lo:X}}}-\\x{{{hi:X}}}" for lo, hi in ids.FORBIDDEN_RANGES) + "]"


def _nfc(col: Column) -> Column:
    """``col`` in Unicode NFC (Normalizer.compose(text, compat=false) is ICU's NFC)."""
    non_ascii = F.octet_length(col) != F.length(col)
    composed = F.reflect(F.lit(ICU_NORMALIZER), F.lit("compose"), col, F.lit(False))
    return F.when(non_ascii, composed).otherwise(col)


def normalised_id(col: Column) -> Column:
    """The text ``col`` as an id in normal form (ids.normalise_id); null for null or blank text."""
    trimmed = F.trim(_nfc(col), F.lit(ids.TRIM_CHARS))
    return F.when(trimmed != F.lit(""), trimmed)


def too_long(normalised: Column) -> Column:
    return F.length(normalised) > F.lit(ids.MAX_ID_CHARS)


def has_forbidden(normalised: Column) -> Column:
    return normalised.rlike(FORBIDDEN_REGEX)


def valid_stored_id(col: Column) -> Column:
    """True when ``col`` holds an id that keeps the contract as it is (ids.valid_id); false for null."""
    kept = (col == normalised_id(col)) & ~too_long(col) & ~has_forbidden(col)
    return F.coalesce(kept, F.lit(False))
