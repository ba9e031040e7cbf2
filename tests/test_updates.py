"""Validation of one update, before anything reaches Redis."""
import math

import pytest

from sca_progress.engine import InvalidUpdate, Limits
from sca_progress.engine.updates import encode_update

L = Limits()


def code(key, fields):
    with pytest.raises(InvalidUpdate) as e:
        encode_update(key, fields, L)
    return e.value.code


def test_encodes_fields_as_json_text():
    root, enc = encode_update("_p.j.a", {"progress": 0.5, "msg": "hi", "extra": [1, {"x": None}], "ts": 7}, L)
    assert root == "_p.j"
    assert enc[:3] == [0, "_p.j.a", 7]
    pairs = dict(zip(enc[3::2], enc[4::2]))
    assert pairs == {"progress": b"0.5", "msg": b'"hi"', "extra": b'[1,{"x":null}]'}


def test_null_removes():
    _, enc = encode_update("_p.j.a", {"msg": None, "progress": None}, L)
    assert dict(zip(enc[3::2], enc[4::2])) == {"msg": b"", "progress": b""}


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
    ({"ts": -1}, "bad-ts"), ({"ts": "1"}, "bad-ts"), ({"ts": math.inf}, "bad-ts"),
    ({"x" * 65: 1}, "bad-field-name"), ({"": 1}, "bad-field-name"),
    ({"big": 2 ** 70}, "bad-value"), ({"long": "x" * 9000}, "value-too-long"),
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
                   {"status": "x" * 64}, {f"f{i}": i for i in range(64)}, {"ts": 0}, {}):
        encode_update("_p.j.a", fields, L)
