"""The id contract (serving.ids) on its own and where the service applies it: requests, the snapshot check, the loader.

Property-based (hypothesis): raw ids aimed at the contract's edges (tests.support.id_strategies). No Spark here;
tests/ingest/test_id_contract.py proves ingest's Spark form of the same rules agrees.
"""
from __future__ import annotations

import re
import sys
import unicodedata

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving import ids
from serving.api import RequestError, answer, parse_json_data
from serving.lookup import load_snapshot
from serving.snapshot import SnapshotError, verify_snapshot
from tests.support.id_strategies import raw_ids
from tests.support.serving import write_snapshot

ANY_ID = raw_ids(assigned_only=False, surrogates=True)


def test_trimmed_characters_are_the_unicode_white_space():
    """Python's isspace() is Unicode White_Space plus the four information separators U+001C..U+001F."""
    white_space = {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()} - set("\x1c\x1d\x1e\x1f")
    assert set(ids.TRIM_CHARS) == white_space


@pytest.mark.parametrize("raw, normal, problem", [
    ("u1", "u1", None),
    (" u1\t\r\n", "u1", None),
    ("\u3000u1\u00a0", "u1", None),
    ("e\u0301", "\u00e9", None),
    ("zo\u00eb-7", "zo\u00eb-7", None),
    ("john doe", "john doe", None),
    ("", "", ids.EMPTY),
    (" \t\u2028 ", "", ids.EMPTY),
    ("u8\x00", "u8\x00", ids.INVALID),
    ("a\tb", "a\tb", ids.INVALID),
    ("a\u202eb", "a\u202eb", ids.INVALID),
    ("\ufeffu1", "\ufeffu1", ids.INVALID),
    ("u\ufffd", "u\ufffd", ids.INVALID),
    ("u" * 10_000 + "1", "u" * 10_000 + "1", ids.TOO_LONG),
    ("x" * 256, "x" * 256, None),
    ("e\u0301" * 256, "\u00e9" * 256, None),  # 512 characters as sent, 256 once normalised
])
def test_known_ids(raw, normal, problem):
    assert ids.normalise_id(raw) == normal
    assert ids.id_problem(normal) == problem
    assert ids.valid_id(normal) is (problem is None)


@settings(max_examples=400, deadline=None)
@given(ANY_ID)
def test_normalising_is_idempotent_and_gives_the_stored_form(raw):
    normal = ids.normalise_id(raw)
    assert ids.normalise_id(normal) == normal
    assert unicodedata.is_normalized("NFC", normal)
    assert normal == normal.strip(ids.TRIM_CHARS)
    assert ids.valid_id(normal) is (ids.id_problem(normal) is None)


@settings(max_examples=400, deadline=None)
@given(ANY_ID)
def test_the_plain_pattern_accepts_only_valid_ids(raw):
    if re.fullmatch(ids.PLAIN_ID_PATTERN, raw):
        assert ids.valid_id(raw)
    if raw.isascii():  # on ASCII text the pattern is the whole contract
        assert bool(re.fullmatch(ids.PLAIN_ID_PATTERN, raw)) is ids.valid_id(raw)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(raw_ids(assigned_only=False), raw_ids().map(ids.normalise_id)), max_size=8))
def test_first_invalid_finds_the_first_id_valid_id_refuses(values):
    expected = next((v for v in values if not ids.valid_id(v)), None)
    assert ids.first_invalid(pa.array(values + [None], pa.string())) == expected
    assert ids.first_invalid(pa.chunked_array([pa.array(values, pa.string())], pa.string())) == expected


@settings(max_examples=300, deadline=None)
@given(ANY_ID)
def test_requests_are_looked_up_in_normal_form(raw):
    """The service takes any non-empty id of valid Unicode within its length limit, and looks up its normal form."""
    try:
        parsed = parse_json_data({"user_id": raw, "exclude": [raw]}, n=5)
    except RequestError:
        assert raw == "" or len(raw) > ids.MAX_ID_CHARS or any(0xD800 <= ord(c) <= 0xDFFF for c in raw)
        return
    lookup = parsed.lookups[0]
    assert lookup.key == ids.normalise_id(raw) and lookup.exclude == (ids.normalise_id(raw),)


@settings(max_examples=25, deadline=None)
@given(st.lists(raw_ids(assigned_only=False), min_size=1, max_size=20))
def test_every_valid_id_is_served_in_any_spelling_that_normalises_to_it(tmp_path_factory, raws):
    """A snapshot of the valid normal forms loads; asking with the raw id (within the request limit) finds it."""
    stored = sorted({ids.normalise_id(r) for r in raws if ids.valid_id(ids.normalise_id(r))})
    if not stored:
        return
    root = tmp_path_factory.mktemp("ids")
    write_snapshot(root, model_version="v", n=1, user_recommendations={u: [("i1", 1.0)] for u in stored},
                   popular_items=[("i1", 1.0), ("i2", 0.5)], similar_items={u: [("i1", 1.0)] for u in stored})
    snapshot = load_snapshot(root)
    for raw in raws:
        normal = ids.normalise_id(raw)
        if normal not in stored or len(raw) > ids.MAX_ID_CHARS:
            continue
        assert answer(parse_json_data({"user_id": raw}, n=1), snapshot)["source"] == "personal"
        assert answer(parse_json_data({"item_id": raw}, n=1), snapshot)["source"] == "similar"


@pytest.mark.parametrize("table, bad_id, message", [
    ("user_recommendations", "u8\x00", r"user_id 'u8\\x00' holds the forbidden character U\+0000 at position 2"),
    ("user_recommendations", "u" * 10_000 + "1", r"user_id 'uuu.*\.\.\. is 10,001 characters long; the limit is 256"),
    ("user_recommendations", " u1", r"user_id ' u1' is not in normal form"),
    ("item_ids", "e\u0301", r"item_ids 'e\u0301' is not in normal form"),
    ("popular_items", "i\x7f", r"item_id 'i\\x7f' holds the forbidden character U\+007F"),
    ("similar_items", "i\u2066", r"item_id 'i\\u2066' holds the forbidden character U\+2066"),
])
def test_snapshots_holding_an_id_the_contract_refuses_fail_verification_and_loading(tmp_path, table, bad_id, message):
    """The defect: a user id ending in NUL passed verify_snapshot (publish, the snapshot gate) and then stopped
    the service's loader. Now verification refuses it, naming the table, the id and why."""
    users = {"u1": [("i1", 1.0)], bad_id if table == "user_recommendations" else "u2": [("i2", 0.5)]}
    if table == "item_ids":
        users["u3"] = [(bad_id, 0.25)]
    popular = [("i1", 2.0), ("i2", 1.0)] + ([(bad_id, 0.1)] if table == "popular_items" else [])
    similar = {"i1": [("i2", 0.5)]} | ({bad_id: [("i1", 0.5)]} if table == "similar_items" else {})
    version_dir = write_snapshot(tmp_path, model_version="bad", n=1, user_recommendations=users,
                                 popular_items=popular, similar_items=similar)
    with pytest.raises(SnapshotError, match=message):
        verify_snapshot(version_dir)
    with pytest.raises(SnapshotError, match=re.escape(f"{ids.shown(bad_id)} {ids.why_invalid(bad_id)}")):
        load_snapshot(tmp_path)
