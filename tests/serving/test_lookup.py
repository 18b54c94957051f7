"""Unit tests of snapshot loading, request validation and look-ups (numpy + pyarrow only, no server)."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deploy import serve
from deploy.lookup import RequestError, load_snapshot, parse_request
from deploy.snapshot import SnapshotError, set_latest, sha256_of, write_manifest
from deploy.testing import write_snapshot


@pytest.fixture(scope="module")
def loaded(snapshot_root):
    return load_snapshot(snapshot_root)


def test_arrays_are_compact_and_sorted(loaded, snapshot_spec):
    users = sorted(u.encode("utf-8") for u in snapshot_spec.user_recommendations)
    assert loaded.user_keys.dtype.kind == "S"
    assert loaded.user_keys.tolist() == users
    assert loaded.item_idx.dtype == np.int32 and loaded.scores.dtype == np.float32
    assert loaded.item_idx.shape == loaded.scores.shape == (len(users), snapshot_spec.n)
    assert sorted(loaded.item_vocab.tolist()) == ["i1", "i2", "i3", "i4", "i5", "i6"]
    assert loaded.model_version == snapshot_spec.model_version and loaded.n == snapshot_spec.n


@pytest.mark.parametrize("user_id", ["42", "u1", "u2", "zoë-7", "a"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_known_users_get_their_list(loaded, snapshot_spec, user_id, k):
    items, scores = snapshot_spec.personal(user_id, k)
    answer = loaded.recommend(user_id, k)
    assert answer == {
        "user_id": user_id,
        "item_ids": items,
        "scores": scores,
        "source": "personal",
        "model_version": snapshot_spec.model_version,
    }


@pytest.mark.parametrize("user_id", ["nobody", "4", "420", "u", "u10", "zoë", "u-empty", "\x00"])
def test_unknown_and_listless_users_get_popular(loaded, snapshot_spec, user_id):
    items, scores = snapshot_spec.popular(4)
    answer = loaded.recommend(user_id, 4)
    assert (answer["item_ids"], answer["scores"], answer["source"]) == (items, scores, "popular")


def test_popular_list_is_capped_at_n(loaded, snapshot_spec):
    assert loaded.recommend("nobody", snapshot_spec.n)["item_ids"] == snapshot_spec.popular(snapshot_spec.n)[0]


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"user_id": "42"}, ("42", 5)),            # default k is 10, capped at n
        ({"user_id": "42", "k": 3}, ("42", 3)),
        ({"user_id": "42", "k": 3.0}, ("42", 3)),  # gRPC Struct numbers arrive as doubles
        ({"user_id": "42", "k": 5}, ("42", 5)),
    ],
)
def test_parse_request_accepts(payload, expected):
    assert parse_request(payload, n=5) == expected


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"user_id": "42", "k": 0}, "k"),
        ({"user_id": "42", "k": 6}, "k"),
        ({"user_id": "42", "k": -1}, "k"),
        ({"user_id": "42", "k": 2.5}, "k"),
        ({"user_id": "42", "k": "3"}, "k"),
        ({"user_id": "42", "k": True}, "k"),
        ({"user_id": "42", "k": None}, "k"),
        ({"k": 3}, "user_id"),
        ({"user_id": 42}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": ["42"]}, "user_id"),
        ({"userId": "42"}, "userId"),
        ("42", "jsonData"),
        (np.array([1.0]), "jsonData"),
    ],
)
def test_parse_request_rejects_naming_the_field(payload, field):
    with pytest.raises(RequestError, match=field):
        parse_request(payload, n=5)


def test_k_out_of_range_message_states_the_range():
    with pytest.raises(RequestError, match=r"k must be between 1 and 5, got 9"):
        parse_request({"user_id": "42", "k": 9}, n=5)


def _write_recs(root, version, table, *, n=3):
    """A snapshot whose user_recommendations table is ``table`` as given (to build broken ones)."""
    version_dir = root / version
    (version_dir / "user_recommendations").mkdir(parents=True)
    (version_dir / "popular_items").mkdir(parents=True)
    pq.write_table(table, version_dir / "user_recommendations" / "part-0.parquet")
    popular = pa.table({"rank": pa.array([1], pa.int32()), "item_id": ["i1"], "score": [1.0]})
    pq.write_table(popular, version_dir / "popular_items" / "part-0.parquet")
    write_manifest(version_dir, model_version=version, n=n)
    set_latest(root, version)


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
        (_recs(["a"], [["i1", "i2"]], [[1.0]]), "'a' has 2 item_ids but 1 scores"),
        (_recs(["a"], [["i1", "i2", "i3", "i4"]], [[4.0, 3.0, 2.0, 1.0]]), "more than the manifest's n=3"),
        (_recs(["a", None], [["i1"], ["i2"]], [[1.0], [1.0]]), "'user_id' holds 1 null"),
        (_recs(["a"], [["i1", None]], [[1.0, 0.5]]), "null elements"),
    ],
    ids=["duplicate-user", "length-mismatch", "longer-than-n", "null-user", "null-item"],
)
def test_inconsistent_tables_are_refused(tmp_path, table, message):
    _write_recs(tmp_path, "bad", table)
    with pytest.raises(SnapshotError, match=message):
        load_snapshot(tmp_path)


def test_corrupted_file_is_refused(tmp_path, snapshot_spec):
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
    manifest = json.loads((version_dir / "manifest.json").read_text())
    manifest["tables"]["popular_items"]["files"][part.name] = sha256_of(part)
    (version_dir / "manifest.json").write_text(json.dumps(manifest))
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


def test_serve_builds_the_seldon_command(tmp_path):
    args = serve.parse_args(["--snapshot-root", str(tmp_path), "--http-port", "9100", "--workers", "3",
                             "--threads", "1", "--grpc-workers", "2"])
    command, env = serve.build_command(args)
    assert command[0].endswith("/seldon-core-microservice")
    assert command[1:4] == ["deploy.recommender_service.RecommenderService", "--service-type", "MODEL"]
    flags = dict(zip(command[4::2], command[5::2]))
    assert json.loads(flags["--parameters"]) == [
        {"name": "snapshot_root", "value": str(tmp_path.resolve()), "type": "STRING"}
    ]
    assert (flags["--http-port"], flags["--workers"], flags["--threads"], flags["--grpc-workers"]) == ("9100", "3", "1", "2")
    assert str(serve.REPO_ROOT) in env["PYTHONPATH"].split(":")


def test_serve_print_command(tmp_path, capsys):
    serve.main(["--snapshot-root", str(tmp_path), "--print-command"])
    printed = shlex.split(capsys.readouterr().out)
    assert printed[0] == str(Path(sys.executable).parent / "seldon-core-microservice")
    assert printed[1] == serve.INTERFACE
