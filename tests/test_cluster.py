"""On a Redis Cluster of three masters: the engine, the service (REST and the
live feed over sharded pub/sub), and a slot migration under load that loses
nothing acknowledged."""
from __future__ import annotations

import asyncio
import os
import random
import urllib.request

import orjson
import pytest
import redis.asyncio as aredis
from redis.crc import key_slot

from sca_progress.engine import APPLIED, Engine, NotFound

from .conftest import RUN_PREFIX
from .feed_clients import sse_until
from .procs import start_service, stop_service


@pytest.fixture
async def cluster_engine(cluster):
    client = aredis.RedisCluster.from_url(cluster.url)
    engine = Engine(client, prefix=f"{RUN_PREFIX}-c{os.urandom(3).hex()}", feed=True)
    await engine.start()
    yield engine
    await engine.close()
    await client.aclose()


def tree_slot(engine: Engine, root: str) -> int:
    return key_slot(engine.keys.records(root).encode())


async def test_the_engine_spreads_trees_over_the_masters(cluster, cluster_engine):
    e = cluster_engine
    assert e.cluster and e.one_tree_per_call and e.feed_command == "SPUBLISH"
    roots = [f"_c.j{i}" for i in range(60)]
    owners = {cluster.owner(tree_slot(e, r)) for r in roots}
    assert owners == set(cluster.ports)  # the test really crosses masters
    result = await e.apply([(f"{r}.s{k}", {"progress": k / 4, "weight": k + 1}) for r in roots for k in range(4)])
    assert set(result.results) == {APPLIED}
    for r in roots[:10]:
        node = await e.read(r, depth=2)
        expected = sum((k / 4) * (k + 1) for k in range(4)) / sum(k + 1 for k in range(4))
        assert node["progress"] == pytest.approx(expected) and len(node["tasks"]) == 4
    listing = await e.read("_c", depth=2, limit=1000)
    assert listing["_children_total"] == 60 and {t["key"] for t in listing["tasks"]} == set(roots)
    await e.delete(roots[0])
    await e.collect_garbage()
    with pytest.raises(NotFound):
        await e.read(roots[0])
    assert (await e.read("_c", depth=1))["_children_total"] == 59
    # Completion events wait in each tree's outbox, on its own master; the sweep's scan finds them all.
    done = await e.apply([(f"{r}.s0", {"status": "finished"}) for r in roots[1:]], events=True)
    assert len(done.events) == 59
    pending = await e.pending_events(min_age_ms=0)
    assert {ev.key for ev in pending} == {f"{r}.s0" for r in roots[1:]}
    await e.ack_events(pending)
    assert await e.pending_events(min_age_ms=0) == []


async def test_the_scripts_come_back_after_a_master_loses_them(cluster, cluster_engine):
    e = cluster_engine
    await e.apply([("_cf.j.a", {"progress": 0.5})])
    port = cluster.owner(tree_slot(e, "_cf.j"))
    cluster.node(port).execute_command("FUNCTION", "DELETE", e.scripts.library_name)
    assert (await e.apply([("_cf.j.b", {"progress": 1})])).results == [APPLIED]
    assert (await e.read("_cf.j"))["progress"] == 0.75


async def test_a_slot_migration_under_load_loses_nothing_acknowledged(cluster, cluster_engine):
    """Writers keep posting to 40 trees while the slots of eight of them move
    to another master key by key (ASK redirections while a slot is split,
    MOVED after).  Every update the engine acknowledged is there afterwards,
    and every parent still sums its children."""
    e = cluster_engine
    roots = [f"_cm.j{i}" for i in range(40)]
    acked: dict[str, int] = {}
    stop = asyncio.Event()

    async def writer(seed: int) -> None:
        """Writes its own third of the trees, so each key's writes are in order."""
        rng = random.Random(seed)
        mine = roots[seed::3]
        n = 0
        while not stop.is_set():
            n += 1
            batch = [(f"{r}.s{rng.randrange(3)}", {"progress": rng.random(), "n": n}) for r in rng.sample(mine, 6)]
            result = await e.apply(batch)
            for (key, update), outcome in zip(batch, result.results):
                assert outcome is APPLIED, outcome
                acked[key] = update["n"]

    writers = [asyncio.create_task(writer(s)) for s in range(3)]
    await asyncio.sleep(0.3)
    moved = 0
    for root in roots[:8]:
        slot = tree_slot(e, root)
        target = next(p for p in cluster.ports if p != cluster.owner(slot))
        moved += await asyncio.to_thread(cluster.migrate_slot, slot, target, 1, 0.01)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*writers)
    assert moved > 0 and len(acked) > 60
    retried = e.scripts.link.retried
    assert retried["MOVED"] > 0 and retried["ASK"] + retried["busy"] > 0, retried  # it met the migration
    for key, n in acked.items():
        assert (await e.read(key))["n"] == n, key
    for root in roots:
        node = await e.read(root, depth=2)
        kids = node.get("tasks", [])
        assert node["progress"] == pytest.approx(sum(k["progress"] for k in kids) / len(kids))


def test_the_service_serves_rest_and_live_feeds_on_a_cluster(cluster):
    proc, base, log = start_service(["--redis-url", cluster.url, "--prefix", f"{RUN_PREFIX}-cs{os.urandom(3).hex()}"])
    try:
        assert "is a Redis Cluster node" in log()
        roots = [f"_cs.j{i}" for i in range(12)]  # spread over the masters
        for r in roots:
            assert _post(base, f"/status/{r}.a", {"progress": 0.5}) == 200
        with urllib.request.urlopen(f"{base}/status/_cs?depth=2", timeout=20) as resp:
            assert orjson.loads(resp.read())["_children_total"] == 12
        with urllib.request.urlopen(f"{base}/health/ready", timeout=20) as resp:
            assert resp.status == 200
        # The live feed of a tree whose slot is on a master other than the one named in --redis-url.
        seed = cluster.ports[0]
        slot_of = {r: key_slot(f"{RUN_PREFIX}:{{{r}}}".encode()) for r in roots}
        far = next(r for r in roots if cluster.owner(slot_of[r]) != seed)
        lines = sse_until(base, far, lambda: _post(base, f"/status/{far}.a", {"progress": 0.9, "msg": "live"}),
                           b'"live"')
        assert b"event: update" in lines
    finally:
        assert stop_service(proc) == 0


def _post(base: str, path: str, body: dict) -> int:
    req = urllib.request.Request(base + path, data=orjson.dumps(body), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=20) as resp:
        return resp.status
