"""read_nodes.lua called directly (keys relative to the tree root): its errors, and a parent
deleted between two reads."""
import pytest

from sca_progress.engine import InvalidUpdate
from sca_progress.engine.scripts import pack, unpack


async def call(engine, keys, requests, limit=1000, cursor=""):
    (reply,) = await engine.scripts.run(engine.redis, [("read_nodes", keys, [limit, cursor, requests])])
    return reply


@pytest.mark.parametrize("requests, limit", [
    (b"\xc1", 10), (pack([["k", 1, ""]]), 0), (pack([["k", 1, ""]]), 10_001),
    (pack([["k", 2, ""]]), 10), (pack([["x", 1, ""]]), 10),
])
async def test_documented_errors(engine, requests, limit):
    reply = await call(engine, [engine.keys.records("_t.j")], requests, limit)
    assert isinstance(reply, InvalidUpdate) and reply.code == "bad-batch"


async def test_node_children_page_and_missing(engine):
    await engine.apply([(f"_t.j.c{i}", {"progress": 0.5}) for i in range(5)])
    keys = [engine.keys.records("_t.j")]
    (root, missing) = unpack(await call(engine, keys, pack([["k", 1, ""], ["k", 1, "nope"]]), limit=2))
    assert missing is False
    _, rid, total, cursor, *segs = root
    assert total == 5 and segs == [b"c0", b"c1"] and cursor == b"2"
    (page,) = unpack(await call(engine, keys, pack([["k", 1, ""]]), limit=2, cursor="2"))
    assert page[4:] == [b"c2", b"c3"]
    (kids,) = unpack(await call(engine, keys, pack([["c", 1, "", rid, "c0", "nope", "c4"]])))
    assert kids[1] is False and kids[0][2] == 0 and kids[2] is not False


async def test_a_parent_deleted_between_reads_is_reported(engine):
    await engine.apply([("_t.j.a.x", {"progress": 1})])
    keys = [engine.keys.records("_t.j")]
    (a,) = unpack(await call(engine, keys, pack([["k", 1, "a"]])))
    await engine.delete("_t.j.a")
    await engine.apply([("_t.j.a.y", {"progress": 1})])  # a new node at the same key
    (kids,) = unpack(await call(engine, keys, pack([["c", 1, "a", a[1], "x"]])))
    assert kids is False


async def test_the_listing_budget_is_enforced_inside_the_script(engine):
    await engine.apply([(f"_t.j.c{i}", {"progress": 0.5}) for i in range(30)])
    keys = [engine.keys.records("_t.j")]
    (reply,) = await engine.scripts.run(engine.redis, [("read_nodes", keys, [1000, "", pack([["k", 1, ""]]), 29])])
    assert isinstance(reply, InvalidUpdate) and reply.code == "too-many-nodes"
    (reply,) = await engine.scripts.run(engine.redis, [("read_nodes", keys, [1000, "", pack([["k", 1, ""]]), 30])])
    assert unpack(reply)[0][2] == 30
