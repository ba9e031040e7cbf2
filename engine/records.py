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
import time

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


def now_ms() -> int:
    return int(time.time() * 1000)


class RecordFormatError(ValueError):
    """A record this version cannot read (written by an older one)."""


def _head(raw: bytes) -> tuple:
    """(start, p, upd, er, began, fin, nc), the position after the numbers, and the kind."""
    kind = raw[0]
    if kind == LEAF:
        h = _LEAF.unpack_from(raw)
        return (h[4], h[5], h[6], h[7], h[8], h[10], 0), _LEAF.size, LEAF
    if kind == PARENT:
        h = _PARENT.unpack_from(raw)
        return (h[4], h[5], h[6], h[7], h[8], h[16], h[14]), _PARENT.size, PARENT
    raise RecordFormatError(f"not a record of format {FORMAT} (kind byte {kind})")


#: An eta needs this much evidence: progress observed over this long (since
#: the node first ran), or this much progress made.  Two samples a moment
#: apart say nothing about a long job: a job at 1.8 % whose weight-100 step
#: had not started once claimed to end in 4 s.
EVIDENCE_MS = 10_000
EVIDENCE_PROGRESS = 0.05


def eta_of(p: float, upd: float, rate: float, since: float, now: float | None = None,
           tau: float | None = None) -> int | None:
    """The estimated completion time (ms) of a node at progress p whose rate of
    progress (per ms) was last sampled at upd, observed since *since*; or None.

    With *now* and *tau* (the rate's time constant, ms): a node that has not
    changed since its eta passed is not about to finish.  Its rate then takes
    one more sample, at now and of no progress, as the next change would
    give it (so the longer it stalls, the slower the rate), and the eta moves
    past now instead of lying in the past."""
    if not (rate > 0 and 0 < p < 1):  # NaN fails both
        return None
    if upd - since < EVIDENCE_MS and p < EVIDENCE_PROGRESS:
        return None
    eta = upd + (1 - p) / rate
    if now is not None and tau and now > eta:
        dt, age = now - upd, now - since
        a = max(1 - math.exp(-dt / tau), dt / age if age > 0 else 1.0)
        if a >= 1:
            return None
        eta = now + (1 - p) / (rate * (1 - a))
    if eta - upd >= MAX_ETA_MS:
        return None
    return math.floor(eta + 0.5)


#: A node past its eta by more than this share of its run so far (and at
#: least STALL_MARGIN_MIN_MS) is stalled, however recently it changed.
STALL_MARGIN_SHARE = 0.5
STALL_MARGIN_MIN_MS = 60_000
#: Statuses of nodes that are not expected to change: never stalled.
RESTING = frozenset({"waiting", "paused", "finished", "failed", "canceled"})


def stalled_since(p: float, upd: float, rate: float, began: float, fin: float, status: str | None,
                  now: float, stall_ms: float) -> float | None:
    """When a node became stalled, or None.  A node is stalled when it has run
    (it left waiting), has not ended, its status says it is not resting, and
    either nothing changed for *stall_ms*, or it is past its eta by a margin
    (STALL_MARGIN_SHARE of its run, at least STALL_MARGIN_MIN_MS).  Derived
    at read time from what the record holds: a stall costs no write."""
    if began != began or fin == fin or (p == p and p >= 1) or status in RESTING:
        return None
    if now - upd > stall_ms:
        return upd + stall_ms
    if rate > 0 and 0 < p < 1:
        eta = upd + (1 - p) / rate
        late = eta + max(STALL_MARGIN_MIN_MS, STALL_MARGIN_SHARE * (eta - began))
        if now > late:
            return late
    return None


def decode(key: str, raw: bytes, fragments: bool = False, now: float | None = None,
           tau: float | None = None, stall_ms: float | None = None) -> dict:
    """The public JSON object of node *key* from its record.

    Client-field values (and msg) are stored as JSON text: they are parsed,
    or with *fragments* kept as ``orjson.Fragment`` (for a caller that only
    serializes the result again).  *now* and *tau* (ms) let a stalled node's
    eta move on (eta_of); with *stall_ms* too, a stalled node says so
    (``_stalled``, ``_stalled_since``: stalled_since).
    """
    (start, p, upd, rate, began, fin, nc), pos, kind = _head(raw)
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
    status = None
    if slen:
        node["status"] = status = raw[pos:pos + slen].decode()
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
    if began == began:
        node["run_time"] = int(began)
    if fin != fin:  # an ended node (finished, failed, canceled) has no eta
        eta = eta_of(p, upd, rate, began if began == began else start, now, tau)
        if eta is not None:
            node["eta"] = eta
    if counts is not None:
        node["_status_counts"] = orjson.Fragment(counts) if fragments else orjson.loads(counts)
    if stall_ms and now is not None:
        since = stalled_since(p, upd, rate, began, fin, status, now, stall_ms)
        if since is not None:
            node["_stalled"] = True
            node["_stalled_since"] = int(since)
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
