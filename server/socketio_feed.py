"""The socket.io live feed (python-socketio on the Tornado server, at /socket.io/).

Client events:  subscribe <key>, unsubscribe <key>
Server events:  snapshot {key, node, _now}    the node as GET /status/<key>?depth=2 gives it
                update   {key, nodes, _now}   changed nodes at or below key, ancestors first
                removed  {key, removed, _now} deleted (or purged) keys
                error    {code, message}      a bad request, for example an invalid key

A subscription to a namespace (``_portal``) gets the changes of the trees
below it.  Closing the socket ends its subscriptions; a client that
reconnects subscribes again and gets a fresh snapshot.

With auth on, the connect carries the bearer token in its ``auth`` payload
(``{"token": "..."}``; a ``token`` query parameter is the fallback): no
valid token, no connection.  A subscribe outside the token's read scopes gets
an ``error`` (forbidden); the socket is dropped when the token expires.
"""
from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import parse_qs

import engineio.packet
import orjson
import socketio
import socketio.packet
import tornado.websocket

from sca_progress.engine import ProgressError
from sca_progress.engine.errors import Unauthorized

from .auth import Grant
from .feed import Frame, Hub, Subscription

log = logging.getLogger("sca_progress.socketio")

#: A client with more than this many bytes, or packets, not yet written to it
#: is busy: its changes keep coalescing until it has drained.
BUSY_BYTES = 256 * 1024
BUSY_PACKETS = 4


class _OrjsonForSocketio:
    """python-socketio's json hook: orjson, which also embeds orjson.Fragment values."""

    @staticmethod
    def dumps(obj, **_kwargs) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(s, **_kwargs):
        return orjson.loads(s)


class _TextPacket(socketio.packet.Packet):
    """Our events never carry bytes, so skip python-socketio's walk through every
    outgoing payload looking for some: that walk took 14 % of the server's CPU
    in bench.feed.  Binary packets from clients still decode as before."""

    uses_binary_events = False


class SioSink:
    transport = "socketio"

    def __init__(self, sio: socketio.AsyncServer, sid: str) -> None:
        self.sio = sio
        self.sid = sid

    def busy(self) -> bool:
        """Packets queued in engine.io, or bytes in the websocket's stream, not yet
        written to the client (python-socketio itself buffers without bound)."""
        try:
            eio_sid = self.sio.manager.eio_sid_from_sid(self.sid, "/")
            sock = self.sio.eio.sockets.get(eio_sid)
            if sock is None:
                return False
            if sock.queue.qsize() > BUSY_PACKETS:
                return True
            handler = self.sio.get_environ(self.sid).get("tornado.handler")
            stream = getattr(getattr(handler, "ws_connection", None), "stream", None)
            if stream is None:
                return False
            return stream._total_write_index - stream._total_write_done_index > BUSY_BYTES
        except Exception:  # noqa: BLE001 - internals moved: never block a client on it
            return False

    async def send(self, event: str, data: dict) -> None:
        await self.sio.emit(event, data, to=self.sid)

    async def send_frame(self, frame: Frame) -> None:
        """The frame's socket.io packet, built once for every socket that gets it."""
        pkt = frame.wire.get("sio")
        if pkt is None:
            # An EVENT packet of the default namespace: '2' and the JSON array
            # [event, data] (what python-socketio's Packet.encode writes).
            text = '2["' + frame.event + '",' + frame.json.decode() + "]"
            pkt = frame.wire["sio"] = engineio.packet.Packet(engineio.packet.MESSAGE, text)
        eio_sid = self.sio.manager.eio_sid_from_sid(self.sid, "/")
        if eio_sid is not None:
            await self.sio.eio.send_packet(eio_sid, pkt)


def socketio_handler(sio: socketio.AsyncServer, cors_origins: list[str]):
    """The Tornado handler of /socket.io/: python-socketio's, with two changes.

    - A websocket from another site is refused at the handshake (403): the
      stock handler let any origin upgrade when no origin list was given, and
      engine.io then refused it silently, leaving the socket open.
    - No permessage-deflate: with it, every frame is compressed once per
      socket, which undoes sending one encoded frame to every subscriber of a
      key (server/feed.py).
    """
    allowed = frozenset(cors_origins)

    class Handler(socketio.get_tornado_handler(sio)):
        route = "/socket.io"  # metrics, and the access log's streams (server/logs.py)

        def check_origin(self, origin: str) -> bool:
            if origin in allowed:
                return True
            return tornado.websocket.WebSocketHandler.check_origin(self, origin)  # same origin only

        def get_compression_options(self):
            return None

    return Handler


