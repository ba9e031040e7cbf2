"""Live-feed clients for the tests: python-socketio's AsyncClient and an SSE reader."""
from __future__ import annotations

import asyncio

import orjson
import socketio
from tornado.httpclient import AsyncHTTPClient, HTTPRequest


class SioClient:
    """Collects every server event in a queue of (event, data)."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: asyncio.Queue = asyncio.Queue()
        for name in ("snapshot", "update", "removed", "error"):
            self.client.on(name, self._collector(name))

    def _collector(self, name):
        async def collect(data):
            await self.events.put((name, data))
        return collect

    async def connect(self, base: str, **kwargs) -> "SioClient":
        await self.client.connect(base, transports=["websocket"], wait_timeout=10, **kwargs)
        return self

    async def subscribe(self, key) -> dict:
        await self.client.emit("subscribe", key)
        return await self.expect("snapshot")

    async def expect(self, event: str, timeout: float = 10.0):
        while True:
            name, data = await asyncio.wait_for(self.events.get(), timeout)
            if name == event:
                return data

    async def until(self, predicate, timeout: float = 10.0) -> list:
        """Collect 'update' payloads until *predicate*(all nodes seen so far by key) holds."""
        seen: dict[str, dict] = {}
        payloads = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(seen):
            name, data = await asyncio.wait_for(self.events.get(), max(0.01, deadline - loop.time()))
            if name == "update":
                payloads.append(data)
                for node in data["nodes"]:
                    seen[node["key"]] = node
        return payloads

    async def quiet(self, seconds: float = 0.5) -> list:
        """Everything that arrives within *seconds*."""
        got = []
        try:
            while True:
                got.append(await asyncio.wait_for(self.events.get(), seconds))
        except asyncio.TimeoutError:
            return got

    async def close(self) -> None:
        await self.client.disconnect()


class SseReader:
    """Reads GET /events/<key> into a queue of (event, id, data)."""

    def __init__(self, url: str, headers: dict | None = None) -> None:
        self.url = url
        self.headers = headers or {}
        self.events: asyncio.Queue = asyncio.Queue()
        self.comments = 0
        self.retry = None
        self._buf = b""
        self.response = None

    def _on_chunk(self, chunk: bytes) -> None:
        self._buf += chunk
        while b"\n\n" in self._buf:
            block, self._buf = self._buf.split(b"\n\n", 1)
            fields = {}
            for line in block.split(b"\n"):
                if line.startswith(b":"):
                    self.comments += 1
                    continue
                name, _, value = line.partition(b": ")
                fields[name.decode()] = value
            if "retry" in fields:
                self.retry = int(fields["retry"])
            if "event" in fields:
                self.events.put_nowait((fields["event"].decode(), fields["id"].decode(), orjson.loads(fields["data"])))

    def start(self) -> "SseReader":
        req = HTTPRequest(self.url, headers=self.headers, streaming_callback=self._on_chunk,
                          request_timeout=3600, header_callback=self._on_header)
        self.headers_seen: list[str] = []
        self.task = asyncio.ensure_future(AsyncHTTPClient(force_instance=True).fetch(req, raise_error=False))
        return self

    def _on_header(self, line: str) -> None:
        self.headers_seen.append(line)

    async def expect(self, event: str, timeout: float = 10.0):
        while True:
            name, event_id, data = await asyncio.wait_for(self.events.get(), timeout)
            if name == event:
                return event_id, data

    def close(self) -> None:
        self.task.cancel()


def sse_until(base: str, key: str, act, wanted: bytes, timeout: float = 15.0) -> bytes:
    """Open GET /events/<key>, call *act* once the snapshot came, read until *wanted* shows."""
    import http.client
    import time

    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    conn.request("GET", f"/events/{key}")
    resp = conn.getresponse()
    seen, acted = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = resp.fp.read1(65536)
            if not chunk:
                break
            seen += chunk
            if not acted and b"event: snapshot" in seen:
                act()
                acted = True
            if acted and wanted in seen.split(b"event: snapshot", 1)[1]:
                return seen
    finally:
        conn.close()
    raise AssertionError(f"no {wanted!r} in the feed: {seen[-500:]!r}")
