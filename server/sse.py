"""Server-Sent Events: GET /events/<key> (text/event-stream), the same feed as socket.io.

    event: snapshot / update / removed   with "id:" lines and JSON data, as on socket.io
    ": hb"                                 a heartbeat comment every HEARTBEAT_S seconds

The browser's EventSource reconnects by itself; every (re)connection starts
with a fresh snapshot, so nothing missed while away is left out.
"""
from __future__ import annotations

import asyncio
import time

import orjson
import tornado.web

from sca_progress.engine import ProgressError
from sca_progress.engine.keys import TOP

from .auth import OPEN, bearer
from .feed import Frame, Subscription
from .handlers import BaseHandler

HEARTBEAT_S = 15.0
RETRY_MS = 2000


class SseSink:
    transport = "sse"

    def __init__(self, handler: tornado.web.RequestHandler) -> None:
        self.handler = handler
        self.event_id = 0
        self._flushing: asyncio.Future | None = None

    def busy(self) -> bool:
        return self._flushing is not None and not self._flushing.done()

    async def send(self, event: str, data: dict) -> None:
        self._event(event.encode(), orjson.dumps(data))

    async def send_frame(self, frame: Frame) -> None:
        """The frame's JSON, encoded once for every stream that gets it."""
        self._event(frame.event.encode(), frame.json)

    def _event(self, event: bytes, data: bytes) -> None:
        self.event_id += 1
        self.write(b"".join((b"event: ", event, b"\nid: ", str(self.event_id).encode(), b"\ndata: ", data, b"\n\n")))

    def write(self, chunk: bytes) -> None:
        """Write and flush without waiting for the client; busy() tells when it lags."""
        if self.handler.request.connection.stream.closed():
            return
        self.handler.write(chunk)
        self._flushing = self.handler.flush()
        self._flushing.add_done_callback(lambda f: f.exception())  # a closed client is not an error


class EventsHandler(BaseHandler):
    """Auth: a ticket (?ticket=, from POST /auth/ticket) or a bearer header; the
    stream ends when the token behind it expires."""

    public = True  # authenticated in get(): a ticket or a bearer header
    route = "/events/{key}"

    settles = False  # streams are ended by Service.close_feeds before shutdown settles

    def initialize(self) -> None:
        super().initialize()
        self._closed = asyncio.Event()

    def set_default_headers(self) -> None:
        super().set_default_headers()  # CORS for allowed origins
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")  # proxies: do not buffer the stream
        self.set_header("Content-Encoding", "identity")  # never gzip a stream of events

    async def get(self, key: str = TOP) -> None:
        hub = self.service.hub
        hub.stream_started()
        try:
            await self._stream(hub, key)
        finally:
            hub.stream_ended()

    async def _stream(self, hub, key: str) -> None:
        try:
            grant = OPEN
            if self.service.auth.enabled:
                ticket = self.get_query_argument("ticket", None)
                grant = (await self.service.redeem_ticket(ticket) if ticket
                         else self.service.auth.verify(bearer(self.request.headers.get("Authorization"))))
            sub = Subscription(key, SseSink(self))
            grant.check_read(key)
        except ProgressError:
            self.clear_header("Content-Encoding")
            self.set_header("Content-Type", "application/json")
            raise
        sink = sub.sink
        sink.write(f"retry: {RETRY_MS}\n\n".encode())
        await hub.add(sub)
        ends = [asyncio.ensure_future(self._closed.wait()), asyncio.ensure_future(hub.stopped.wait())]
        expires = asyncio.get_running_loop().time() + min(grant.expires - time.time(), 10 * 365 * 86400)
        try:
            while not (self._closed.is_set() or hub.stopped.is_set()):
                left = expires - asyncio.get_running_loop().time()
                if left <= 0:
                    await sink.send("error", {"code": "unauthorized", "message": "the token has expired"})
                    break
                await asyncio.wait(ends, timeout=min(HEARTBEAT_S, left), return_when=asyncio.FIRST_COMPLETED)
                if not (self._closed.is_set() or hub.stopped.is_set()):
                    sink.write(b": hb\n\n")
        finally:
            for f in ends:
                f.cancel()
            await hub.remove(sub)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._closed.set()
