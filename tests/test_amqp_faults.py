"""AMQP ingestion under faults: nothing acknowledged is lost, nothing applied wrongly.

Every message carries an increasing producer `ts`, so redelivery after a fault
can never roll progress back; the final trees must equal the plain-Python
model of all messages.
"""
from __future__ import annotations

import asyncio
import contextlib
import signal

import orjson
import redis.asyncio as aredis
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from sca_progress.engine import Engine
from sca_progress.engine.embedded import EmbeddedRedis
from sca_progress.server.app import make_app
from sca_progress.server.settings import Settings

from .amqp_support import Names, Producer, queue_counts, wait_for
from .procs import start_service, stop_service
from .test_amqp import compare, plan, read_all


async def converge(engine, model, timeout: float = 180) -> None:
    """Wait until the trees equal the model; on timeout, fail with the difference."""
    async def matches() -> bool:
        try:
            compare(model, await read_all(engine, model.roots()))
            return True
        except Exception:  # noqa: BLE001 - not yet
            return False

    try:
        await wait_for(matches, timeout=timeout, every=1, what="the trees to equal the model")
    except AssertionError:
        compare(model, await read_all(engine, model.roots()))  # raises with the difference
        raise


async def converge_in(redis_url: str, prefix: str, model) -> None:
    """converge() on the trees a service process writes under *prefix*."""
    client = aredis.from_url(redis_url)
    try:
        engine = Engine(client, prefix=prefix)
        await engine.start()
        try:
            await converge(engine, model)
        finally:
            await engine.close()
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def service(settings: Settings, wait: bool = True):
    """The service in this process; with *wait*, once its queue is declared and
    consumed (publishing before that would route nowhere)."""
    app = await make_app(settings)
    http = HTTPServer(app)
    http.add_sockets(bind_sockets(0, "127.0.0.1"))
    try:
        if wait:
            await wait_for(lambda: _connected(app.settings["service"].link), timeout=60, what="the consumer")
        yield app
    finally:
        http.stop()
        await app.settings["service"].close()


async def test_redis_killed_mid_ingest_loses_nothing(tmp_path, prefix, amqp_url, amqp_names):
    """A private Redis with the append-only file and appendfsync always is
    SIGKILLed mid-ingest and started again: every message's effect is there."""
    private = EmbeddedRedis(tmp_path / "redis", appendfsync="always")
    url = private.start()
    messages, model = plan(n_trees=20, n_messages=4000, seed=11)
    try:
        settings = Settings(redis_url=url, prefix=prefix, amqp_url=amqp_url, batch_size=200, batch_wait=0.01,
                            **amqp_names.settings())
        async with service(settings) as app:
            batcher = app.settings["service"].batcher
            async with Producer(amqp_url, amqp_names.exchange) as p:
                sending = asyncio.create_task(p.send_many(messages))
                await wait_for(lambda: _at_least(batcher, 800), timeout=60, what="some messages applied")
                private.kill()
                await asyncio.sleep(2)  # the batcher holds its batch and backs off
                private.start()
                await sending
            engine = app.settings["engine"]
            await converge(engine, model)
            assert await queue_counts(amqp_url, amqp_names.queue) == (0, 1)
    finally:
        private.stop()


async def _at_least(batcher, n):
    return batcher.applied >= n


def service_args(redis_url, prefix, amqp_url, names: Names, *extra):
    return ["--redis-url", redis_url, "--prefix", prefix, "--amqp-url", amqp_url,
            "--amqp-exchange", names.exchange, "--amqp-queue", names.queue, "--amqp-dead", names.dead,
            "--amqp-events", names.events, *extra]


async def health(base):
    from tornado.httpclient import AsyncHTTPClient

    resp = await AsyncHTTPClient().fetch(f"{base}/health", raise_error=False)
    return orjson.loads(resp.body)