def _quiet_logger(name: str) -> logging.Logger:
    """A logger of ours for python-socketio / python-engineio: given none, they
    add a plain-text handler of their own to stderr, beside the service's
    (--log-format json) lines.  Theirs log every packet at INFO: warnings up."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.WARNING)
    return logger


def make_socketio(service, cors_origins: list[str] | None = None) -> socketio.AsyncServer:
    """The socket.io server of *service* (whose hub follows the subscriptions)."""
    sio = socketio.AsyncServer(async_mode="tornado", serializer=_TextPacket, json=_OrjsonForSocketio,
                               cors_allowed_origins=cors_origins or None,  # None: same origin only
                               logger=_quiet_logger("sca_progress.socketio.lib"),
                               engineio_logger=_quiet_logger("sca_progress.engineio"))
    subscriptions: dict[str, dict[str, Subscription]] = {}
    grants: dict[str, Grant] = {}
    locks: dict[str, asyncio.Lock] = {}
    expiries: dict[str, asyncio.Task] = {}

    def hub_of() -> Hub:
        return service.hub

    async def error(sid: str, code: str, message: str) -> None:
        await sio.emit("error", {"code": code, "message": message}, to=sid)

    async def expire(sid: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await error(sid, "unauthorized", "the token has expired")
        await sio.disconnect(sid)

    @sio.event
    async def connect(sid, environ, auth=None):
        token = auth.get("token") if isinstance(auth, dict) else None
        if token is None:
            token = (parse_qs(environ.get("QUERY_STRING", "")).get("token") or [None])[0]
        try:
            grant = service.auth.verify(token)
        except Unauthorized as e:
            # The client's connect_error gets {message, data: {code, message}}.
            raise socketio.exceptions.ConnectionRefusedError(e.message, e.as_dict()) from None
        grants[sid] = grant
        subscriptions[sid] = {}
        locks[sid] = asyncio.Lock()
        if grant.expires != float("inf"):
            expiries[sid] = asyncio.create_task(expire(sid, grant.expires - time.time()))

    @sio.event
    async def subscribe(sid, key=None):
        # One subscribe or unsubscribe of a client at a time: python-socketio
        # runs each event in a task of its own, and two subscribes of one key
        # racing each other used to leave one subscription behind for good.
        lock = locks.get(sid)
        if lock is None:  # not (or no longer) connected: nothing is allowed
            return
        async with lock:
            await _subscribe(sid, key)

    async def _subscribe(sid, key):
        grant = grants.get(sid)
        if grant is None:
            return
        if not isinstance(key, str):
            await error(sid, "bad-key", "subscribe takes a key (a string)")
            return
        hub = hub_of()
        mine = subscriptions[sid]
        old = mine.pop(key, None)
        if old is not None:
            await hub.remove(old)
        try:
            sub = Subscription(key, SioSink(sio, sid))
            grant.check_read(key)
            await hub.add(sub)
        except ProgressError as e:
            await error(sid, e.code, e.message)
            return
        if sid not in subscriptions:  # disconnected while the snapshot was read
            await hub.remove(sub)
            return
        mine[key] = sub

    @sio.event
    async def unsubscribe(sid, key=None):
        lock = locks.get(sid)
        if lock is None:
            return
        async with lock:
            sub = subscriptions.get(sid, {}).pop(key, None) if isinstance(key, str) else None
            if sub is None:
                await error(sid, "not-subscribed", f"no subscription to {key!r}")
                return
            await hub_of().remove(sub)

    @sio.event
    async def disconnect(sid, reason=None):
        # Not under the client's lock: a subscribe in flight sees the client
        # gone when it is done, and drops what it made.
        locks.pop(sid, None)
        grants.pop(sid, None)
        task = expiries.pop(sid, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        for sub in subscriptions.pop(sid, {}).values():
            await hub_of().remove(sub)

    return sio
