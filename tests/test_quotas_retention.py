"""Quotas (nodes per tree) and retention (purging old trees), against real Redis."""
from __future__ import annotations

import asyncio

import pytest

from sca_progress.engine import APPLIED, Limits, NotFound
from sca_progress.server.settings import Settings

from .test_auth import running, stopping

DAY_MS = 86_400_000


async def test_nodes_per_tree_cap(make_engine):
    engine = await make_engine(limits=Limits(max_nodes_per_tree=10))
    res = await engine.apply([(f"_q.job.s{i}", {"progress": 0.5}) for i in range(8)])  # 9 nodes with the root
    assert res.results == [APPLIED] * 8
    res = await engine.apply([("_q.job.s0", {"progress": 1}),  # no new node: fine
                              ("_q.job.s8.a", {"progress": 1}),  # needs 2: refused
                              ("_q.job.s9", {"progress": 1}),  # needs 1: the 10th
                              ("_q.job.s10", {"progress": 1})])  # refused
    assert res.results[0] == APPLIED and res.results[2] == APPLIED
    assert [r.code for r in (res.results[1], res.results[3])] == ["tree-full", "tree-full"]
    assert res.results[1].status == 403
    tree = await engine.read("_q.job")
    assert tree["_children_total"] == 9 and "_q.job.s8" not in tree["_children"]
    other = await engine.apply([("_q.other.a", {"progress": 1})])  # a cap per tree, not per service
    assert other.results == [APPLIED]


async def test_tree_cap_over_rest_and_amqp(redis_url, prefix, http, amqp_url, amqp_names):
    from .amqp_support import Producer, drain, wait_for

    settings = Settings(redis_url=redis_url, prefix=prefix, max_nodes_per_tree=3, amqp_url=amqp_url,
                        batch_wait=0.01, **amqp_names.settings())
    base, app, srv = await running(settings)
    try:
        await wait_for(lambda: _connected(app), timeout=30, what="the consumer")
        assert (await http("POST", f"{base}/status/_qr.job.a", {"progress": 1}))[0] == 200
        assert (await http("POST", f"{base}/status/_qr.job.b", {"progress": 1}))[0] == 200
        status, body, _ = await http("POST", f"{base}/status/_qr.job.c", {"progress": 1})
        assert status == 403 and body["error"]["code"] == "tree-full"
        async with Producer(amqp_url, amqp_names.exchange) as p:
            await p.send("_qr.job.d", {"progress": 1})
        dead = await wait_for(lambda: drain(amqp_url, amqp_names.dead), timeout=30, what="the dead letter")
        assert dead[0].headers["x-progress-error"] == "tree-full"
    finally:
        await stopping(app, srv)


async def _connected(app):
    return app.settings["service"].link.connected


@pytest.fixture
async def short_retention(redis_url, prefix):
    """A service whose trees expire after 400 ms (finished ones after 200 ms)."""
    settings = Settings(redis_url=redis_url, prefix=prefix, retention_days=400 / DAY_MS,
                        retention_finished_days=200 / DAY_MS, retention_interval=3600)
    base, app, srv = await running(settings)
    yield base, app
    await stopping(app, srv)


async def test_old_trees_are_purged_with_their_namespace_entries(short_retention, http):
    base, app = short_retention
    service = app.settings["service"]
    engine = app.settings["engine"]
    await http("POST", f"{base}/status", [{"key": "_ret.old.a", "progress": 0.5},
                                          {"key": "_ret.done.a", "progress": 1},
                                          {"key": "_ret.done", "status": "finished"},
                                          {"key": "_ret._inner.old.a", "progress": 1},
                                          {"key": "bare.a", "progress": 1}])
    await asyncio.sleep(0.25)
    await http("POST", f"{base}/status/_ret.fresh.a", {"progress": 0.1})
    assert await service.retention.sweep() == 1  # only the finished tree is old enough yet
    assert (await engine.read("_ret"))["_children"] == ["_ret.old", "_ret._inner", "_ret.fresh"]
    await asyncio.sleep(0.25)
    await http("POST", f"{base}/status/_ret.fresh.a", {"progress": 0.2})
    assert await service.retention.sweep() == 3  # _ret.old, _ret._inner.old, bare
    # The inner namespace went with its last tree.
    assert (await engine.read("_ret"))["_children"] == ["_ret.fresh"]
    assert (await engine.read(""))["_children"] == ["_ret"]
    for gone in ("_ret.old", "_ret.done", "_ret._inner.old", "bare"):
        with pytest.raises(NotFound):
            await engine.read(gone)
    await engine.collect_garbage()
    assert service.retention.purged == 4