async def test_server_killed_mid_ingest_loses_nothing(redis_url, prefix, amqp_url, amqp_names):
    messages, model = plan(n_trees=20, n_messages=4000, seed=12)
    args = service_args(redis_url, prefix, amqp_url, amqp_names, "--batch-size", "200")
    proc, base, log = start_service(args)
    try:
        await consuming(base)
        async with Producer(amqp_url, amqp_names.exchange) as p:
            sending = asyncio.create_task(p.send_many(messages))
            await wait_for(lambda: _health_applied(base, 800), timeout=60, what="some messages applied")
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            stop_service(proc)
            await sending
        proc, base, log = start_service(args)
        await converge_in(redis_url, prefix, model)
    finally:
        stop_service(proc)


async def _health_applied(base, n):
    h = await health(base)
    return h["amqp"].get("applied", 0) >= n


async def consuming(base):
    """Wait until the service process consumes: before that its queue may not exist."""
    async def ready():
        return (await health(base))["amqp"].get("connected")

    await wait_for(ready, timeout=60, what="the consumer")


async def test_sigterm_applies_and_acknowledges_what_is_in_hand(redis_url, prefix, amqp_url, amqp_names):
    messages, model = plan(n_trees=20, n_messages=3000, seed=13)
    args = service_args(redis_url, prefix, amqp_url, amqp_names, "--batch-size", "100")
    proc, base, log = start_service(args)
    await consuming(base)
    async with Producer(amqp_url, amqp_names.exchange) as p:
        await p.send_many(messages)
    await wait_for(lambda: _health_applied(base, 300), timeout=60, what="some messages applied")
    assert stop_service(proc) == 0
    assert "stopping" in log()
    ready, consumers = await queue_counts(amqp_url, amqp_names.queue)
    assert consumers == 0 and ready < len(messages)
    # Whatever was not applied is still in the queue: a new process finishes the job.
    proc, base, log = start_service(args)
    try:
        await converge_in(redis_url, prefix, model)
    finally:
        stop_service(proc)


async def test_broker_restart_resumes_consuming(private_rabbit, redis_url, prefix):
    names = Names()
    settings = Settings(redis_url=redis_url, prefix=prefix, amqp_url=private_rabbit.url, batch_wait=0.01,
                        **names.settings())
    try:
        async with service(settings) as app:
            link = app.settings["service"].link
            async with Producer(private_rabbit.url, names.exchange) as p:
                await p.send("_restart.job.a", {"progress": 0.5})
            engine = app.settings["engine"]
            await wait_for(lambda: _read(engine, "_restart.job.a"), timeout=30, what="before the restart")
            await asyncio.to_thread(private_rabbit.restart_app)
            # New messages after the restart are consumed: the queue has a consumer again.
            async with Producer(private_rabbit.url, names.exchange) as p:
                await p.send("_restart.job.b", {"progress": 1})
            await wait_for(lambda: _read(engine, "_restart.job.b"), timeout=90, what="after the restart")
            assert (await queue_counts(private_rabbit.url, names.queue))[1] == 1
            health = await link.health()
            assert health["connected"] and health["consuming"], health
    finally:
        await names.delete(private_rabbit.url)


async def test_amqps(private_rabbit, redis_url, prefix):
    names = Names()
    settings = Settings(redis_url=redis_url, prefix=prefix, amqp_url=private_rabbit.tls_url, batch_wait=0.01,
                        **names.settings())
    try:
        async with service(settings) as app:
            async with Producer(private_rabbit.tls_url, names.exchange) as p:
                await p.send("_tls.job.a", {"progress": 0.75})
            await wait_for(lambda: _read(app.settings["engine"], "_tls.job.a"), timeout=30, what="over TLS")
    finally:
        await names.delete(private_rabbit.url)


async def _connected(link):
    return link.connected


async def _read(engine, key):
    try:
        return await engine.read(key)
    except Exception:  # noqa: BLE001
        return None


async def test_without_a_broker_the_service_keeps_retrying(redis_url, prefix, http):
    settings = Settings(redis_url=redis_url, prefix=prefix, amqp_url="amqp://guest:guest@127.0.0.1:1/")
    async with service(settings, wait=False) as app:
        await asyncio.sleep(0.5)
        h = await app.settings["service"].health()
        assert h["status"] == "degraded" and h["amqp"]["connected"] is False
