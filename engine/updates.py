"""Validating one update and encoding it for apply_updates.lua.

An update is a node key and a JSON object of fields:

* ``progress``  number in [0, 1]
* ``weight``    0, or a number in [0.001, 1e6]; default 1 (kept in 1/1000 units)
* ``status``, ``msg``, ``name``  strings
* ``ts``        optional producer timestamp (ms): an update older than the
                node's last applied ``ts`` is ignored; one more than a day
                ahead of the server's clock is refused (a ts in µs, or 1e300,
                would make every later true ts stale)
* any other name (not starting with ``_``, not a server field) with any JSON
  value; ``null`` removes the field.

Everything is checked here before anything reaches Redis, so one bad update
gets its own error and never touches storage.
"""
from __future__ import annotations

import math
import struct
import time
from collections.abc import Mapping
from functools import lru_cache, partial

import msgpack
import orjson

from .errors import invalid as bad
from .keys import check_key, tree_root
from .limits import MAX_WEIGHT, MIN_POSITIVE_WEIGHT, Limits

#: Fields the server owns; clients may not set them.  ``key`` and ``ts`` are
#: not stored as fields: ``key`` names the node, ``ts`` guards the update.
SERVER_FIELDS = frozenset({"key", "start_time", "update_time", "end_time", "run_time", "eta", "tasks"})
_NUMBER = (int, float)
#: How far ahead of the server's clock a ts may be (producers' clocks drift).
TS_AHEAD_MS = 86_400_000
_CONTAINERS = (list, dict)
dumps = orjson.dumps


#: One update for apply_updates.lua, after its position in the call (uint32):
#:   path (path_bytes)    the key's ancestors below the root and the key itself,
#:                        relative to the tree root
#:   ts, progress         doubles: ts NaN when absent; progress -1 absent, -2 null
#:   slots                status + 3 * msg + 9 * extra: status and msg 0 absent,
#:                        1 set, 2 null; extra 0 absent, 1 present
#:   status (uint16 length, raw text), msg (uint32 length, JSON text),
#:   extra (uint32 length, msgpack [name, JSON text or true (null), ...])
_NUMBERS = struct.Struct("<ddBH")
_LEN = struct.Struct("<I")
_NAN = float("nan")
_pack = partial(msgpack.packb, use_bin_type=False)



@lru_cache(maxsize=65536)
def path_bytes(rel: str) -> bytes:
    """The path of a key relative to its tree root as apply_updates.lua reads
    it: the number of its ancestors below the root (uint8), then each of them
    root side first and the key itself, each a uint8 length and its bytes
    ('a.b.c' -> 2, 'a', 'a.b', 'a.b.c'; the root itself, '', is 0 and '').
    The script splits no key: it takes these prefixes as they are."""
    raw = rel.encode()
    out = [b""]
    dot = raw.find(b".")
    while dot >= 0:
        out.append(bytes((dot,)) + raw[:dot])
        dot = raw.find(b".", dot + 1)
    out[0] = bytes((len(out) - 1,))
    out.append(bytes((len(raw),)) + raw)
    return b"".join(out)


def _depth(value) -> int:
    """How deep arrays and objects nest in *value* (1: a flat one)."""
    deepest, level = 0, [value]
    while level:
        deepest += 1
        level = [v for c in level for v in (c.values() if type(c) is dict else c) if type(v) in _CONTAINERS]
    return deepest

