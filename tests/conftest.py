"""Shared fixtures: real Redis only.

By default the tests start an embedded Redis (the same code path as
``sca-progress serve`` without --redis-url).  With REDIS_URL set they use that
server instead, under a key prefix of their own that is removed at the end:
they never flush a database.
"""
from __future__ import annotations

import asyncio
import os
import uuid

import pytest
import redis
import redis.asyncio as aredis
from hypothesis import settings as hsettings

from sca_progress.engine import Engine
from sca_progress.engine.embedded import EmbeddedRedis

# Noisy shared machines: no per-example deadline.
hsettings.register_profile("default", deadline=None, max_examples=60)
hsettings.register_profile("ci", deadline=None, max_examples=150)
hsettings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

#: Every key the tests write starts with this (plus a per-test suffix).
RUN_PREFIX = f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(match=f"{RUN_PREFIX}*", count=1000):
            client.delete(key)
        client.close()
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False) as server:
        yield server.url


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own."""
    return f"{RUN_PREFIX}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def redis_client(redis_url):
    client = aredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def make_engine(redis_client, prefix):
    """make_engine(**options) -> a started Engine under this test's prefix
    (unless given one); every engine made is closed at the end."""
    made = []

    async def make(**options):
        options.setdefault("prefix", prefix)
        e = Engine(redis_client, **options)
        made.append(e)
        await e.start()
        return e

    yield make
    for e in made:
        await e.close()


@pytest.fixture
async def engine(make_engine):
    return await make_engine()


@pytest.fixture
async def server(redis_url, prefix):
    """The REST app on a free local port: (base URL, tornado Application)."""
    from sca_progress.server.app import http_server
    from tornado.netutil import bind_sockets

    from sca_progress.server.app import make_app
    from sca_progress.server.settings import Settings

    app = await make_app(Settings(redis_url=redis_url, prefix=prefix, host="127.0.0.1", port=0))
    http = http_server(app)
    sockets = bind_sockets(0, "127.0.0.1")
    http.add_sockets(sockets)
    yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}", app
    http.stop()
    await app.settings["service"].close_feeds()
    await asyncio.wait_for(http.close_all_connections(), 10)
    await app.settings["service"].close()


@pytest.fixture
def http():
    """call(method, url, body=None, headers=None) -> (status, parsed JSON or None, response)."""
    import orjson
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    client = AsyncHTTPClient()

    async def call(method, url, body=None, headers=None):
        if body is not None and not isinstance(body, (bytes, str)):
            body = orjson.dumps(body)
        req = HTTPRequest(url, method=method, body=body, headers=headers,
                          allow_nonstandard_methods=True, request_timeout=60, decompress_response=True)
        resp = await client.fetch(req, raise_error=False)
        data = orjson.loads(resp.body) if resp.body else None
        return resp.code, data, resp

    return call


@pytest.fixture(scope="session")
def amqp_url():
    """The broker AMQP tests use; skip (or fail under REQUIRE_AMQP=1) without one."""
    import asyncio

    from .amqp_support import DEFAULT_URL, reachable, require_or_skip

    url = os.environ.get("AMQP_URL", DEFAULT_URL)
    why = asyncio.run(reachable(url))
    if why:
        require_or_skip(why)
    return url


@pytest.fixture
async def amqp_names(amqp_url):
    from .amqp_support import Names

    names = Names()
    yield names
    await names.delete(amqp_url)


@pytest.fixture
async def ingest(redis_url, prefix, amqp_url, amqp_names):
    """The service consuming its own queue: (base URL, app, names)."""
    from sca_progress.server.app import http_server
    from tornado.netutil import bind_sockets

    from sca_progress.server.app import make_app
    from sca_progress.server.settings import Settings

    settings = Settings(redis_url=redis_url, prefix=prefix, amqp_url=amqp_url, batch_wait=0.02,
                        **amqp_names.settings())
    app = await make_app(settings)
    service = app.settings["service"]
    http = http_server(app)
    sockets = bind_sockets(0, "127.0.0.1")
    http.add_sockets(sockets)
    from .amqp_support import wait_for

    await wait_for(lambda: _consuming(service), timeout=30, what="the consumer")
    yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}", app, amqp_names
    http.stop()
    await service.close_feeds()
    await asyncio.wait_for(http.close_all_connections(), 10)
    await service.close()


async def _consuming(service):
    return service.link is not None and service.link.connected


@pytest.fixture(scope="session")
def private_rabbit(amqp_url):
    """A RabbitMQ node of the tests' own (TCP and TLS listeners), for tests that restart it."""
    from .amqp_support import PrivateRabbit, can_run_private_rabbit, require_or_skip

    why = can_run_private_rabbit()
    if why:
        require_or_skip(why)
    node = PrivateRabbit()
    node.start()
    yield node
    node.stop()


@pytest.fixture(scope="session")
def cluster():
    """A Redis Cluster of three masters of the tests' own (tests/cluster_support.py);
    skipped without redis-server and redis-cli, failing instead under REQUIRE_CLUSTER=1."""
    import shutil

    from .cluster_support import LocalCluster

    missing = [t for t in ("redis-server", "redis-cli") if not shutil.which(t)]
    if missing:
        why = f"no {' or '.join(missing)} on the PATH for a Redis Cluster"
        if os.environ.get("REQUIRE_CLUSTER") == "1":
            pytest.fail(f"REQUIRE_CLUSTER=1 but {why}")
        pytest.skip(why)
    c = LocalCluster().start()
    yield c
    c.stop()
