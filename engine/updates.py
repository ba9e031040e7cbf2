"""Validating one update and encoding it for apply_updates.lua.

An update is a node key and a JSON object of fields:

* ``progress``  number in [0, 1]
* ``weight``    0, or a number in [0.001, 1e6]; default 1 (kept in 1/1000 units)
* ``status``, ``msg``, ``name``  strings
* ``ts``        optional producer timestamp (ms): an update older than the
                node's last applied ``ts`` is ignored
* any other name (not starting with ``_``, not a server field) with any JSON
  value; ``null`` removes the field.

Everything is checked here before anything reaches Redis, so one bad update
gets its own error and never touches storage.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import orjson

from .errors import invalid as bad
from .keys import check_key, tree_root
from .limits import MAX_WEIGHT, MIN_POSITIVE_WEIGHT, Limits

#: Fields the server owns; clients may not set them.  ``key`` and ``ts`` are
#: not stored as fields: ``key`` names the node, ``ts`` guards the update.
SERVER_FIELDS = frozenset({"key", "start_time", "update_time", "end_time", "eta", "tasks"})
_STRING_FIELDS = frozenset({"status", "msg", "name"})
_NUMBER = (int, float)
dumps = orjson.dumps


def encode_update(key: str, fields: Mapping, limits: Limits) -> tuple[str, list]:
    """Check one update; return its tree root and ``[0, key, ts|False, name, json, ...]``.

    The leading 0 is a slot for the update's position in its script call.
    *fields* must not contain ``key`` (batch callers take it out first).
    Raises InvalidUpdate naming what is wrong.  This runs for every update
    the service ingests, so it is written for speed: one pass, no helpers.
    """
    check_key(key)
    root = tree_root(key)
    if root is None:
        raise bad("namespace-key", f"{key!r} is a namespace (every segment starts with '_'); "
                                   f"post to a key below it, such as {key}.job1")
    if type(fields) is not dict and not isinstance(fields, Mapping):
        raise bad("bad-body", "an update must be a JSON object")
    if len(fields) > limits.max_fields_per_update + 1:
        raise bad("too-many-fields", f"an update may hold at most {limits.max_fields_per_update} fields")
    out = [0, key, False]
    append = out.append
    for name, value in fields.items():
        if type(name) is not str or not name or len(name) > limits.max_field_name_chars:
            raise bad("bad-field-name", f"field names are 1-{limits.max_field_name_chars} characters")
        if name == "progress":
            if value is not None and (type(value) not in _NUMBER or not 0 <= value <= 1):  # NaN fails
                raise bad("bad-progress", f"progress must be a number from 0 to 1, not {value!r}")
        elif name == "ts":
            if value is not None:
                if type(value) not in _NUMBER or not math.isfinite(value) or value < 0:
                    raise bad("bad-ts", "ts must be a non-negative number of milliseconds")
                out[2] = value
            continue
        elif name[0] == "_" or name in SERVER_FIELDS:
            raise bad("reserved-field", f"field {name!r} is reserved: names starting with '_' and "
                                        f"{', '.join(sorted(SERVER_FIELDS))} belong to the server")
        elif value is None:
            pass
        elif name == "weight":
            if type(value) not in _NUMBER or not (
                value == 0 or MIN_POSITIVE_WEIGHT <= value <= MAX_WEIGHT
            ):
                raise bad("bad-weight", f"weight must be 0 or a number from {MIN_POSITIVE_WEIGHT} "
                                        f"to {MAX_WEIGHT}, not {value!r}")
        elif name in _STRING_FIELDS:
            if type(value) is not str:
                raise bad("bad-type", f"{name} must be a string")
            if name == "status" and not 0 < len(value) <= limits.max_status_chars:
                raise bad("bad-status", f"status must be 1-{limits.max_status_chars} characters")
        append(name)
        if value is None:
            append(b"")
            continue
        try:
            text = dumps(value)
        except (TypeError, orjson.JSONEncodeError) as e:
            raise bad("bad-value", f"field {name!r} is not a JSON value: {e}") from None
        if len(text) > limits.max_value_bytes:
            raise bad("value-too-long", f"field {name!r} is longer than {limits.max_value_bytes} bytes as JSON")
        append(text)
    if len(out) > 2 * limits.max_fields_per_update + 3:
        raise bad("too-many-fields", f"an update may hold at most {limits.max_fields_per_update} fields")
    return root, out
