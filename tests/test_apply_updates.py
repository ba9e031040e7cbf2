"""apply_updates.lua called directly: every documented error, raised before any write."""
import struct

import msgpack
import pytest

from sca_progress.engine import InvalidUpdate
from sca_progress.engine.scripts import pack, unpack
from sca_progress.engine.updates import path_bytes


async def call(engine, keys, packed_arg, now=1000, tau=60000, max_fields=128, events=0, mode=0, max_nodes=0):
    (reply,) = await engine.scripts.run(
        engine.redis, [("apply_updates", keys, [now, tau, max_fields, packed_arg, events, "", max_nodes, mode])])
    return reply


ABSENT, NULL = object(), None


def up(seq, key, ts=ABSENT, progress=ABSENT, status=ABSENT, msg=ABSENT, extra=ABSENT, slots=None):
    """One update as check_update.lua reads it (written here by hand, not by engine.updates)."""
    def state(v):
        return 0 if v is ABSENT else 2 if v is NULL else 1
    p = -1.0 if progress is ABSENT else -2.0 if progress is NULL else progress
    st = status.encode() if isinstance(status, str) else b""
    m = msg if isinstance(msg, bytes) else b""
    x = b"" if extra is ABSENT else extra if isinstance(extra, bytes) else pack(extra)
    if slots is None:
        slots = state(status) + 3 * state(msg) + (0 if extra is ABSENT else 9)
    return (struct.pack("<I", seq) + path_bytes(key)
            + struct.pack("<ddBH", float("nan") if ts is ABSENT else ts, p, slots, len(st)) + st
            + struct.pack("<I", len(m)) + m + struct.pack("<I", len(x)) + x)


def batch(*trees):
    """The packed batch: per tree its number of updates, then the updates."""
    return b"".join(struct.pack("<I", len(ups)) + b"".join(ups) for ups in trees)


async def keys_of(engine, prefix):
    """The prefix's keys, but its record-format and history-settings markers (written by Engine.start)."""
    markers = {f"{prefix}:format".encode(), f"{prefix}:history".encode()}
    return sorted([k async for k in engine.redis.scan_iter(match=f"{prefix}:*") if k not in markers])


@pytest.mark.parametrize("arg, code", [
    (b"\x01\x00", "bad-batch"),  # truncated count
    (batch([up(1, "a")]) + b"x", "bad-batch"),  # more than KEYS
    (batch([up(1, "a")])[:-3], "bad-batch"),  # truncated update
    (batch([up(1, "a", slots=18)]), "bad-batch"),  # no such slot states
    (batch([up(1, "a", extra=b"\xc1")]), "bad-batch"),  # extra not msgpack
    (batch([up(1, "a", extra=["msg"])]), "bad-batch"),  # odd field list
    (batch([up(1, "a", extra=[5, b'"x"'])]), "bad-batch"),  # name not a string
    (batch([up(1, "a", extra=["x", 5])]), "bad-batch"),  # value not JSON text
    (batch([up(1, "a..b")]), "bad-key"),
    (batch([up(1, "a.")]), "bad-key"),
    (batch([up(1, ".a")]), "bad-key"),
    (batch([up(1, "a", progress=1.5)]), "bad-progress"),
    (batch([up(1, "a", progress=-0.1)]), "bad-progress"),
    (batch([up(1, "a", progress=float("nan"))]), "bad-progress"),
    (batch([up(1, "a", extra=["weight", b"-1"])]), "bad-weight"),
    (batch([up(1, "a", extra=["weight", b"0.0001"])]), "bad-weight"),
    (batch([up(1, "a", extra=["weight", b"2e6"])]), "bad-weight"),
    (batch([up(1, "a", extra=["weight", b"inf"])]), "bad-weight"),
    (batch([up(1, "a", extra=["weight", b'"1"'])]), "bad-weight"),
    (batch([up(1, "a", status="")]), "bad-status"),
    (batch([up(1, "a", msg=b"not json")]), "bad-value"),
    (batch([up(1, "a", msg=b"")]), "bad-value"),
    (batch([up(1, "a", extra=["_x", b"1"])]), "reserved-field"),
    (batch([up(1, "a", extra=["start_time", b"1"])]), "reserved-field"),
    (batch([up(1, "a", extra=["run_time", b"1"])]), "reserved-field"),
    (batch([up(1, "a", extra=["ts", b"1"])]), "reserved-field"),
    (batch([up(1, "a", extra=["key", b'"x"'])]), "reserved-field"),
    (batch([up(1, "a", extra=["progress", b"0.5"])]), "reserved-field"),  # it has its own slot
    (batch([up(1, "a", extra=["status", b'"x"'])]), "reserved-field"),
])
async def test_documented_errors(engine, prefix, arg, code):
    reply = await call(engine, [engine.keys.records("_t.j")], arg)
    assert isinstance(reply, InvalidUpdate) and reply.code == code, reply
    assert await keys_of(engine, prefix) == []


