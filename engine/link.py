"""A lean, multiplexed connection to one Redis for the engine's script calls.

Every write and read of the service is a round trip of script calls.
Through redis-py's asyncio client (8.x) a round trip costs this process
~100 µs of CPU (its pool, retry, timeout and observability layers) against
~12 µs for the same bytes through an asyncio protocol and hiredis's reply
parser (bench/README.md, "REST").  So the engine's calls go through this
link: one connection, shared by every caller of the process, each call's
commands written in one piece and its replies read back in order (Redis
answers in order, so concurrent calls pipeline on the one socket by
themselves).

It takes its address, credentials, database and TLS settings from the
redis-py client it is made from (``RedisLink.of(client)``), which the rest
of the service keeps using for everything else.  A failure (lost
connection, timeout) fails every call in flight with redis-py's
ConnectionError or TimeoutError, so callers see what redis-py would raise;
the next call connects again.  Error replies come back as values
(redis.exceptions.ResponseError), as redis-py's pipelines return them with
raise_on_error=False.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import time

import hiredis
from redis import exceptions as rex
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection


#: The connection's name in CLIENT LIST starts with this (then pid and a serial).
NAME = "sca-progress-engine"
_serial = itertools.count(1)


def pack(args) -> bytes:
    """One command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    add = out.append
    for a in args:
        t = type(a)
        if t is str:
            a = a.encode()
        elif t is int:
            a = b"%d" % a
        elif t is not bytes:
            a = repr(a).encode() if t is float else str(a).encode()
        add(b"$%d\r\n" % len(a))
        add(a)
        add(b"\r\n")
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self, link: "RedisLink") -> None:
        self.link = link
        self.reader = hiredis.Reader(replyError=rex.ResponseError)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.link._waiting
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as e:
                self.link._fail(rex.ConnectionError(f"protocol error from redis: {e}"))
                return
            if reply is False:
                return
            if not waiting:  # nobody asked: the stream is out of step
                self.link._fail(rex.ConnectionError("unexpected reply from redis"))
                return
            entry = waiting[0]
            entry[1].append(reply)
            if len(entry[1]) == entry[0]:
                waiting.popleft()
                if not entry[2].done():
                    entry[2].set_result(entry[1])

    def connection_lost(self, exc) -> None:
        self.link._lost(self, exc)


