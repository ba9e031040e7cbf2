"""index_trees.lua: first-seen order and recency of the trees under a namespace."""


async def call(engine, ns, now, *children):
    (reply,) = await engine.scripts.run(engine.redis, [("index_trees", [engine.keys.ns(ns)], [now, *children])])
    return reply


async def test_first_seen_order_and_recency(engine, redis_client):
    assert await call(engine, "_p", 100, "_p.b", "_p.a") == 2
    assert await call(engine, "_p", 200, "_p.a", "_p.c") == 1
    assert await call(engine, "_p", 50, "_p.b") == 0  # an older time never moves a tree back
    assert await redis_client.zrange(engine.keys.ns("_p"), 0, -1) == [b"_p.b", b"_p.a", b"_p.c"]
    recent = await redis_client.zrange(engine.keys.ns_recent("_p"), 0, -1, withscores=True)
    assert dict(recent) == {b"_p.a": 200, b"_p.c": 200, b"_p.b": 100}