def _shown(value) -> str:
    """A refused value as the client wrote it (JSON), cut short."""
    if type(value) is float and not math.isfinite(value):
        return repr(value)
    try:
        text = dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def encode_update(key: str, fields: Mapping, limits: Limits) -> tuple[str, bytes]:
    """Check one update; return its tree root and its entry for apply_updates.lua
    (see _HEAD above: everything but the position in the call).

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
    ts, progress, status, msg = _NAN, -1.0, b"", b""
    s_state = m_state = 0
    extra = None
    count = 0
    for name, value in fields.items():
        if name == "progress":
            if value is None:
                progress = -2.0
            elif type(value) not in _NUMBER or not 0 <= value <= 1:  # NaN fails
                raise bad("bad-progress", f"progress must be a number from 0 to 1, not {_shown(value)}")
            else:
                progress = value + 0.0  # -0.0 is 0
        elif name == "status":
            if value is None:
                s_state = 2
            elif type(value) is not str:
                raise bad("bad-type", "status must be a string")
            elif not 0 < len(value) <= limits.max_status_chars:
                raise bad("bad-status", f"status must be 1-{limits.max_status_chars} characters")
            elif value == "none":  # reads count and list nodes without a status as 'none'
                raise bad("bad-status", "status 'none' is reserved: it names nodes without a status "
                                        "(send null to remove a node's status)")
            else:
                s_state, status = 1, value.encode()
        elif name == "msg":
            if value is None:
                m_state = 2
            elif type(value) is not str:
                raise bad("bad-type", "msg must be a string")
            else:
                msg = dumps(value)
                if len(msg) > limits.max_value_bytes:
                    raise bad("value-too-long", f"field 'msg' is longer than {limits.max_value_bytes} bytes as JSON")
                m_state = 1
        elif name == "ts":
            if value is not None:
                if type(value) not in _NUMBER or not math.isfinite(value) or value < 0:
                    raise bad("bad-ts", "ts must be a non-negative number of milliseconds")
                if value > time.time() * 1000 + TS_AHEAD_MS:
                    # Applied, it would make every later update with a true ts stale.
                    raise bad("bad-ts", "ts is more than a day ahead of the server's clock: it must be "
                                        "milliseconds since the epoch (or a counter)")
                ts = value
            continue
        else:
            if type(name) is not str or not name or len(name) > limits.max_field_name_chars:
                raise bad("bad-field-name", f"field names are 1-{limits.max_field_name_chars} characters")
            if name[0] == "_" or name in SERVER_FIELDS:
                raise bad("reserved-field", f"field {name!r} is reserved: names starting with '_' and "
                                            f"{', '.join(sorted(SERVER_FIELDS))} belong to the server")
            if extra is None:
                extra = []
            extra.append(name)
            if value is None:
                extra.append(True)
            else:
                if name == "weight":
                    if type(value) not in _NUMBER or not (value == 0 or MIN_POSITIVE_WEIGHT <= value <= MAX_WEIGHT):
                        raise bad("bad-weight", f"weight must be 0 or a number from {MIN_POSITIVE_WEIGHT} "
                                                f"to {MAX_WEIGHT}, not {_shown(value)}")
                elif name == "name" and type(value) is not str:
                    raise bad("bad-type", "name must be a string")
                if type(value) in _CONTAINERS and _depth(value) > limits.max_value_depth:
                    raise bad("value-too-deep", f"field {name!r} nests arrays and objects more than "
                                                f"{limits.max_value_depth} levels deep")
                try:
                    text = dumps(value)
                except (TypeError, orjson.JSONEncodeError) as e:
                    raise bad("bad-value", f"field {name!r} is not a JSON value: {e}") from None
                if len(text) > limits.max_value_bytes:
                    raise bad("value-too-long", f"field {name!r} is longer than {limits.max_value_bytes} bytes as JSON")
                extra.append(text)
        count += 1
    if count > limits.max_fields_per_update:
        raise bad("too-many-fields", f"an update may hold at most {limits.max_fields_per_update} fields")
    packed_extra = b"" if extra is None else _pack(extra)
    return root, b"".join((
        path_bytes("" if key == root else key[len(root) + 1:]),
        _NUMBERS.pack(ts, progress, s_state + 3 * m_state + (9 if extra is not None else 0), len(status)), status,
        _LEN.pack(len(msg)), msg, _LEN.pack(len(packed_extra)), packed_extra))
