"""Shutting a server process down (SIGTERM) while clients are connected.

Real processes (tests/procs.py) on the test Redis: the requests under way
are answered before connections close, and the answers given meanwhile say
`Connection: close`; no live-feed client can hold the exit up; socket.io
clients come back by themselves once the service is up again.
"""
from __future__ import annotations

import asyncio
import signal
import time
import urllib.request

import orjson
import socketio

from .procs import free_port, start_service, stop_service
from .test_connections import Raw


def _get(url: str):
    with urllib.request.urlopen(url, timeout=20) as resp:
        return resp.status, resp.read()


def test_a_gone_polling_socketio_client_does_not_hold_up_the_exit(redis_url, prefix):
    proc, base, log = start_service(["--redis-url", redis_url, "--prefix", prefix])
    try:
        status, body = _get(f"{base}/socket.io/?EIO=4&transport=polling")  # a handshake, then nothing
        assert status == 200 and b"sid" in body
        started = time.monotonic()
        assert stop_service(proc, timeout=20) == 0
        assert time.monotonic() - started < 15, log()
    finally:
        if proc.poll() is None:
            stop_service(proc)


async def test_socketio_clients_reconnect_after_a_restart(redis_url, prefix):
    port = str(free_port())
    args = ["--redis-url", redis_url, "--prefix", prefix, "--port", port]
    proc, base, _ = start_service(args)
    client = socketio.AsyncClient(reconnection=True, reconnection_delay=0.2, reconnection_delay_max=1)
    seen: list = []
    key = "_sd.j"

    @client.event
    async def connect():
        seen.append("connect")
        await client.emit("subscribe", key)

    @client.on("update")
    async def update(data):
        seen.extend(("update", n.get("progress")) for n in data["nodes"] if n["key"] == f"{key}.a")

    def post(p: float) -> None:
        req = urllib.request.Request(f"{base}/status/{key}.a", data=orjson.dumps({"progress": p}), method="POST")
        with urllib.request.urlopen(req, timeout=20) as resp:
            assert resp.status == 200

    try:
        await client.connect(base, transports=["websocket"])
        await _until(lambda: "connect" in seen)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(post, 0.25)
        await _until(lambda: ("update", 0.25) in seen)
        await asyncio.to_thread(stop_service, proc)
        proc, again, _ = await asyncio.to_thread(start_service, args)
        assert again == base
        await _until(lambda: seen.count("connect") == 2, timeout=20)  # back, and subscribed again
        await asyncio.sleep(0.3)
        await asyncio.to_thread(post, 0.75)
        await _until(lambda: ("update", 0.75) in seen)
    finally:
        await client.disconnect()
        stop_service(proc)


async def _until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_requests_under_way_are_answered_at_shutdown(redis_url, prefix):
    """Keep-alive clients post without pause while the process gets SIGTERM:
    every answer is whole and a 200 (none a 503 from a closed engine), the
    last answers on each connection say `Connection: close`, and a request
    is only ever left unanswered by a connection closed after such an
    answer; every update answered 200 is stored."""
    args = ["--redis-url", redis_url, "--prefix", prefix]
    proc, base, log = start_service(args)
    answered: list[str] = []
    stopping = asyncio.Event()

    async def client(c: int) -> dict:
        conn = await Raw(base).open()
        said_close, n = False, 0
        try:
            while True:
                key = f"_sd.j{c}.n{n}"
                path = f"/status/{key}" + ("?c=1" if c % 2 else "")  # the hot route and RequestHandler's
                try:
                    status, headers, body = await conn.request("POST", path, b'{"progress": 0.5}')
                except (asyncio.IncompleteReadError, ConnectionError):
                    return {"said_close": said_close, "n": n}
                assert status == 200, (status, body)
                answered.append(key)
                said_close = headers.get("connection", "").lower() == "close"
                n += 1
                if n == 20:
                    stopping.set()
                if said_close:
                    assert await conn.closed()
                    return {"said_close": True, "n": n}
        finally:
            conn.close()

    tasks = [asyncio.ensure_future(client(c)) for c in range(6)]
    await stopping.wait()
    proc.send_signal(signal.SIGTERM)
    ends = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    await asyncio.to_thread(proc.wait, 30)  # exits by itself (a second SIGTERM would cut its teardown)
    assert await asyncio.to_thread(stop_service, proc) == 0
    assert "link was closed" not in log() and " 503 " not in log()
    assert sum(e["said_close"] for e in ends) >= 1, ends

    proc, base, _ = start_service(args)
    try:
        for key in answered[-30:]:
            assert (await asyncio.to_thread(_get, f"{base}/status/{key}"))[0] == 200
    finally:
        stop_service(proc)
