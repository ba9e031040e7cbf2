"""engine/link.py: one shared connection for the engine's calls, against real Redis."""
import asyncio

import pytest
import redis.asyncio as aredis
from redis import exceptions as rex

from sca_progress.engine.link import NAME, RedisLink, pack


def test_pack_writes_resp():
    assert pack(("SET", "k", b"\x00v", 12, 0.5)) == b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\x00v\r\n$2\r\n12\r\n$3\r\n0.5\r\n"


@pytest.fixture
async def link(redis_client):
    link = RedisLink.of(redis_client)
    yield link
    await link.close()


async def test_concurrent_calls_share_the_connection_and_get_their_own_replies(link, redis_client, prefix):
    async def call(i):
        return await link.execute([("SET", f"{prefix}:k{i}", i), ("GET", f"{prefix}:k{i}")])

    replies = await asyncio.gather(*(call(i) for i in range(200)))
    assert replies == [[b"OK", str(i).encode()] for i in range(200)]
    mine = [c for c in await redis_client.client_list() if c.get("name") == link.name]
    assert len(mine) == 1 and link.name.startswith(NAME)


async def test_calls_of_one_loop_turn_go_out_in_one_write(link, prefix):
    await link.execute([("PING",)])
    writes = []
    transport = link._protocol.transport
    real_write = transport.write

    def counted(data):
        writes.append(data)
        real_write(data)

    transport.write = counted
    try:
        replies = await asyncio.gather(*(link.execute([("INCR", f"{prefix}:n")]) for _ in range(50)))
    finally:
        transport.write = real_write
    assert sorted(r[0] for r in replies) == list(range(1, 51))
    assert len(writes) == 1 and writes[0].count(b"INCR") == 50


async def test_calls_queued_on_a_connection_that_fails_fail_with_it(link, prefix):
    """A failure between a call's queueing and the end of the loop turn fails the
    call, and its commands never reach the next connection."""
    await link.execute([("PING",)])
    doomed = asyncio.ensure_future(link.execute([("INCR", f"{prefix}:lost")]))
    await asyncio.sleep(0)  # queued, not written yet
    link._fail(rex.ConnectionError("test: dropped"))
    with pytest.raises(rex.ConnectionError):
        await doomed
    assert await link.execute([("GET", f"{prefix}:lost")]) == [None]


async def test_error_replies_are_values(link, prefix):
    await link.execute([("SET", f"{prefix}:s", "x")])
    ok, bad = await link.execute([("GET", f"{prefix}:s"), ("INCR", f"{prefix}:s")])
    assert ok == b"x" and isinstance(bad, rex.ResponseError) and "not an integer" in str(bad)


async def test_a_killed_connection_fails_calls_in_flight_then_reconnects(link, redis_client, prefix):
    await link.execute([("PING",)])
    blocked = asyncio.ensure_future(link.execute([("BLPOP", f"{prefix}:never", 10)]))
    await asyncio.sleep(0.2)
    (mine,) = [c for c in await redis_client.client_list() if c.get("name") == link.name]
    assert await redis_client.execute_command("CLIENT", "KILL", "ID", mine["id"]) == 1
    with pytest.raises(rex.ConnectionError):
        await asyncio.wait_for(blocked, 5)
    assert await link.execute([("PING",)]) == [b"PONG"]


async def test_a_call_that_outlives_the_timeout_fails_and_the_link_recovers(redis_client, prefix):
    link = RedisLink.of(redis_client)
    link.timeout = 0.5
    try:
        with pytest.raises(rex.TimeoutError):
            await asyncio.wait_for(link.execute([("BLPOP", f"{prefix}:never", 3)]), 10)
        assert await link.execute([("PING",)]) == [b"PONG"]
    finally:
        await link.close()


async def test_credentials_and_database_come_from_the_client(redis_url, redis_client, prefix):
    user, password = f"{prefix}-u", f"{prefix}-pw"
    await redis_client.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@all")
    scheme, rest = redis_url.split("://", 1)
    if scheme == "unix":
        url = f"unix://{user}:{password}@{rest.split('?')[0]}?db=3"
    else:
        url = f"{scheme}://{user}:{password}@{rest.rsplit('/', 1)[0]}/3"
    clients = [aredis.from_url(url), aredis.from_url(url.replace(password, "nope"))]
    links = [RedisLink.of(c) for c in clients]
    try:
        await links[0].execute([("SET", f"{prefix}:indb3", 1)])
        assert await redis_client.exists(f"{prefix}:indb3") == 0  # not in the default database
        assert await clients[0].get(f"{prefix}:indb3") == b"1"
        with pytest.raises(rex.RedisError):
            await links[1].execute([("PING",)])
    finally:
        await clients[0].delete(f"{prefix}:indb3")
        for link in links:
            await link.close()
        for c in clients:
            await c.aclose()
        await redis_client.execute_command("ACL", "DELUSER", user)
