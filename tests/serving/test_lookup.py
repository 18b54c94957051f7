"""Unit tests of snapshot loading, look-ups, padding, exclusions and request checks (numpy + pyarrow, no server)."""
from __future__ import annotations

import json
import mmap
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.protobuf import json_format, struct_pb2

from serving.api import GRPC_MESSAGE_LIMIT, Limits, Lookup, ParsedRequest, RequestError, answer, \
    estimated_answer_bytes, parse_json_data
from serving.lookup import load_snapshot, open_arrays, save_arrays
from serving.snapshot import SnapshotError, set_latest, sha256_of, write_manifest
from tests.serving.conftest import publish_spec
from tests.support.serving import write_snapshot


@pytest.fixture(scope="module")
def loaded(snapshot_root):
    return load_snapshot(snapshot_root)


# -- arrays ---------------------------------------------------------------------------------------------------------

def test_arrays_are_compact_and_sorted(loaded, snapshot_spec):
    users = sorted(u.encode("utf-8") for u in snapshot_spec.user_recommendations)
    assert loaded.users.keys.dtype.kind == "S" and loaded.users.keys.tolist() == users
    assert loaded.users.items.dtype == np.uint16  # fewer than 65,536 items: 2 bytes per item index
    assert loaded.users.scores.dtype == np.float32 and loaded.users.lengths.dtype == np.uint8
    assert loaded.users.items.shape == loaded.users.scores.shape == (len(users), snapshot_spec.n)
    assert loaded.item_vocab.tolist() == sorted(f"i{i}".encode() for i in range(1, 9))
    assert loaded.similar.keys.tolist() == [b"i1", b"i2"]
    assert loaded.model_version == snapshot_spec.model_version and loaded.n == snapshot_spec.n
    # per user: 5 x 2 bytes of item indices + 5 x 4 bytes of scores + 1 length byte + the widest id (7 bytes)
    assert loaded.bytes_per_user() == 5 * 2 + 5 * 4 + 1 + max(len(u.encode()) for u in snapshot_spec.user_recommendations)


def test_large_catalogue_uses_int32_indices(tmp_path):
    users = {f"u{i}": [(f"item-{i}", 1.0)] for i in range(70_000)}  # 70,000 distinct items: over uint16
    write_snapshot(tmp_path, model_version="big", n=2, user_recommendations=users, popular_items=[("item-0", 9.0)])
    loaded = load_snapshot(tmp_path)
    assert loaded.users.items.dtype == np.int32 and loaded.item_vocab.size == 70_000
    assert loaded.recommend("u69999", 2)["item_ids"] == ["item-69999", "item-0"]


# -- user look-ups ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("user_id", ["42", "u1", "u2", "zoë-7", "a"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_known_users_get_their_list_padded_to_k(loaded, snapshot_spec, user_id, k):
    assert loaded.recommend(user_id, k) == snapshot_spec.expected_user(user_id, k)


def test_a_full_list_is_personal_only(loaded, snapshot_spec):
    answer_ = loaded.recommend("42", 5)
    assert (answer_["source"], answer_["fallback_count"]) == ("personal", 0)
    assert (answer_["item_ids"], answer_["scores"]) == snapshot_spec.personal("42", 5)


def test_short_list_is_padded_from_popular_items_not_in_it(loaded):
    answer_ = loaded.recommend("u2", 5)  # u2 has i3, i4; popular is i2, i1, i3, i4, i5, ...
    assert answer_["item_ids"] == ["i3", "i4", "i2", "i1", "i5"]
    assert answer_["scores"] == [0.95, 0.5, 100.0, 90.0, 60.0]
    assert (answer_["source"], answer_["fallback_count"]) == ("personal+popular", 3)


@pytest.mark.parametrize("user_id", ["nobody", "4", "420", "u", "u10", "zoë", "u-empty", "\x00", "a\x00"])
def test_unknown_and_listless_users_get_popular(loaded, snapshot_spec, user_id):
    answer_ = loaded.recommend(user_id, 4)
    items, scores = snapshot_spec.popular(4)
    assert (answer_["item_ids"], answer_["scores"], answer_["source"], answer_["fallback_count"]) == \
        (items, scores, "popular", 4)