class RedisLink:
    """execute(commands) -> their replies, over one shared connection."""

    def __init__(self, connect, setup: list[tuple], timeout: float | None = 30.0) -> None:
        """*connect*: a coroutine function returning (transport, protocol);
        *setup*: commands sent first on every connection; *timeout*: seconds
        a call may wait for its replies (None: forever)."""
        self._connect = connect  # coroutine function: -> (transport, protocol)
        self._setup = setup  # commands sent first on every connection (AUTH, SELECT)
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future | None = None
        #: per call in flight, in order: [replies expected, replies so far, future, sent at]
        self._waiting: collections.deque = collections.deque()
        #: commands of this loop turn's calls, written together at its end (_flush)
        self._outgoing: list[bytes] | None = None
        self._watchdog: asyncio.Task | None = None
        self.name = ""
        self.connects = 0  # connections opened (metrics: more than one is a reconnect)
        self.failures = 0  # connections dropped by a failure (lost, timed out, refused)

    @classmethod
    def of(cls, client) -> "RedisLink":
        """A link to the Redis a redis-py asyncio client points at."""
        pool = client.connection_pool
        return cls.for_connection(pool.connection_kwargs, pool.connection_class)

    @classmethod
    def for_connection(cls, kw: dict, conn_class=None) -> "RedisLink":
        """A link to the Redis that redis-py connection options *kw* (of
        *conn_class*, by default TCP, or TLS when kw says ssl) name."""
        if conn_class is None:
            conn_class = SSLConnection if kw.get("ssl") or "ssl_ca_certs" in kw else Connection
        loop_connect_timeout = kw.get("socket_connect_timeout") or 5.0
        setup: list[tuple] = []
        if kw.get("password") is not None:
            setup.append(("AUTH", kw["username"], kw["password"]) if kw.get("username") else ("AUTH", kw["password"]))
        if kw.get("db"):
            setup.append(("SELECT", kw["db"]))
        # so CLIENT LIST shows what it is, and whose
        name = f"{NAME}:{os.getpid()}:{next(_serial)}"
        setup.append(("CLIENT", "SETNAME", name))

        async def connect():
            loop = asyncio.get_running_loop()
            if issubclass(conn_class, UnixDomainSocketConnection):
                factory = loop.create_unix_connection(lambda: _Protocol(link), kw["path"])
            else:
                ssl = None
                if issubclass(conn_class, SSLConnection):
                    ssl = conn_class(**kw).ssl_context.get()
                factory = loop.create_connection(lambda: _Protocol(link), kw.get("host", "localhost"),
                                                 kw.get("port", 6379), ssl=ssl)
            return await asyncio.wait_for(factory, loop_connect_timeout)

        link = cls(connect, setup, timeout=kw.get("socket_timeout") or 30.0)
        link.name = name
        return link

    async def execute(self, commands: list) -> list:
        """Send *commands* (tuples of arguments); return their replies in
        order, error replies as ResponseError values.  The calls made in one
        turn of the event loop (concurrent requests) go out in one write at
        its end: one system call, and Redis reads them in one go."""
        protocol = self._protocol or await self._open()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        # A call whose caller is cancelled leaves its entry: its replies still
        # come, in their turn, and are dropped.
        self._waiting.append([len(commands), [], future, time.monotonic()])
        out = self._outgoing
        if out is None:
            out = self._outgoing = []
            loop.call_soon(self._flush, protocol, out)
        out.extend([pack(c) for c in commands])
        return await future

    def _flush(self, protocol: _Protocol, out: list[bytes]) -> None:
        """Write the commands *out* queued for *protocol* in this loop turn
        (dropped when that connection failed meanwhile: their calls failed
        with it)."""
        if self._outgoing is out:
            self._outgoing = None
        if protocol is self._protocol:
            protocol.transport.write(b"".join(out))

    async def _watch(self) -> None:
        """Fail the calls in flight when the oldest has waited past the timeout
        (one timer for the link, not one per call)."""
        while True:
            await asyncio.sleep(min(1.0, self.timeout / 4))
            waiting = self._waiting
            if waiting and time.monotonic() - waiting[0][3] > self.timeout:
                self._fail(rex.TimeoutError(f"redis did not answer within {self.timeout} s"))

    async def _open(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._dial())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _dial(self) -> _Protocol:
        try:
            _, protocol = await self._connect()
        except (OSError, asyncio.TimeoutError) as e:
            raise rex.ConnectionError(f"cannot connect to redis: {e!r}") from e
        self._protocol = protocol
        self.connects += 1
        if self.timeout and (self._watchdog is None or self._watchdog.done()):
            self._watchdog = asyncio.ensure_future(self._watch())
        if self._setup:
            for reply in await self.execute(self._setup):
                if isinstance(reply, Exception):
                    self._fail(rex.ConnectionError(f"redis refused the connection: {reply}"))
                    raise rex.AuthenticationError(str(reply))
        return protocol

    def _fail(self, error: Exception, failure: bool = True) -> None:
        """Drop the connection: every call in flight fails with *error*."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None and failure:
            self.failures += 1
        waiting, self._waiting = self._waiting, collections.deque()
        self._outgoing = None
        for entry in waiting:
            future = entry[2]
            if not future.done():
                future.set_exception(error)
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()

    def _lost(self, protocol: _Protocol, exc) -> None:
        if protocol is self._protocol:
            self._fail(rex.ConnectionError(f"connection to redis lost: {exc or 'closed'}"))

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        self._fail(rex.ConnectionError("the link was closed"), failure=False)
