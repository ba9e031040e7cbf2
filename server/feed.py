"""Live feeds: the subscriptions of this process, fed by Redis pub/sub, coalesced per tick.

    writer (any server process)
      apply_updates.lua / delete_subtree.lua publish a watched tree's changed
      records on '<prefix>:{<root>}:f'; the writer publishes the trees it
      touched under a watched namespace on '<prefix>:{<ns>}:f' (in the
      batch's round trip: engine/namespaces.py, feed_commands)
    here (Hub)
      one pub/sub connection, subscribed to the channels our subscriptions need;
      a message lands in the pending changes of each subscription it concerns
      (latest state per node); every tick each subscription with something
      pending gets one 'update' (nodes, ancestors first) and/or 'removed'.

A tree or namespace counts as watched while its marker '<...>:w' exists: each
process refreshes the markers of what it watches (WATCH_TTL_MS, refreshed
three times per TTL), so writers publish nothing for trees nobody follows.

Subscriptions to the same key form a group: a change is noted once per
group, and each tick's 'update' of a group is encoded once (a Frame) and
the same bytes go to every subscriber that is keeping up.  A subscriber that
is not (its client has not drained what it was sent) gets its own backlog
instead, coalescing the latest state per node (bounded by MAX_PENDING nodes,
beyond which it gets a fresh snapshot), and is sent it by itself once it has
drained: a client that reads slowly never holds anyone up.

Redis pub/sub is at most once: when the pub/sub connection is lost and comes
back, every subscription gets a fresh snapshot.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections import defaultdict
from typing import Protocol

import orjson
from redis import exceptions as rex
from sca_progress.engine import (
    NotFound,
    ProgressError,
    StorageUnavailable,
    check_key,
    is_namespace,
    now_ms,
    tree_root,
)
from sca_progress.engine.keys import TOP
from sca_progress.engine.records import decode, keyed_records, record_update_time
from sca_progress.engine.scripts import unpack

from .tasks import cancel_and_wait, wait_event

#: Seconds each master's pub/sub connection is waited on in turn (Redis Cluster).
CLUSTER_POLL_S = 0.02
log = logging.getLogger("sca_progress.feed")

WATCH_TTL_MS = 30_000
#: Most nodes a subscription may have pending before it is resynchronised
#: with a snapshot instead (a slow client of a very busy tree).
MAX_PENDING = 10_000


#: How late writers may learn that a namespace is watched (engine/namespaces.py
#: looks it up at most once a second), with a margin.
NAMESPACE_WATCH_LAG_S = 1.5


def _resync(sub: "Subscription") -> None:
    sub.resync = True


class Frame:
    """One event encoded once, for every subscriber of a group that gets it.
    Sinks keep their own wire form of it in ``wire`` (built once too)."""

    __slots__ = ("event", "json", "wire")

    def __init__(self, event: str, data: dict) -> None:
        self.event = event
        self.json = orjson.dumps(data)
        self.wire: dict = {}


class Sink(Protocol):
    """Where a subscription's events go: a socket.io client or an SSE stream."""

    #: "socketio" or "sse" (metrics label).
    transport: str

    def busy(self) -> bool:
        """True while earlier events have not reached the client yet."""

    async def send(self, event: str, data: dict) -> None:
        """Queue one event (never waits for the client).  *data* may hold
        orjson.Fragment values (JSON already encoded): serialize it with orjson."""

    async def send_frame(self, frame: Frame) -> None:
        """Queue an event encoded once for many subscribers."""


class Subscription:
    def __init__(self, key: str, sink: Sink) -> None:
        if key != TOP:
            check_key(key)
        self.key = key
        self.sink = sink
        self.namespace = is_namespace(key)
        #: changes not sent yet because the client lagged or the snapshot was
        #: being read: node key -> record (trees) / None (a namespace's child)
        self.backlog: dict[str, bytes | None] = {}
        self.removed: list[str] = []
        self.resync = False
        self.ready = False  # its snapshot went out: updates may follow
        self.base = ""  # marker/channel prefix, set by the hub

    def concerns(self, key: str) -> bool:
        """Is *key* this subscription's node or below it?"""
        return self.key == TOP or key == self.key or key.startswith(self.key + ".")