async def test_validates_every_tree_before_the_first_write(engine, prefix):
    keys = [engine.keys.records("_t.j"), engine.keys.records("_t.k")]
    reply = await call(engine, keys, batch([up(1, "a", progress=0.5)], [up(2, "a", progress=5)]))
    assert reply.code == "bad-progress"
    assert await keys_of(engine, prefix) == []


async def test_a_record_of_another_format_is_refused(engine, redis_client):
    """Format 1 records (18 doubles first) are not misread: the call fails, naming the node."""
    key = engine.keys.records("_t.j")
    await redis_client.hset(key, "", b"\x00" * 150)
    reply = await call(engine, [key], batch([up(1, "a", progress=0.5)]))
    assert reply.code == "script-failed" and "bad-record" in reply.message
    assert await redis_client.hkeys(key) == [b""]


async def test_statuses_and_records(engine):
    keys = [engine.keys.records("_t.j")]
    ups = [up(1, "a", ts=10, progress=0.5, extra=["f1", b"1"]),
           up(2, "a", ts=5, progress=0.1),  # older ts: stale
           up(3, "b", extra=["f1", b"1", "f2", b"2"])]  # too many fields with max 1
    statuses, changed, events, created = unpack(await call(engine, keys, batch(ups), max_fields=1, mode=2))
    assert statuses == [1, 0, 2] and created == [1] and events == []
    assert sorted(changed[0][0::2]) == [b"", b"a"]  # the refused update created nothing
    assert not await engine.redis.hexists(keys[0], "b")
    assert (await engine.read("_t.j"))["_children_total"] == 1


async def test_a_full_tree_refuses_new_nodes_and_keeps_updating_old_ones(engine, redis_client):
    keys = [engine.keys.records("_t.j")]
    statuses, *_ = unpack(await call(engine, keys, batch([up(1, "a.b", progress=0.5)]), max_nodes=3))
    assert statuses == [1]
    before = await redis_client.hgetall(keys[0])
    statuses, changed, _, created = unpack(await call(
        engine, keys, batch([up(1, "a.c", progress=1), up(2, "x", progress=1)]), max_nodes=3, mode=2))
    assert statuses == [3, 3] and changed == [[]] and created == []
    assert await redis_client.hgetall(keys[0]) == before  # nothing changed
    statuses, *_ = unpack(await call(engine, keys, batch([up(1, "a.b", progress=1)]), max_nodes=3))
    assert statuses == [1]


async def test_returns_only_what_the_mode_asks(engine):
    keys = [engine.keys.records("_t.j")]
    ups = [up(1, "a.b", progress=0.5)]
    for mode, want in ((0, []), (1, [b"a.b"]), (2, [b"", b"a", b"a.b"])):
        _, changed, _, _ = msgpack.unpackb(await call(engine, keys, batch(ups), mode=mode), raw=True)
        assert sorted(changed[0][0::2]) == want


async def test_events_go_to_the_outbox_when_asked(engine):
    keys = [engine.keys.records("_t.j")]
    ups = [up(1, "a", status="finished")]
    _, _, events, _ = unpack(await call(engine, keys, batch(ups), now=5000, events=1))
    assert events[0] == b"_t.j.a@5000" and msgpack.unpackb(events[1]) == ["_t.j.a", "finished", 5000, 5000, 5000]
    assert await engine.redis.hgetall(engine.keys.tree("_t.j") + "out") == {events[0]: events[1]}


async def test_sums_stay_exact_after_heavy_children_leave(engine):
    """Children of weight 1e6 entering and leaving a parent of light ones must not
    leave their rounding errors in its running sum (found by the property test)."""
    await engine.apply([(f"_x.j.light{i}", {"weight": 0.001, "progress": p})
                        for i, p in enumerate((0.5, 1, 0.5))])
    for round_ in range(20):
        heavy = f"_x.j.heavy{round_}"
        await engine.apply([(heavy, {"weight": 1e6, "progress": 0.1234567891234 + round_ / 97})])
        await engine.apply([(heavy, {"progress": 0.9876543219876 - round_ / 89})])
        await engine.delete(heavy)
    assert abs((await engine.read("_x.j"))["progress"] - 2 / 3) <= 1e-12