def test_exclusions_apply_to_the_list_and_the_padding(loaded, snapshot_spec):
    answer_ = loaded.recommend("42", 4, ["i1", "i3", "i2", "no-such-item"])
    assert answer_["item_ids"] == ["i5", "i4", "i6", "i7"]  # i5, i4 personal; i2, i1, i3 excluded from padding
    assert answer_ == snapshot_spec.expected_user("42", 4, ["i1", "i3", "i2", "no-such-item"])
    assert loaded.recommend("nobody", 2, ["i2"])["item_ids"] == ["i1", "i3"]


def test_every_user_gets_exactly_k_distinct_unexcluded_items(loaded, snapshot_spec):
    rng = random.Random(3)
    catalogue = [f"i{i}" for i in range(1, 9)]
    for user_id in list(snapshot_spec.user_recommendations) + ["new-user"]:
        for k in range(1, snapshot_spec.n + 1):
            exclude = rng.sample(catalogue, rng.randint(0, 3))
            answer_ = loaded.recommend(user_id, k, exclude)
            assert len(answer_["item_ids"]) == k
            assert len(set(answer_["item_ids"])) == k and not set(exclude) & set(answer_["item_ids"])
            assert answer_ == snapshot_spec.expected_user(user_id, k, exclude)


def test_answer_is_short_only_when_the_catalogue_runs_out(loaded):
    everything_but_two = [f"i{i}" for i in range(1, 7)]
    answer_ = loaded.recommend("nobody", 5, everything_but_two)
    assert answer_["item_ids"] == ["i7", "i8"] and answer_["fallback_count"] == 2


# -- similar items -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("item_id, k", [("i1", 3), ("i1", 5), ("i2", 4), ("i8", 3), ("unknown-item", 2)])
def test_similar_items_known_answers(loaded, snapshot_spec, item_id, k):
    assert loaded.similar_items(item_id, k) == snapshot_spec.expected_similar(item_id, k)


def test_similar_items_never_include_the_item_itself(loaded):
    answer_ = loaded.similar_items("i2", 5)  # similar: i1; padding skips i2 (itself) and i1 (already in)
    assert answer_["item_ids"] == ["i1", "i3", "i4", "i5", "i6"]
    assert (answer_["source"], answer_["fallback_count"]) == ("similar+popular", 4)


def test_similar_items_with_exclusions(loaded, snapshot_spec):
    assert loaded.similar_items("i1", 3, ["i3"]) == snapshot_spec.expected_similar("i1", 3, ["i3"])


def test_snapshot_without_similar_items_answers_from_popular(tmp_path, snapshot_spec):
    publish_spec(tmp_path, snapshot_spec, similar_items=None)
    loaded = load_snapshot(tmp_path)
    assert loaded.similar is None and loaded.similar_count == 0
    answer_ = loaded.similar_items("i2", 3)
    assert (answer_["item_ids"], answer_["source"]) == (["i1", "i3", "i4"], "popular")


# -- request checks --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"user_id": "42"}, [Lookup("user", "42", 5)]),            # default k is 10, capped at n
        ({"user_id": "42", "k": 3}, [Lookup("user", "42", 3)]),
        ({"user_id": "42", "k": 5, "exclude": ["i1"]}, [Lookup("user", "42", 5, ("i1",))]),
        ({"item_id": "i5", "k": 2}, [Lookup("similar", "i5", 2)]),
        ({"user_id": "42", "exclude": []}, [Lookup("user", "42", 5)]),
    ],
)
def test_parse_accepts(payload, expected):
    parsed = parse_json_data(payload, n=5)
    assert list(parsed.lookups) == expected and parsed.batch is False


def test_parse_batch():
    parsed = parse_json_data({"requests": [{"user_id": "42"}, {"item_id": "i1", "k": 2}]}, n=5)
    assert parsed == ParsedRequest((Lookup("user", "42", 5), Lookup("similar", "i1", 2)), True)


def test_integral_doubles_are_k_only_over_grpc():
    assert parse_json_data({"user_id": "42", "k": 3.0}, n=5, numbers_are_doubles=True).lookups[0].k == 3
    with pytest.raises(RequestError, match="k must be an integer between 1 and 5, got number 3.0"):
        parse_json_data({"user_id": "42", "k": 3.0}, n=5)


