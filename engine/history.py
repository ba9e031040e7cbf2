"""Progress history: what lua/include/history.lua samples, read back, and
the trend eta drawn from it.

A node's history is its progress at ``start_time + j × step`` for j = 0, 1, …:
the step starts at the engine's ``history_step_ms`` and doubles (every
other sample dropped) whenever the samples would pass ``history_samples``,
so at most that many span the node's whole life.  A sample is written when
an update crosses its time; the node's current progress (at its
update_time) is the point after the last one.

The trend eta.  The live ``eta`` extrapolates an exponentially weighted
rate with a time constant of ``--eta-window`` (records.py): it follows a
change of pace within minutes, and so it also swings with a job whose
progress comes in bursts.  The trend fits a straight line, by least
squares, through the history's points of the last half of the node's life
(at least its last 4 samples), the current point and, for a node below 1,
its progress still held now; its eta carries the progress now forward at
that line's slope.  Over a long job it is the steadier of the two.
"""
from __future__ import annotations

import struct

from .records import now_ms

_STEP = struct.Struct("<I")
#: The sample code of "no progress yet".
NONE_CODE = 65535
#: Fewest points the trend is drawn through.
TREND_MIN_POINTS = 3


def decode(raw: bytes | None) -> tuple[int, list[float | None]] | None:
    """(step in ms, samples) of a stored history, or None when there is none."""
    if not raw or len(raw) < _STEP.size:
        return None
    (step,) = _STEP.unpack_from(raw)
    count = (len(raw) - _STEP.size) // 2
    codes = struct.unpack_from(f"<{count}H", raw, _STEP.size)
    return step, [None if c == NONE_CODE else round(c / 65534, 4) for c in codes]


def points(node: dict, step: int, samples: list) -> list[list]:
    """[[time ms, progress], …]: the samples, then the node's current point."""
    start = node["start_time"]
    out = [[start + j * step, p] for j, p in enumerate(samples)]
    upd, p = node.get("update_time"), node.get("progress")
    if upd is not None and (not out or upd > out[-1][0]):
        out.append([upd, p])
    return out


def trend(pts: list[list], start: int, now: int | None = None) -> tuple[float | None, int | None]:
    """(rate per second, eta in ms) of the straight line through the points of
    the last half of the node's life (at least the last 4 samples and the
    current point); (None, None) when there are too few points, no forward
    pace, or no progress now.  A node below 1 holds its progress from its
    last point until *now*, so that is a point too: a node that stalls
    flattens its own line.  The eta carries the progress of the last point
    forward at the line's slope, so it never lies before it (or *now*).  A
    node at 1 has no eta."""
    if not pts or pts[-1][1] is None:
        return None, None
    known = [(t, p) for t, p in pts if p is not None]
    if now is not None and known[-1][1] < 1 and now > known[-1][0]:
        known.append((now, known[-1][1]))
    if len(known) < TREND_MIN_POINTS:
        return None, None
    last_t, last_p = known[-1]
    half = start + (last_t - start) / 2
    window = [x for x in known if x[0] >= half]
    if len(window) < 5:
        window = known[-5:]
    if len(window) < TREND_MIN_POINTS:
        return None, None
    n = len(window)
    mt = sum(t for t, _ in window) / n
    mp = sum(p for _, p in window) / n
    var = sum((t - mt) ** 2 for t, _ in window)
    if var <= 0:
        return None, None
    slope = sum((t - mt) * (p - mp) for t, p in window) / var  # progress per ms
    if slope <= 0:
        return (0.0 if slope == 0 else round(slope * 1000, 9)), None
    if last_p >= 1:
        return round(slope * 1000, 9), None
    return round(slope * 1000, 9), int(last_t + (1 - last_p) / slope)


#: Statuses after which a node is not expected to move: no trend eta.
_ENDED = frozenset(("finished", "failed", "canceled"))


def summary(node: dict, step: int, samples: list, now: int | None = None) -> dict:
    """The ``_history`` of a node: step, samples (sample j at start_time + j ×
    step_ms) and the trend (as of *now*)."""
    rate, eta = trend(points(node, step, samples), node["start_time"], now)
    if node.get("status") in _ENDED:
        eta = None
    return {"step_ms": step, "samples": samples, "trend_rate": rate, "trend_eta": eta}


async def attach(engine, loaded: list) -> None:
    """Give every tree node of *loaded* (read.py's _Loaded) its ``_history``
    (absent when it has none yet), in one round trip."""
    nodes = [x for x in loaded if x.root is not None and x.id]
    if not nodes or not engine.history_samples:  # off: what an earlier run wrote is not shown, frozen
        return
    async with engine.redis.pipeline(transaction=False) as pipe:
        for x in nodes:
            pipe.get(engine.keys.history(x.root, int(x.id)))
        replies = await pipe.execute()
    now = now_ms()
    for x, raw in zip(nodes, replies):
        h = decode(raw)
        if h is not None:
            x.node["_history"] = summary(x.node, *h, now)
