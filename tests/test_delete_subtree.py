"""delete_subtree.lua called directly: its error, its result, and what it leaves behind."""
from sca_progress.engine import InvalidUpdate
from sca_progress.engine.scripts import unpack


async def call(engine, root, key, snapshots=1):
    """Delete *key* (relative to *root*)."""
    (reply,) = await engine.scripts.run(
        engine.redis, [("delete_subtree", [engine.keys.records(root)], [1000, 60000, key, snapshots])])
    return reply


async def test_malformed_key(engine):
    for key in ("a..b", ".a", "a."):
        reply = await call(engine, "_t.j", key)
        assert isinstance(reply, InvalidUpdate) and reply.code == "bad-key"


async def test_missing_node(engine):
    assert unpack(await call(engine, "_t.j", "a")) == [0, []]


async def test_detaches_and_returns_the_ancestors(engine, redis_client):
    await engine.apply([("_t.j.a.b.c", {"progress": 1}), ("_t.j.d", {"progress": 0})])
    found, changed = unpack(await call(engine, "_t.j", "a.b"))
    assert found == 1 and sorted(changed[0::2]) == [b"", b"a"]
    found, changed = unpack(await call(engine, "_t.j", "d", snapshots=0))
    assert found == 1 and changed == []
    gc = await redis_client.lrange(engine.keys.tree("_t.j") + "gc", 0, -1)
    # a.b listed its one child in its record: the entry names it; d had none: nothing to free
    assert gc == [gc[0]] and gc[0].endswith(b" a.b|c")
    assert (await engine.read("_t.j", depth=2))["_children"] == ["_t.j.a"]
