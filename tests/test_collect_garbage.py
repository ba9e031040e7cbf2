"""collect_garbage.lua: bounded chunks, everything freed, leftovers of replaced nodes too."""


async def call(engine, root, budget):
    (reply,) = await engine.scripts.run(engine.redis, [("collect_garbage", [engine.keys.records(root)], [budget])])
    return reply


async def keys_of(redis_client, engine, root):
    return sorted([k async for k in redis_client.scan_iter(match=engine.keys.tree(root) + "*")])


async def test_frees_a_big_subtree_in_bounded_chunks(make_engine, redis_client):
    # History off: whether the calls below cross a history grid point depends on
    # the clock (test_history.py frees histories).
    engine = await make_engine(history_samples=0)
    # Two wide groups (their children in sorted sets) and three that list theirs.
    sizes = (150, 100, 40, 40, 10)
    await engine.apply([(f"_t.j.big.g{g}.c{i}", {"progress": 0.5}) for g, n in enumerate(sizes) for i in range(n)])
    await engine.apply([("_t.j.keep", {"progress": 1})])
    before = await redis_client.hlen(engine.keys.records("_t.j"))
    # records, counter, and each wide group's children and status index
    assert len(await keys_of(redis_client, engine, "_t.j")) == 6
    await engine.delete("_t.j.big")
    calls = 0
    while await call(engine, "_t.j", 30) > 0:
        calls += 1
        assert calls < 100
    assert calls >= 10  # 345 records at 30 a call (a listed group is taken whole: at most 64 more)
    assert await redis_client.hlen(engine.keys.records("_t.j")) == before - (1 + len(sizes) + sum(sizes))
    assert sorted(k.rsplit(b":", 1)[-1] for k in await keys_of(redis_client, engine, "_t.j")) == [
        b"ids", b"t"]  # the counter and the records: the root lists its children itself


async def test_drops_everything_of_a_deleted_tree(engine, redis_client):
    await engine.apply([(f"_t.j.a{i}.b", {"progress": 1}) for i in range(10)])
    await engine.delete("_t.j")
    assert await call(engine, "_t.j", 1000) == 0
    assert await keys_of(redis_client, engine, "_t.j") == []


async def test_leftovers_replaced_by_new_nodes_are_freed(engine, redis_client):
    await engine.apply([("_t.j.a.b.c", {"progress": 1}), ("_t.j.a.b.d", {"progress": 1})])
    await engine.delete("_t.j.a")
    # Before any collection, new nodes take the same keys: the old records are
    # replaced, and what hung below them must still be freed.
    await engine.apply([("_t.j.a.b.x", {"progress": 0.5})])
    assert await call(engine, "_t.j", 1000) == 0
    records = await redis_client.hgetall(engine.keys.records("_t.j"))
    assert sorted(records) == [b"", b"a", b"a.b", b"a.b.x"]  # fields: keys relative to the root
    assert (await engine.read("_t.j.a.b"))["_children"] == ["_t.j.a.b.x"]
