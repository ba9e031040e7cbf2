"""apply_updates.lua called directly: every documented error, raised before any write."""
import msgpack
import pytest

from sca_progress.engine import InvalidUpdate
from sca_progress.engine.scripts import pack, unpack


async def call(engine, keys, packed_arg, now=1000, tau=60000, max_fields=128, events=0):
    (reply,) = await engine.scripts.run(
        engine.redis, [("apply_updates", keys, [now, tau, max_fields, packed_arg, events])])
    return reply


def batch(*trees):
    return pack([[root, ups, 0] for root, ups in trees])


async def keys_of(engine, prefix):
    return sorted([k async for k in engine.redis.scan_iter(match=f"{prefix}:*")])


@pytest.mark.parametrize("arg, code", [
    (b"\xc1not msgpack", "bad-batch"),
    (pack([["_t.j", [], 0], ["_t.k", [], 0]]), "bad-batch"),  # two trees, one key
    (pack([["_t.other", [], 0]]), "bad-batch"),  # the tree does not match its key
    (pack([["_t.j", [], "0"]]), "bad-batch"),  # snapshot mode not a number
    (batch(("_t.j", ["not a table"])), "bad-batch"),
    (batch(("_t.j", [[1, "_t.j.a", False, "msg"]])), "bad-batch"),  # odd field list
    (batch(("_t.j", [[1, "_t.j.a", "ts", "msg", '"x"']])), "bad-batch"),  # ts not a number
    (batch(("_t.j", [[1, "_t.j.a", False, 5, '"x"']])), "bad-batch"),  # name not a string
    (batch(("_t.j", [[1, "_t.k.a", False]])), "bad-key"),  # not in the tree
    (batch(("_t.j", [[1, "_t.jj", False]])), "bad-key"),  # prefix look-alike
    (batch(("_t.j", [[1, "_t.j..a", False]])), "bad-key"),
    (batch(("_t.j", [[1, "_t.j.a.", False]])), "bad-key"),
    (batch(("_t.j", [[1, "_t.j.a", False, "progress", "1.5"]])), "bad-progress"),
    (batch(("_t.j", [[1, "_t.j.a", False, "progress", "-0.1"]])), "bad-progress"),
    (batch(("_t.j", [[1, "_t.j.a", False, "progress", "nan"]])), "bad-progress"),
    (batch(("_t.j", [[1, "_t.j.a", False, "progress", "abc"]])), "bad-progress"),
    (batch(("_t.j", [[1, "_t.j.a", False, "weight", "-1"]])), "bad-weight"),
    (batch(("_t.j", [[1, "_t.j.a", False, "weight", "0.0001"]])), "bad-weight"),
    (batch(("_t.j", [[1, "_t.j.a", False, "weight", "2e6"]])), "bad-weight"),
    (batch(("_t.j", [[1, "_t.j.a", False, "weight", "inf"]])), "bad-weight"),
    (batch(("_t.j", [[1, "_t.j.a", False, "status", "5"]])), "bad-status"),
    (batch(("_t.j", [[1, "_t.j.a", False, "status", '""']])), "bad-status"),
    (batch(("_t.j", [[1, "_t.j.a", False, "_x", "1"]])), "reserved-field"),
    (batch(("_t.j", [[1, "_t.j.a", False, "start_time", "1"]])), "reserved-field"),
    (batch(("_t.j", [[1, "_t.j.a", False, "ts", "1"]])), "reserved-field"),
    (batch(("_t.j", [[1, "_t.j.a", False, "key", '"x"']])), "reserved-field"),
])
async def test_documented_errors(engine, prefix, arg, code):
    reply = await call(engine, [engine.keys.records("_t.j")], arg)
    assert isinstance(reply, InvalidUpdate) and reply.code == code, reply
    assert await keys_of(engine, prefix) == []


async def test_validates_every_tree_before_the_first_write(engine, prefix):
    good = [[1, "_t.j.a", False, "progress", "0.5"]]
    bad = [[2, "_t.k.a", False, "progress", "5"]]
    keys = [engine.keys.records("_t.j"), engine.keys.records("_t.k")]
    reply = await call(engine, keys, batch(("_t.j", good), ("_t.k", bad)))
    assert reply.code == "bad-progress"
    assert await keys_of(engine, prefix) == []


async def test_statuses_and_records(engine):
    keys = [engine.keys.records("_t.j")]
    ups = [[1, "_t.j.a", 10, "progress", "0.5", "f1", "1"],
           [2, "_t.j.a", 5, "progress", "0.1"],  # older ts: stale
           [3, "_t.j.b", False, "f1", "1", "f2", "2"]]  # too many fields with max 1
    statuses, changed, events = unpack(await call(engine, keys, pack([["_t.j", ups, 2]]), max_fields=1))
    assert statuses == [1, 0, 2]
    assert [k for k in changed[0::2]] == [b"_t.j", b"_t.j.a"]  # the refused update created nothing
    assert not await engine.redis.hexists(keys[0], "_t.j.b")
    assert (await engine.read("_t.j"))["_children_total"] == 1


async def test_returns_only_what_the_mode_asks(engine):
    keys = [engine.keys.records("_t.j")]
    ups = [[1, "_t.j.a.b", False, "progress", "0.5"]]
    for mode, want in ((0, []), (1, [b"_t.j.a.b"]), (2, [b"_t.j", b"_t.j.a", b"_t.j.a.b"])):
        _, changed, _ = msgpack.unpackb(await call(engine, keys, pack([["_t.j", ups, mode]])), raw=True)
        assert changed[0::2] == want


async def test_events_go_to_the_outbox_when_asked(engine):
    keys = [engine.keys.records("_t.j")]
    ups = [[1, "_t.j.a", False, "status", '"finished"']]
    _, _, events = unpack(await call(engine, keys, pack([["_t.j", ups, 0]]), now=5000, events=1))
    assert events[0] == b"_t.j.a@5000" and msgpack.unpackb(events[1]) == ["_t.j.a", "finished", 5000, 5000]
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