LIMITS = Limits(max_batch=3, max_exclude=2, max_id_chars=8)


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"user_id": "42", "k": 0}, r"^k must be between 1 and 5, got 0$"),
        ({"user_id": "42", "k": 6}, r"^k must be between 1 and 5, got 6$"),
        ({"user_id": "42", "k": -1}, r"^k must be between 1 and 5"),
        ({"user_id": "42", "k": 2.5}, r"^k must be an integer between 1 and 5, got number 2.5"),
        ({"user_id": "42", "k": "3"}, r"^k must be an integer .* got string '3'"),
        ({"user_id": "42", "k": True}, r"^k must be an integer .* got boolean True"),
        ({"user_id": "42", "k": None}, r"^k must be an integer .* got null"),
        ({"k": 3}, r"^user_id is required in jsonData"),
        ({}, r"^user_id is required in jsonData"),
        ({"user_id": 42}, r"^user_id must be a non-empty string, got integer 42"),
        ({"user_id": ""}, r"^user_id must be a non-empty string"),
        ({"user_id": ["42"]}, r"^user_id must be a non-empty string, got array"),
        ({"user_id": "x" * 9}, r"^user_id is 9 characters long; the limit is 8"),
        ({"user_id": "\ud800"}, r"^user_id is not valid Unicode"),
        ({"userId": "42"}, r"^unknown field\(s\) \['userId'\] in jsonData"),
        ({"user_id": "42", "item_id": "i1"}, r"gives both user_id and item_id"),
        ({"item_id": 5}, r"^item_id must be a non-empty string"),
        ({"user_id": "42", "exclude": "i1"}, r"^exclude must be a list of item id strings, got string"),
        ({"user_id": "42", "exclude": ["a", "b", "c"]}, r"^exclude holds 3 item ids; the limit is 2"),
        ({"user_id": "42", "exclude": ["a", 7]}, r"^exclude\[1\] must be a non-empty string, got integer 7"),
        ({"requests": []}, r"^requests must be a non-empty list"),
        ({"requests": {"user_id": "42"}}, r"^requests must be a non-empty list of look-ups, got object"),
        ({"requests": [{"user_id": "1"}] * 4}, r"^requests holds 4 look-ups; the limit is 3 per request"),
        ({"requests": [{"user_id": "1"}, {"user_id": "2", "k": 9}]}, r"^requests\[1\]\.k must be between 1 and 5"),
        ({"requests": [{"user_id": "1"}, "2"]}, r"^requests\[1\] must be an object"),
        ({"requests": [{"requests": []}]}, r"^requests\[0\]\.requests: a batch cannot hold another batch"),
        ({"requests": [{"user_id": "1"}], "k": 3}, r"a batch holds only 'requests'; unexpected field\(s\) \['k'\]"),
        ("42", r"^jsonData must be an object .* got string"),
        ([{"user_id": "42"}], r"^jsonData must be an object .* got array"),
        (None, r"^jsonData must be an object .* got null"),
        (np.array([1.0]), r"^jsonData must be an object .* got ndarray"),
    ],
)
def test_parse_rejects_naming_the_problem(payload, message):
    with pytest.raises(RequestError, match=message):
        parse_json_data(payload, n=5, limits=LIMITS)


def test_limits_must_keep_answers_under_grpc_message_limit():
    with pytest.raises(ValueError, match="max_response_bytes must stay under gRPC's 4,194,304-byte"):
        Limits(max_response_bytes=GRPC_MESSAGE_LIMIT)
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        Limits(max_batch=0)


# -- answer size cap (gRPC's 4 MB message limit) ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def long_ids(tmp_path_factory):
    """A snapshot with 200-character item ids and n=50: big answers from few look-ups."""
    root = tmp_path_factory.mktemp("long-ids")
    items = [("item-" + str(i).rjust(195, "x"), float(1000 - i)) for i in range(300)]
    users = {f"user-{u}": [(items[(u * 7 + j) % 300][0], 1.0 / (j + 1)) for j in range(50)] for u in range(40)}
    write_snapshot(root, model_version="long", n=50, user_recommendations=users, popular_items=items)
    return load_snapshot(root)