async def test_a_tree_being_written_stays(short_retention, http):
    base, app = short_retention
    service, engine = app.settings["service"], app.settings["engine"]
    await http("POST", f"{base}/status", [{"key": f"_busy.job.s{i}", "progress": 0.1} for i in range(20)])
    await asyncio.sleep(0.45)  # old by now...
    stop, wrote = asyncio.Event(), asyncio.Event()

    async def writer():
        i = 0
        while not stop.is_set():
            await http("POST", f"{base}/status/_busy.job.s{i % 20}", {"progress": (i % 10) / 10})
            wrote.set()
            i += 1

    task = asyncio.create_task(writer())
    await wrote.wait()  # ...but written from now on
    for _ in range(10):
        assert await service.retention.sweep() == 0
        await asyncio.sleep(0.05)
    stop.set()
    await task
    assert (await engine.read("_busy.job"))["_children_total"] == 20
    # A purge decided before a write does not win over the write.
    judged_at = (await engine.read("_busy.job"))["update_time"] - 1
    assert await engine.delete("_busy.job", not_after=judged_at) is None
    assert (await engine.read("_busy.job"))["_children_total"] == 20


async def test_a_purge_is_never_seen_half_done(short_retention, http):
    """A tree bigger than one garbage-collection chunk, read again and again
    while it is purged: every read sees all of it or nothing."""
    base, app = short_retention
    service, engine = app.settings["service"], app.settings["engine"]
    await http("POST", f"{base}/status", [{"key": f"_big.job.s{i}.f{k}", "progress": 0.1}
                                          for i in range(30) for k in range(100)])
    await asyncio.sleep(0.45)
    stop, reads = asyncio.Event(), []

    async def reader():
        while not stop.is_set():
            try:
                tree = await engine.read("_big.job", depth=3)
                reads.append(sum(len(t.get("tasks", [])) for t in tree.get("tasks", [])))
            except NotFound:
                reads.append(0)
            await asyncio.sleep(0)

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.05)
    assert await service.retention.sweep() == 1
    while await engine.collect_garbage() > 1:  # more than one bounded chunk
        pass
    await asyncio.sleep(0.05)
    stop.set()
    await task
    assert 3000 in reads and 0 in reads and set(reads) == {3000, 0}


@pytest.fixture
async def finished_only_retention(redis_url, prefix):
    """Finished trees expire after 200 ms, the others only after 60 s (so a slow
    machine cannot expire them during the test)."""
    settings = Settings(redis_url=redis_url, prefix=prefix, retention_days=60_000 / DAY_MS,
                        retention_finished_days=200 / DAY_MS, retention_interval=3600)
    base, app, srv = await running(settings)
    yield base, app
    await stopping(app, srv)


async def test_young_unfinished_trees_do_not_hide_old_finished_ones(finished_only_retention, http, monkeypatch):
    """Old-but-not-expired trees in front of the index must not starve the sweep."""
    from sca_progress.server import retention

    monkeypatch.setattr(retention, "PAGE", 50)
    monkeypatch.setattr(retention, "SWEEP_BATCH", 10)
    base, app = finished_only_retention
    await http("POST", f"{base}/status", [{"key": f"_young.job{i}.a", "progress": 0.5} for i in range(300)])
    await asyncio.sleep(0.01)
    await http("POST", f"{base}/status", [{"key": f"_young.done{i}", "status": "finished"} for i in range(5)])
    await asyncio.sleep(0.25)  # the finished ones are past their 200 ms; the others far from their 60 s
    assert await app.settings["service"].retention.sweep() == 5
    assert (await app.settings["engine"].read("_young"))["_children_total"] == 300


async def test_close_ends_loops_whose_cancellation_was_swallowed(redis_url, prefix, http, monkeypatch):
    """redis-py can swallow a cancellation that lands mid-command; close() must still end."""
    base, app, srv = await running(Settings(redis_url=redis_url, prefix=prefix, gc_interval=3600))
    service = app.settings["service"]
    in_gc = asyncio.Event()
    real = service.engine.collect_garbage

    async def swallowing_gc():
        in_gc.set()
        try:
            await asyncio.sleep(0.5)
        except asyncio.CancelledError:
            pass  # what redis-py sometimes does
        return await real()

    monkeypatch.setattr(service.engine, "collect_garbage", swallowing_gc)
    await http("POST", f"{base}/status/_sw.job.a", {"progress": 1})
    await http("DELETE", f"{base}/status/_sw.job")
    await asyncio.wait_for(in_gc.wait(), 10)
    await asyncio.wait_for(stopping(app, srv), 8)  # cancel_and_wait alone would give up only after 10 s
    gc = next(t for t in service._tasks if t.get_name() == "gc")
    assert gc.done()
