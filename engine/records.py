"""Decoding node records into their public JSON view.

A node is stored as one packed record (lua/include/record.lua is the
reference; this module mirrors it).  Scripts return records as they are, and
the JSON object of a node is built here, in C-backed struct/msgpack/orjson
calls, only when someone needs it:

    {"key", "start_time", "update_time", "status", "msg", <client fields>,
     "progress", "end_time", "eta", "_status_counts"}

``status``, ``msg``, ``progress``, ``end_time`` and ``eta`` are absent when
the node has none; ``_status_counts`` is on parents only.  ``eta`` is derived
here from the node's rate of progress (see lua/include/rollup.lua).
"""
from __future__ import annotations

import math
import struct

import msgpack
import orjson

#: The record format this code reads and the scripts write.
FORMAT = 2
LEAF, PARENT = 2, 3

#: kind, id, pid, wm, start, p, upd, er (float32), began, ts, fin
_LEAF = struct.Struct("<BIIIdddfddd")
#: kind, id, pid, wm, start, p, upd, er, began, own, sw, swp, swpc, n, nc, ts, fin;
#: then the counts, the children list (parents), status, msg and fields
_PARENT = struct.Struct("<BIIIdddfdddddIIdd")
_H = struct.Struct("<H")
_I = struct.Struct("<I")
#: An eta further away than this (about ten years) is no estimate.
MAX_ETA_MS = 3.2e11


class RecordFormatError(ValueError):
    """A record this version cannot read (written by an older one)."""


def _head(raw: bytes) -> tuple:
    """(start, p, upd, er, fin, nc), the position after the numbers, and the kind."""
    kind = raw[0]
    if kind == LEAF:
        h = _LEAF.unpack_from(raw)
        return (h[4], h[5], h[6], h[7], h[10], 0), _LEAF.size, LEAF
    if kind == PARENT:
        h = _PARENT.unpack_from(raw)
        return (h[4], h[5], h[6], h[7], h[16], h[14]), _PARENT.size, PARENT
    raise RecordFormatError(f"not a record of format {FORMAT} (kind byte {kind})")


def eta_of(p: float, upd: float, rate: float) -> int | None:
    """The estimated completion time (ms) of a node at progress p whose rate of
    progress (per ms) was last sampled at upd, or None."""
    if rate > 0 and 0 < p < 1:  # NaN fails both
        left = (1 - p) / rate
        if left < MAX_ETA_MS:
            return math.floor(upd + left + 0.5)
    return None


def decode(key: str, raw: bytes, fragments: bool = False) -> dict:
    """The public JSON object of node *key* from its record.

    Client-field values (and msg) are stored as JSON text: they are parsed,
    or with *fragments* kept as ``orjson.Fragment`` (for a caller that only
    serializes the result again).
    """
    (start, p, upd, rate, fin, nc), pos, kind = _head(raw)
    counts = None
    if kind == PARENT:
        (clen,) = _I.unpack_from(raw, pos)
        pos += 4
        if nc > 0:
            counts = raw[pos:pos + clen] if clen else b"{}"
        pos += clen + 1  # and where the children are listed (wide or not)
        (klen,) = _I.unpack_from(raw, pos)
        pos += 4 + klen
    (slen,) = _H.unpack_from(raw, pos)
    pos += 2
    node = {"key": key, "start_time": int(start), "update_time": int(upd)}
    if slen:
        node["status"] = raw[pos:pos + slen].decode()
        pos += slen
    (mlen,) = _I.unpack_from(raw, pos)
    pos += 4
    wrap = orjson.Fragment if fragments else orjson.loads
    if mlen:
        node["msg"] = wrap(raw[pos:pos + mlen])
        pos += mlen
    (flen,) = _I.unpack_from(raw, pos)
    pos += 4
    if flen:
        for name, text in msgpack.unpackb(raw[pos:pos + flen], raw=True).items():
            node[name.decode()] = wrap(text)
        pos += flen
    if p == p:
        node["progress"] = p
    if fin == fin:
        node["end_time"] = int(fin)
    eta = eta_of(p, upd, rate)
    if eta is not None:
        node["eta"] = eta
    if counts is not None:
        node["_status_counts"] = orjson.Fragment(counts) if fragments else orjson.loads(counts)
    return node


def record_update_time(raw: bytes) -> int:
    """The update_time (ms) of a record, without decoding the rest."""
    return int(_head(raw)[0][2])


def keyed_records(root: str, records: list, sort: bool) -> list[tuple[str, bytes]]:
    """(full key, record) pairs from a script's flat list of keys relative to
    *root*; with *sort*, ancestors first."""
    dot = root + "."
    pairs = [(root if rel == b"" else dot + rel.decode(), rec) for rel, rec in zip(records[0::2], records[1::2])]
    if sort:
        pairs.sort(key=lambda kv: kv[0].count("."))
    return pairs