def test_size_estimate_bounds_json_and_protobuf_sizes(long_ids):
    rng = random.Random(5)
    for _ in range(20):
        lookups = [{"user_id": f"user-{rng.randrange(60)}", "k": rng.randint(1, 50)} for _ in range(rng.randint(1, 30))]
        parsed = parse_json_data({"requests": lookups}, n=50)
        result = answer(parsed, long_ids, Limits(max_response_bytes=4_000_000))
        estimate = estimated_answer_bytes(parsed, long_ids)
        as_json = len(json.dumps({"jsonData": result, "meta": {"tags": {"model_version": "long"}}}).encode())
        as_struct = json_format.ParseDict(result, struct_pb2.Value()).ByteSize()
        assert as_json <= estimate and as_struct <= estimate


def test_answer_over_the_cap_is_refused_naming_the_limit(long_ids):
    parsed = parse_json_data({"requests": [{"user_id": f"user-{u}", "k": 50} for u in range(40)]}, n=50)
    assert estimated_answer_bytes(parsed, long_ids) > 400_000
    with pytest.raises(RequestError, match=r"could reach 489,080 bytes, over the 400,000 bytes limit .* gRPC's 4 MB"):
        answer(parsed, long_ids, Limits(max_response_bytes=400_000))
    assert len(answer(parsed, long_ids, Limits())["results"]) == 40  # default cap: 3.5 MB


# -- refused snapshots -------------------------------------------------------------------------------------------------

def _write_recs(root, version, table, *, n=3, popular=None):
    """A snapshot whose user_recommendations table is ``table`` as given (to build broken ones)."""
    version_dir = root / version
    (version_dir / "user_recommendations").mkdir(parents=True)
    (version_dir / "popular_items").mkdir(parents=True)
    pq.write_table(table, version_dir / "user_recommendations" / "part-0.parquet")
    popular = popular if popular is not None else pa.table(
        {"rank": pa.array([1], pa.int32()), "item_id": ["i1"], "score": [1.0]})
    pq.write_table(popular, version_dir / "popular_items" / "part-0.parquet")
    write_manifest(version_dir, model_version=version, n=n)
    set_latest(root, version)
    return version_dir


def _recs(user_ids, item_lists, score_lists):
    return pa.table({
        "user_id": pa.array(user_ids, pa.string()),
        "item_ids": pa.array(item_lists, pa.list_(pa.string())),
        "scores": pa.array(score_lists, pa.list_(pa.float32())),
    })


@pytest.mark.parametrize(
    "table, message",
    [
        (_recs(["a", "b", "a"], [["i1"], ["i2"], ["i3"]], [[1.0], [1.0], [1.0]]), "'a' appears more than once"),
        (_recs(["a"], [["i1", "i2"]], [[1.0]]), "user_id 'a' has 2 item_ids but 1 scores"),
        (_recs(["a"], [["i1", "i2", "i3", "i4"]], [[4.0, 3.0, 2.0, 1.0]]), "more than the manifest's n=3"),
        (_recs(["a", None], [["i1"], ["i2"]], [[1.0], [1.0]]), "'user_id' holds 1 null"),
        (_recs(["a"], [["i1", None]], [[1.0, 0.5]]), "null elements"),
        (_recs(["a"], [None], [None]), "null lists"),
        (_recs(["a"], [["i1"]], [[float("nan")]]), r"1 score\(s\) are NaN or infinite"),
        (_recs(["a\x00"], [["i1"]], [[1.0]]), r"user_id 'a\\x00' holds the forbidden character U\+0000"),
    ],
    ids=["duplicate-user", "length-mismatch", "longer-than-n", "null-user", "null-item", "null-list", "nan-score",
         "nul-id"],
)
def test_inconsistent_tables_are_refused(tmp_path, table, message):
    _write_recs(tmp_path, "bad", table)
    with pytest.raises(SnapshotError, match=message):
        load_snapshot(tmp_path)


def test_duplicate_popular_items_are_refused(tmp_path):
    popular = pa.table({"rank": pa.array([1, 2], pa.int32()), "item_id": ["i1", "i1"], "score": [2.0, 1.0]})
    _write_recs(tmp_path, "bad", _recs(["a"], [["i1"]], [[1.0]]), popular=popular)
    with pytest.raises(SnapshotError, match="popular_items: item_id 'i1' appears more than once"):
        load_snapshot(tmp_path)


