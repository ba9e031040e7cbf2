"""Decoding node records into their public JSON view.

A node is stored as one packed record (lua/include/record_format.lua is the
reference; this module mirrors it).  Scripts return records as they are, and
the JSON object of a node is built here, in C-backed struct/msgpack/orjson
calls, only when someone needs it:

    {"key", "start_time", "update_time", <client fields>, "progress",
     "end_time", "eta", "_status_counts"}

``progress``, ``end_time`` and ``eta`` are absent when the node has none;
``_status_counts`` is on parents only.
"""
from __future__ import annotations

import struct

import msgpack
import orjson

#: 18 doubles (id, pid, n, nc, wm, p, own, sw, swp, ts, start, upd, fin, eP,
#: eT, eR, eta, swpc) and the status length; then status text, a 4-byte length and
#: the client-field map, then the status counts map (rest of the record).
_HEAD = struct.Struct("<18dH")
_LEN = struct.Struct("<I")


def decode(key: str, raw: bytes, fragments: bool = False) -> dict:
    """The public JSON object of node *key* from its record.

    Client-field values are stored as JSON text: they are parsed, or with
    *fragments* kept as ``orjson.Fragment`` (for a caller that only
    serializes the result again).
    """
    head = _HEAD.unpack_from(raw)
    pos = _HEAD.size + head[18]
    (flen,) = _LEN.unpack_from(raw, pos)
    pos += _LEN.size
    node = {"key": key, "start_time": int(head[10]), "update_time": int(head[11])}
    if flen:
        wrap = orjson.Fragment if fragments else orjson.loads
        for name, text in msgpack.unpackb(raw[pos:pos + flen], raw=True).items():
            node[name.decode()] = wrap(text)
    p, fin, eta = head[5], head[12], head[16]
    if p == p:
        node["progress"] = p
    if fin == fin:
        node["end_time"] = int(fin)
    if eta == eta:
        node["eta"] = int(eta)
    if head[3] > 0:
        counts = raw[pos + flen:]
        node["_status_counts"] = (
            {k.decode(): v for k, v in msgpack.unpackb(counts, raw=True).items()} if counts else {})
    return node


def record_update_time(raw: bytes) -> int:
    """The update_time (ms) of a record, without decoding the rest."""
    return int(_HEAD.unpack_from(raw)[11])
