"""Server-Sent Events: GET /events/<key> (text/event-stream), the same feed as socket.io.

    event: snapshot / update / removed   with "id:" lines and JSON data, as on socket.io
    ": hb"                                 a heartbeat comment every HEARTBEAT_S seconds

The browser's EventSource reconnects by itself; every (re)connection starts
with a fresh snapshot, so nothing missed while away is left out.
"""
from __future__ import annotations

import asyncio

import orjson
import tornado.web

from sca_progress.engine import InvalidUpdate
from sca_progress.engine.keys import TOP

from .feed import Subscription
from .handlers import BaseHandler

HEARTBEAT_S = 15.0
RETRY_MS = 2000


class SseSink:
    def __init__(self, handler: tornado.web.RequestHandler) -> None:
        self.handler = handler
        self.event_id = 0
        self._flushing: asyncio.Future | None = None

    def busy(self) -> bool:
        return self._flushing is not None and not self._flushing.done()

    async def send(self, event: str, data: dict) -> None:
        self.event_id += 1
        self.write(b"event: " + event.encode() + b"\nid: " + str(self.event_id).encode()
                   + b"\ndata: " + orjson.dumps(data) + b"\n\n")

    def write(self, chunk: bytes) -> None:
        """Write and flush without waiting for the client; busy() tells when it lags."""
        if self.handler.request.connection.stream.closed():
            return
        self.handler.write(chunk)
        self._flushing = self.handler.flush()
        self._flushing.add_done_callback(lambda f: f.exception())  # a closed client is not an error


class EventsHandler(BaseHandler):
    def initialize(self) -> None:
        self._closed = asyncio.Event()

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")  # proxies: do not buffer the stream
        self.set_header("Content-Encoding", "identity")  # never gzip a stream of events

    async def get(self, key: str = TOP) -> None:
        hub = self.service.hub
        try:
            sub = Subscription(key, SseSink(self))
        except InvalidUpdate:
            self.clear_header("Content-Encoding")
            raise
        sink = sub.sink
        sink.write(f"retry: {RETRY_MS}\n\n".encode())
        await hub.add(sub)
        ends = [asyncio.ensure_future(self._closed.wait()), asyncio.ensure_future(hub.stopped.wait())]
        try:
            while not (self._closed.is_set() or hub.stopped.is_set()):
                await asyncio.wait(ends, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED)
                if not (self._closed.is_set() or hub.stopped.is_set()):
                    sink.write(b": hb\n\n")
        finally:
            for f in ends:
                f.cancel()
            await hub.remove(sub)

    def on_connection_close(self) -> None:
        self._closed.set()