def _edit_manifest(version_dir, change):
    path = version_dir / "manifest.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda d: (d / "manifest.json").unlink(), "no manifest.json"),
        (lambda d: (d / "manifest.json").write_text("{"), "is not valid JSON"),
        (lambda d: _edit_manifest(d, lambda m: m.pop("n")), "lacks the key 'n'"),
        (lambda d: _edit_manifest(d, lambda m: m["tables"]["user_recommendations"].update(rows=99)),
         "rows, manifest says 99"),
        (lambda d: _edit_manifest(d, lambda m: m["tables"].pop("popular_items")), "lists no table 'popular_items'"),
        (lambda d: next((d / "user_recommendations").glob("*.parquet")).unlink(), "listed in the manifest but missing"),
    ],
    ids=["no-manifest", "bad-json", "missing-key", "row-count", "missing-table", "missing-file"],
)
def test_manifest_problems_are_refused(tmp_path, break_it, message):
    version_dir = write_snapshot(tmp_path, model_version="v", n=3, user_recommendations={"a": [("i1", 1.0)]},
                                 popular_items=[("i1", 1.0)])
    break_it(version_dir)
    with pytest.raises(SnapshotError, match=message):
        load_snapshot(tmp_path)


def test_wrong_schema_is_refused(tmp_path):
    table = pa.table({"user_id": ["a"], "item_ids": pa.array([["i1"]], pa.list_(pa.string())),
                      "scores": pa.array([[1.0]], pa.list_(pa.float64()))})  # double, not float
    _write_recs(tmp_path, "bad", table)
    with pytest.raises(SnapshotError, match=r"column 'scores' is list<\w+: double>, expected list<element: float>"):
        load_snapshot(tmp_path)


def test_corrupted_file_is_refused(tmp_path):
    version_dir = write_snapshot(tmp_path, model_version="v", n=3, user_recommendations={"a": [("i1", 1.0)]},
                                 popular_items=[("i1", 1.0)])
    part = next((version_dir / "user_recommendations").glob("*.parquet"))
    part.write_bytes(part.read_bytes() + b"\0")
    with pytest.raises(SnapshotError, match="checksum .* does not match"):
        load_snapshot(tmp_path)


def test_unparseable_file_with_matching_checksum_is_refused(tmp_path):
    version_dir = write_snapshot(tmp_path, model_version="v", n=3, user_recommendations={"a": [("i1", 1.0)]},
                                 popular_items=[("i1", 1.0)])
    part = next((version_dir / "popular_items").glob("*.parquet"))
    part.write_bytes(b"not parquet at all")
    _edit_manifest(version_dir, lambda m: m["tables"]["popular_items"]["files"].update({part.name: sha256_of(part)}))
    with pytest.raises(SnapshotError, match="cannot read the snapshot .*ArrowInvalid"):
        load_snapshot(tmp_path)


def test_nothing_published_is_refused(tmp_path):
    with pytest.raises(SnapshotError, match="no LATEST file"):
        load_snapshot(tmp_path)


def test_empty_user_table_serves_popular(tmp_path):
    write_snapshot(tmp_path, model_version="v", n=2, user_recommendations={}, popular_items=[("i1", 2.0), ("i2", 1.0)])
    loaded = load_snapshot(tmp_path)
    assert loaded.user_count == 0
    assert loaded.recommend("anyone", 2)["item_ids"] == ["i1", "i2"]


# -- memory-mapped cache arrays ----------------------------------------------------------------------------------------

def test_cached_arrays_are_memory_mapped_and_answer_the_same(tmp_path, loaded, snapshot_spec):
    save_arrays(loaded, tmp_path / "entry")
    mapped = open_arrays(tmp_path / "entry", loaded.manifest.path)
    assert isinstance(mapped.users.items.base, mmap.mmap) and isinstance(mapped.users.scores.base, mmap.mmap)
    assert not mapped.users.items.flags.writeable
    assert mapped.manifest == loaded.manifest
    for user_id in list(snapshot_spec.user_recommendations) + ["nobody"]:
        assert mapped.recommend(user_id, 4, ["i2"]) == loaded.recommend(user_id, 4, ["i2"])
    for item_id in ["i1", "i2", "i9"]:
        assert mapped.similar_items(item_id, 3) == loaded.similar_items(item_id, 3)
