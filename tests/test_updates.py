"""Validation of one update, before anything reaches Redis."""
import math
import struct

import msgpack
import pytest

from sca_progress.engine import InvalidUpdate, Limits
from sca_progress.engine.updates import encode_update, path_bytes

L = Limits()


def code(key, fields):
    with pytest.raises(InvalidUpdate) as e:
        encode_update(key, fields, L)
    return e.value.code


def entry(key, fields):
    """encode_update's entry, read back as check_update.lua reads it."""
    root, enc = encode_update(key, fields, L)
    path, pos = [], 1
    for _ in range(enc[0] + 1):  # the ancestors below the root, then the key
        path.append(enc[pos + 1:pos + 1 + enc[pos]])
        pos += 1 + enc[pos]
    key = path[-1]
    assert path == [key[:len(p)] for p in path] and all(key[len(p)] == ord(".") for p in path[:-1])
    ts, progress, slots, slen = struct.unpack_from("<ddBH", enc, pos)
    pos += 19
    status = enc[pos:pos + slen]
    pos += slen
    (mlen,) = struct.unpack_from("<I", enc, pos)
    msg = enc[pos + 4:pos + 4 + mlen]
    pos += 4 + mlen
    (xlen,) = struct.unpack_from("<I", enc, pos)
    extra = msgpack.unpackb(enc[pos + 4:pos + 4 + xlen], raw=True) if xlen else None
    assert pos + 4 + xlen == len(enc)
    return root, key, ts, progress, slots, status, msg, extra


def test_encodes_the_script_entry():
    root, key, ts, progress, slots, status, msg, extra = entry(
        "_p.j.a.b", {"progress": 0.5, "msg": "hi", "status": "running", "extra": [1, {"x": None}], "weight": 10,
                     "ts": 7})
    # the key relative to the root; status as text, msg and the rest as JSON text
    assert (root, key, ts, progress) == ("_p.j", b"a.b", 7, 0.5)
    assert slots == 1 + 3 * 1 + 9 and status == b"running" and msg == b'"hi"'
    assert extra == [b"extra", b'[1,{"x":null}]', b"weight", b"10"]
    root, key, ts, progress, slots, status, msg, extra = entry("_p.j", {})
    assert key == b"" and math.isnan(ts) and progress == -1 and slots == 0 and extra is None


def test_paths_name_every_ancestor_below_the_root():
    assert path_bytes("") == b"\x00\x00"
    assert path_bytes("a") == b"\x00\x01a"
    assert path_bytes("ab.c.de") == b"\x02\x02ab\x04ab.c\x07ab.c.de"


def test_null_removes():
    _, _, _, progress, slots, _, _, extra = entry("_p.j.a", {"msg": None, "progress": None, "status": None,
                                                             "name": None})
    assert progress == -2 and slots == 2 + 3 * 2 + 9 and extra == [b"name", True]


def nested(levels: int) -> list:
    """An array nested *levels* deep ([] is one level)."""
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize("fields, expected", [
    ({"progress": 1.5}, "bad-progress"), ({"progress": -0.1}, "bad-progress"),
    ({"progress": math.nan}, "bad-progress"), ({"progress": math.inf}, "bad-progress"),
    ({"progress": "0.5"}, "bad-progress"), ({"progress": True}, "bad-progress"),
    ({"weight": -1}, "bad-weight"), ({"weight": 0.0001}, "bad-weight"), ({"weight": 2e6}, "bad-weight"),
    ({"weight": "1"}, "bad-weight"), ({"weight": math.nan}, "bad-weight"),
    ({"status": 3}, "bad-type"), ({"status": ""}, "bad-status"), ({"status": "x" * 65}, "bad-status"),
    ({"msg": 5}, "bad-type"), ({"name": ["x"]}, "bad-type"),
    ({"_secret": 1}, "reserved-field"), ({"start_time": 1}, "reserved-field"), ({"eta": 1}, "reserved-field"),
    ({"tasks": []}, "reserved-field"), ({"key": "x"}, "reserved-field"), ({"update_time": 1}, "reserved-field"),
    ({"end_time": 1}, "reserved-field"),
    ({"run_time": 1}, "reserved-field"),
    ({"ts": -1}, "bad-ts"), ({"ts": "1"}, "bad-ts"), ({"ts": math.inf}, "bad-ts"),
    ({"x" * 65: 1}, "bad-field-name"), ({"": 1}, "bad-field-name"),
    ({"big": 2 ** 70}, "bad-value"), ({"long": "x" * 9000}, "value-too-long"),
    ({"deep": nested(33)}, "value-too-deep"), ({"deep": {"a": [{"b": [0] * 3}] * 2, "c": nested(300)}}, "value-too-deep"),
    ({f"f{i}": i for i in range(65)}, "too-many-fields"),
])
def test_refused(fields, expected):
    assert code("_p.j.a", fields) == expected


def test_keys():
    assert code("_p", {"progress": 1}) == "namespace-key"
    assert code("a..b", {}) == "bad-key"
    assert code("_p.j", []) == "bad-body"


def test_accepted_edges():
    for fields in ({"progress": 0}, {"progress": 1}, {"weight": 0}, {"weight": 0.001}, {"weight": 1e6},
                   {"status": "x" * 64}, {f"f{i}": i for i in range(64)}, {"ts": 0}, {},
                   {"deep": nested(32)}, {"deep": {"a": [{"b": {"c": [1, [2]]}}]}}):
        encode_update("_p.j.a", fields, L)