class Group:
    """The subscriptions to one key, and the changes they all have pending."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.namespace = is_namespace(key)
        self.subs: set[Subscription] = set()
        self.pending: dict[str, bytes | None] = {}
        self.removed: list[str] = []

    def concerns(self, key: str) -> bool:
        return self.key == TOP or key == self.key or key.startswith(self.key + ".")


class Hub:
    def __init__(self, service, tick: float = 0.1) -> None:
        self.service = service
        self.tick = tick
        self.engine = service.engine
        self.redis = service.redis
        self.by_base: dict[str, dict[str, Group]] = defaultdict(dict)  # channel base -> key -> group
        self.pubsub = None
        self._confirmed: dict[str, asyncio.Event] = {}
        self._connects = 0
        self._tasks: list[asyncio.Task] = []
        self._lock = asyncio.Lock()
        self.sharded = self.engine.feed_command == "SPUBLISH"
        #: On a Redis Cluster the feed is sharded pub/sub through redis-py's ClusterPubSub.
        self.cluster = self.engine.cluster
        self.stopped = asyncio.Event()  # set by close(): SSE streams end
        self.sent: collections.Counter = collections.Counter()  # events sent, by transport (metrics)
        self._streams = 0  # SSE handlers running: close() waits for them
        self._no_streams = asyncio.Event()
        self._no_streams.set()

    async def start(self) -> None:
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=False)
        self._tasks = [asyncio.create_task(self._listen(), name="feed-listen"),
                       asyncio.create_task(self._tick(), name="feed-tick"),
                       asyncio.create_task(self._refresh_watches(), name="feed-watch")]

    def stream_started(self) -> None:
        self._streams += 1
        self._no_streams.clear()

    def stream_ended(self) -> None:
        self._streams -= 1
        if self._streams == 0:
            self._no_streams.set()

    async def close(self) -> None:
        """End every stream (and wait for their handlers: none may still use Redis
        once the service closes it), then stop listening."""
        self.stopped.set()
        await wait_event(self._no_streams, 10)
        await cancel_and_wait(self._tasks)
        if self.pubsub is not None:
            with contextlib.suppress(Exception):
                await self.pubsub.aclose()

    # -- subscriptions -----------------------------------------------------------

    async def add(self, sub: Subscription) -> None:
        """Watch, subscribe (confirmed), then send the snapshot: a change made after
        the snapshot was read always reaches the subscription.  Raises
        StorageUnavailable (and keeps nothing) when Redis cannot be reached."""
        if self.stopped.is_set():
            raise StorageUnavailable("the server is shutting down")
        sub.base = self.engine.keys.feed_base(sub.key)
        async with self._lock:
            first = not self.by_base.get(sub.base)
            groups = self.by_base[sub.base]
            group = groups.get(sub.key)
            if group is None:
                group = groups[sub.key] = Group(sub.key)
            group.subs.add(sub)
            if first:
                try:
                    await self.redis.set(sub.base + "w", b"1", px=WATCH_TTL_MS)
                    await self._subscribe(sub.base + "f")
                    if sub.namespace:
                        self.engine.namespaces.watching(sub.key)
                except (rex.RedisError, OSError, asyncio.TimeoutError) as e:
                    self._drop(sub)
                    raise StorageUnavailable(f"redis unavailable: {e}") from e
        try:
            await self._snapshot(sub)
        except ProgressError:
            sub.resync = True  # the tick tries again
        if sub.namespace:
            # Writers in other processes learn that a namespace is watched up
            # to a second late (engine/namespaces.py): a second snapshot
            # covers that second.
            asyncio.get_running_loop().call_later(NAMESPACE_WATCH_LAG_S, _resync, sub)

    def _drop(self, sub: Subscription) -> bool:
        """Take *sub* out of its group; True when its channel has no subscriber left."""
        groups = self.by_base.get(sub.base)
        group = groups.get(sub.key) if groups else None
        if group is None or sub not in group.subs:
            return False
        group.subs.discard(sub)
        if not group.subs:
            del groups[sub.key]
        if not groups:
            del self.by_base[sub.base]
            return True
        return False

    async def remove(self, sub: Subscription) -> None:
        async with self._lock:
            if self._drop(sub):
                with contextlib.suppress(Exception):
                    if self.sharded:
                        await self.pubsub.sunsubscribe(sub.base + "f")
                    else:
                        await self.pubsub.unsubscribe(sub.base + "f")
                self._confirmed.pop(sub.base + "f", None)
                # The marker expires by itself: another process may still watch.

    def subscriptions(self) -> int:
        return sum(len(g.subs) for groups in self.by_base.values() for g in groups.values())

    def all_subscriptions(self):
        for groups in self.by_base.values():
            for group in groups.values():
                yield from group.subs

    async def _subscribe(self, channel: str) -> None:
        event = self._confirmed.setdefault(channel, asyncio.Event())
        event.clear()
        if self.sharded:
            await self.pubsub.ssubscribe(channel)
        else:
            await self.pubsub.subscribe(channel)
        if self.pubsub.connection is not None and self._connects == 0:
            self.pubsub.connection.register_connect_callback(self._on_connect)
            self._connects = 1
        await asyncio.wait_for(event.wait(), 10)

    async def _on_connect(self, _connection) -> None:
        """redis-py re-subscribes by itself after a lost connection; what was
        published meanwhile is lost, so every subscription gets a snapshot."""
        self._connects += 1
        if self._connects > 1:
            log.warning("pub/sub connection re-established: resynchronising %d subscriptions",
                        self.subscriptions())
            for sub in self.all_subscriptions():
                sub.resync = True

    async def _snapshot(self, sub: Subscription) -> None:
        """Send a fresh snapshot; changes that arrived while it was read and are
        not newer than what it shows are dropped, so no older state follows it."""
        sub.ready = False
        sub.removed.clear()
        sub.resync = False
        try:
            node = await self.engine.read(sub.key, depth=2)
        except NotFound:
            node = None  # not there yet: updates follow when it appears
        await sub.sink.send("snapshot", {"key": sub.key, "node": node, "_now": now_ms(),
                                         "_stall_after_ms": self.engine.stall_after_ms})
        self.sent[sub.sink.transport] += 1
        shown = {}
        stack = [node] if node else []
        while stack:
            n = stack.pop()
            shown[n["key"]] = n.get("update_time")
            stack.extend(n.get("tasks", []))
        for key, record in list(sub.backlog.items()):
            if record is None:  # a namespace's child: read fresh at the next tick anyway
                continue
            seen = shown.get(key)
            if seen is not None and record_update_time(record) <= seen:
                del sub.backlog[key]
        sub.ready = True

    # -- from Redis --------------------------------------------------------------

    async def _listen(self) -> None:
        delay = 0.1
        while not self.stopped.is_set():
            try:
                if self.cluster:
                    # redis-py's ClusterPubSub keeps one pub/sub connection per
                    # master owning a subscribed slot (and moves a channel when
                    # its slot moves); it polls them in turn, so each wait is short.
                    if not self.pubsub.shard_channels:
                        await asyncio.sleep(0.05)
                        continue
                    message = await self.pubsub.get_sharded_message(timeout=CLUSTER_POLL_S)
                elif not self.pubsub.subscribed:
                    await asyncio.sleep(0.05)
                    continue
                else:
                    message = await self.pubsub.get_message(timeout=1.0)
                delay = 0.1
                if message is not None:
                    self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except (rex.ConnectionError, rex.TimeoutError, OSError) as e:
                log.warning("pub/sub connection lost (%s); retrying in %.1f s", e, delay)
                for sub in self.all_subscriptions():
                    sub.resync = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
            except Exception:  # noqa: BLE001 - one bad message must not stop the feed
                log.exception("feed message failed")

    def _dispatch(self, message: dict) -> None:
        kind = message["type"]
        channel = message["channel"].decode()
        if kind in ("subscribe", "ssubscribe"):
            event = self._confirmed.get(channel)
            if event is not None:
                event.set()
            return
        if kind not in ("message", "smessage"):
            return
        groups = self.by_base.get(channel[:-1])
        if not groups:
            return
        parts = unpack(message["data"])
        items, removed = parts[1], parts[2]
        if len(parts) > 3 and parts[3]:  # a lifecycle notice of the tree (server/lifecycle.py)
            self._notice(groups, parts[3])
            return
        first = next(iter(groups.values()))  # one channel: one tree's, or one namespace's
        if first.namespace:
            changes = [(child.decode(), None) for child in items]
            removed = removed.decode() if removed else None
        else:  # the scripts name a tree's nodes relative to its root
            root = tree_root(first.key)
            changes = keyed_records(root, items, sort=False)
            if removed is not None and removed is not False:
                removed = root if removed == b"" else f"{root}.{removed.decode()}"
            else:
                removed = None
        for group in groups.values():
            pending = group.pending
            if group.namespace:
                pending.update(changes)
            else:
                for key, record in changes:
                    if group.concerns(key):
                        pending[key] = record
            if removed and (group.namespace or group.concerns(removed) or group.key.startswith(removed + ".")):
                group.removed.append(removed)
                for k in [k for k in pending if k == removed or k.startswith(removed + ".")]:
                    del pending[k]
            if len(pending) + len(group.removed) > MAX_PENDING:  # the tick will not catch up: start over
                pending.clear()
                group.removed.clear()
                for sub in group.subs:
                    sub.resync = True

    def _notice(self, groups: dict, body: bytes) -> None:
        """A lifecycle notice goes at once, as a 'notice' event, to every
        subscriber of the tree (whatever key of it they follow)."""
        frame = Frame("notice", orjson.loads(body))
        for group in groups.values():
            for sub in group.subs:
                if sub.ready:
                    task = asyncio.ensure_future(sub.sink.send_frame(frame))
                    task.add_done_callback(lambda t: t.exception())
                    self.sent[sub.sink.transport] += 1

    # -- to clients ----------------------------------------------------------------

    async def _tick(self) -> None:
        while not self.stopped.is_set():
            await asyncio.sleep(self.tick)
            try:
                await self._flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep ticking
                log.exception("feed tick failed")

    async def _flush(self) -> None:
        """One tick: each group's changes go out as one frame to every subscriber
        keeping up; the others get them in their backlog, sent on its own once
        their client has drained."""
        decoded: dict[tuple[str, bytes], dict] = {}  # this tick's node snapshots, shared by groups
        children: dict[str, dict] = {}  # this tick's reads of namespace children
        for groups in list(self.by_base.values()):
            for group in list(groups.values()):
                pending, removed = group.pending, group.removed
                group.pending, group.removed = {}, []
                update = gone = None
                for sub in list(group.subs):
                    try:
                        if sub.resync:  # also retries a snapshot that failed
                            sub.backlog.clear()
                            sub.removed.clear()
                            if not sub.sink.busy():
                                await self._snapshot(sub)
                            continue
                        if not (pending or removed or sub.backlog or sub.removed):
                            continue
                        if not sub.ready or sub.backlog or sub.removed or sub.sink.busy():
                            self._to_backlog(sub, pending, removed)
                            if sub.ready and not sub.sink.busy():
                                await self._send_backlog(sub, decoded, children)
                            continue
                        now = now_ms()
                        if pending and update is None:
                            nodes = await self._nodes(group, pending, decoded, children)
                            update = Frame("update", {"key": group.key, "nodes": nodes, "_now": now}) if nodes else False
                        if update:
                            await sub.sink.send_frame(update)
                            self.sent[sub.sink.transport] += 1
                        if removed:
                            if gone is None:
                                gone = Frame("removed", {"key": group.key, "removed": removed, "_now": now})
                            await sub.sink.send_frame(gone)
                            self.sent[sub.sink.transport] += 1
                    except ProgressError as e:  # Redis trouble: try again next tick
                        log.warning("feed of %r: %s", sub.key, e.message)
                        sub.resync = True

    def _to_backlog(self, sub: Subscription, pending: dict, removed: list) -> None:
        sub.backlog.update(pending)
        if removed:
            sub.removed.extend(removed)
            for r in removed:
                for k in [k for k in sub.backlog if k == r or k.startswith(r + ".")]:
                    del sub.backlog[k]
        if len(sub.backlog) + len(sub.removed) > MAX_PENDING:
            sub.backlog.clear()
            sub.removed.clear()
            sub.resync = True

    async def _send_backlog(self, sub: Subscription, decoded: dict, children: dict) -> None:
        now = now_ms()
        if sub.backlog:
            backlog, sub.backlog = sub.backlog, {}
            nodes = await self._nodes(sub, backlog, decoded, children)
            if nodes:
                await sub.sink.send("update", {"key": sub.key, "nodes": nodes, "_now": now})
                self.sent[sub.sink.transport] += 1
        if sub.removed:
            removed, sub.removed = sub.removed, []
            await sub.sink.send("removed", {"key": sub.key, "removed": removed, "_now": now})
            self.sent[sub.sink.transport] += 1

    async def _nodes(self, who, pending: dict, decoded: dict, children: dict) -> list:
        """The nodes of pending changes, ancestors first: decoded records of a
        tree (once per tick), or a namespace's children read fresh."""
        if who.namespace:
            missing = [k for k in pending if k not in children]
            if missing:
                children.update((n["key"], n) for n in await self.engine.read_many(missing))
            return [children[k] for k in pending if k in children]
        nodes = []
        clock = self.engine.reader.clock()  # now, eta window, stall: as a read would show them
        for key in sorted(pending, key=lambda k: k.count(".")):
            record = pending[key]
            node = decoded.get((key, record))
            if node is None:
                node = decoded[(key, record)] = decode(key, record, True, *clock)
            nodes.append(node)
        return nodes

    async def _refresh_watches(self) -> None:
        while not self.stopped.is_set():
            await asyncio.sleep(WATCH_TTL_MS / 3000)
            bases = list(self.by_base)
            if not bases:
                continue
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for base in bases:
                        pipe.set(base + "w", b"1", px=WATCH_TTL_MS)
                    await pipe.execute()
            except Exception as e:  # noqa: BLE001 - try again next round
                log.warning("could not refresh watch markers: %s", e)
