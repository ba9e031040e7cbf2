"""Shared fixtures: real Redis only.

By default the tests start an embedded Redis (the same code path as
``sca-progress serve`` without --redis-url).  With REDIS_URL set they use that
server instead, under a key prefix of their own that is removed at the end:
they never flush a database.
"""
from __future__ import annotations

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
async def engine(redis_client, prefix):
    e = Engine(redis_client, prefix=prefix)
    await e.start()
    return e
