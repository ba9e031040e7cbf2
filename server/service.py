"""The service of one server process: its Redis, its engine, its AMQP ingestion,
and the path every write takes.

    REST handlers ─┐
    AMQP batcher ──┴─> Service.apply -> Engine.apply (one round trip) -> Redis
                                     └> completion events -> progress.events
    Redis pub/sub (changes of watched trees, from any process) -> Hub -> socket.io / SSE

Handlers and the batcher never call the engine's writers directly, so what
must follow a write (publishing completion events, waking the garbage
collector, live feeds) happens here, once.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

import redis.asyncio as aredis
from sca_progress.engine import (
    APPLIED,
    ApplyResult,
    DeleteResult,
    Engine,
    Event,
    Limits,
    StorageUnavailable,
    now_ms,
)
from sca_progress.engine.embedded import EmbeddedRedis
from sca_progress.engine.errors import RateLimited, Unauthorized, redis_errors

from .auth import OPEN, TICKET_TTL_MS, Authorizer, Grant, is_loopback, new_ticket
from .metrics import Metrics
from .settings import CANNOT_START, Settings
from .tasks import cancel_and_wait, wait_event

log = logging.getLogger("sca_progress.service")

#: Outbox events older than this are republished by the sweep (their
#: publisher probably died); younger ones are still in someone's hands.
EVENT_SWEEP_AGE_MS = 30_000
#: How often the sweep looks (a SCAN of the keyspace: not too often).
EVENT_SWEEP_INTERVAL_S = 120
#: Most connections of the service's redis-py pool.
REDIS_POOL_SIZE = 16
#: How often recency-index writes that are due are flushed when no batch takes them.
INDEX_FLUSH_S = 1.0


def _redacted(url: str) -> str:
    """*url* without its password."""
    import re

    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


class Service:
    def __init__(self, settings: Settings, worker: tuple[int, int] = (0, 1)) -> None:
        """*worker*: (index, count) of this process among --workers."""
        self.settings = settings
        self.worker = worker
        self.auth = Authorizer(settings)
        self.embedded: EmbeddedRedis | None = None
        self.redis: aredis.Redis | None = None
        self.engine: Engine | None = None
        self.link = None  # AmqpLink when --amqp-url is set
        self.batcher = None
        self.hub = None  # live feeds (feed.Hub)
        self.sio = None  # the socket.io server, set by make_app
        self._gc_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.closing = False
        #: Set at shutdown once the listener is closed: every answer says
        #: `Connection: close`, so keep-alive clients move on instead of
        #: sending more requests to a process about to exit.
        self.draining = False
        #: The requests being answered (handlers and hot-route answers), which
        #: shutdown lets finish before it closes connections (settle()).
        self.answering: set = set()
        self.updates_applied = 0  # by every source, since start (health, the load harness)
        self._publishing: set[asyncio.Task] = set()  # completion events on their way to the broker
        self.metrics = Metrics(self)

    @property
    def events_enabled(self) -> bool:
        return self.link is not None and bool(self.settings.amqp_events)

    async def start(self) -> None:
        s = self.settings
        if not self.auth.enabled and not is_loopback(s.host):
            log.warning("auth is off and the server listens on %s: anyone who can reach it can read, write "
                        "and delete progress trees (see --jwt-secret / --jwt-public-key)", s.host)
        url = s.redis_url
        if not url:
            self.embedded = EmbeddedRedis(s.data_dir, appendfsync=s.appendfsync)
            url = await asyncio.to_thread(self.embedded.start)
            log.info("no --redis-url: started an embedded Redis under %s (appendfsync %s)",
                     self.embedded.data_dir, s.appendfsync)
        # Reads and writes go through the engine's own connection (engine/link.py);
        # this pool serves the rest (pub/sub, health, tickets, housekeeping) and
        # is bounded: a burst waits for a connection instead of opening more.
        if await self._is_cluster(url):
            # redis-py's cluster client: discovers the masters from this node
            # and routes each command by slot (engine/cluster.py routes the scripts).
            self.redis = aredis.RedisCluster.from_url(url, max_connections=REDIS_POOL_SIZE,
                                                      socket_connect_timeout=5, socket_timeout=30)
            log.info("%s is a Redis Cluster node: calls are routed by hash slot", _redacted(url))
        else:
            pool = aredis.BlockingConnectionPool.from_url(url, max_connections=REDIS_POOL_SIZE, timeout=10,
                                                          socket_connect_timeout=5, socket_timeout=30,
                                                          health_check_interval=30)
            self.redis = aredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it
        self.engine = Engine(self.redis, prefix=s.prefix, eta_window_ms=int(s.eta_window * 1000), feed=True,
                             stall_after_ms=int(s.stall_after * 1000), history_samples=s.history_samples,
                             history_step_ms=max(1, round(s.history_step * 1000)),
                             limits=Limits(max_nodes_per_tree=s.max_nodes_per_tree))
        try:
            await self._until_redis_answers()
        except BaseException:
            await self.close()  # the embedded Redis, if any, must not outlive us
            raise
        self._tasks.append(asyncio.create_task(self._collect_garbage(), name="gc"))
        self._tasks.append(asyncio.create_task(self._flush_index(), name="index"))
        from .feed import Hub

        self.hub = Hub(self, tick=s.feed_tick)
        await self.hub.start()
        from .retention import Retention

        self.retention = Retention(self)
        if self.retention.enabled:
            self._tasks.append(asyncio.create_task(self.retention.run(), name="retention"))
        if s.amqp_url:
            await self._start_ingestion()
        from .lifecycle import Lifecycle

        self.lifecycle = Lifecycle(self)
        if self.lifecycle.enabled:
            self._tasks.append(asyncio.create_task(self.lifecycle.run(), name="lifecycle"))
        else:
            log.info("no --amqp-url: serving REST and live feeds only (no AMQP ingestion, no completion events)")

    async def _start_ingestion(self) -> None:
        from .amqp import AmqpLink
        from .batcher import Batcher

        self.batcher = Batcher(self, self.settings)
        self.link = AmqpLink(self.settings, self.batcher.deliver, worker=self.worker)
        self.batcher.link = self.link
        self._tasks.append(asyncio.create_task(self.link.start(), name="amqp-connect"))
        self._batching = asyncio.create_task(self.batcher.run(), name="batcher")
        if self.events_enabled:
            self._tasks.append(asyncio.create_task(self._sweep_events(), name="events"))

    async def _is_cluster(self, url: str) -> bool:
        """--redis-cluster yes or no, or (auto) what the node says in INFO cluster;
        waits (capped backoff) while the node cannot be reached."""
        mode = self.settings.redis_cluster
        delay = 0.5
        while True:
            probe = aredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
            try:
                enabled = bool((await probe.info("cluster")).get("cluster_enabled"))
                if mode != "auto" and enabled != (mode == "yes"):
                    log.error("--redis-cluster %s, but %s is %s Redis Cluster node (auto asks the node)",
                              mode, _redacted(url), "a" if enabled else "not a")
                    raise SystemExit(CANNOT_START)
                return enabled
            except (OSError, aredis.ConnectionError, aredis.TimeoutError) as e:
                log.warning("redis unreachable (%s); retrying in %.1f s", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
            finally:
                await probe.aclose()

    async def _until_redis_answers(self) -> None:
        """Load the scripts, waiting (capped backoff) while Redis is unreachable."""
        delay = 0.5
        while True:
            try:
                await self.engine.start()
                return
            except StorageUnavailable as e:
                log.warning("%s; retrying in %.1f s", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def close_feeds(self) -> None:
        """End SSE streams and socket.io connections (before the HTTP server waits
        for its connections to finish).

        Each socket.io connection is dropped without socket.io's close packet:
        a client takes a drop as a lost connection and reconnects (to this
        service once it is back, or to another process), where a close packet
        tells it the server sent it away for good.  Nothing waits on a client:
        a polling client that has gone would never collect its queue."""
        if self.hub is not None and not self.hub.stopped.is_set():
            await self.hub.close()
        if self.sio is not None:
            for sock in list(self.sio.eio.sockets.values()):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sock.close(wait=False, abort=True), 1.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.sio.shutdown(), 2.0)

    async def settle(self, timeout: float) -> None:
        """Wait (up to *timeout* s) until no request is being answered."""
        deadline = time.monotonic() + timeout
        while self.answering and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Stop consuming, apply and acknowledge what is in hand, then close everything."""
        self.closing = True  # the loops' stop flag (see server/tasks.py)
        await self.close_feeds()
        if self.batcher is not None:
            await self.link.stop_consuming()
            self.batcher.stop()
            done, _ = await asyncio.wait([self._batching], timeout=60)
            if not done:
                log.error("the batcher did not finish within 60 s; its messages stay unacknowledged")
        if self._publishing:  # events left unpublished stay in the outbox for the next sweep
            await asyncio.wait(list(self._publishing), timeout=10)
        await cancel_and_wait(self._tasks)
        if self.link is not None:
            await self.link.close()
        if self.engine is not None:
            await self.engine.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)

    # -- the write path ----------------------------------------------------------

    async def apply(self, updates, source: str = "rest") -> ApplyResult:
        """Apply a batch (REST or AMQP), then publish its completion events."""
        snapshots = "updated" if source == "rest" else "none"
        started = time.perf_counter()
        try:
            result = await self.engine.apply(updates, snapshots=snapshots, events=self.events_enabled)
        except StorageUnavailable:
            self.metrics.redis_errors.inc()
            raise
        self.metrics.observe_apply(source, result.results, time.perf_counter() - started)
        self.updates_applied += result.results.count(APPLIED)
        if result.events:
            # In the background: the outbox keeps the events safe, and neither the
            # REST answer nor the batch's ack waits for the broker's confirms.
            task = asyncio.create_task(self.publish_events(result.events))
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)
        return result

    async def delete(self, key: str, not_after: int | None = None) -> DeleteResult | None:
        result = await self.engine.delete(key, snapshots=False, not_after=not_after)
        self._gc_wanted.set()
        return result

    # -- auth: rate limits and SSE tickets ------------------------------------------------

    async def check_rate(self, grant: Grant, updates: int) -> None:
        """At most --rate-limit updates per second per token (a fixed one-second
        window in Redis, shared by every server process); 429 beyond."""
        limit = self.settings.rate_limit
        if grant is OPEN or not limit or not updates:
            return
        key = f"{self.engine.keys.prefix}:rate:{grant.token_id}:{now_ms() // 1000}"
        with redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.incrby(key, updates)
                pipe.pexpire(key, 2000)
                used, _ = await pipe.execute()
        if used > limit:
            raise RateLimited(f"this token may write at most {limit} updates per second; try again in a second")

    async def issue_ticket(self, grant: Grant) -> str:
        ticket = new_ticket()
        ttl = TICKET_TTL_MS
        if grant.expires != float("inf"):
            ttl = max(1, min(ttl, int((grant.expires - now_ms() / 1000) * 1000)))
        with redis_errors():
            await self.redis.set(f"{self.engine.keys.prefix}:ticket:{ticket}", grant.to_json(), px=ttl)
        return ticket

    async def redeem_ticket(self, ticket: str) -> Grant:
        """The grant behind a ticket, which can be used once."""
        with redis_errors():
            data = await self.redis.getdel(f"{self.engine.keys.prefix}:ticket:{ticket}")
        if data is None:
            raise Unauthorized("unknown, used or expired ticket; get a new one from POST /auth/ticket")
        return Grant.from_json(data)

    # -- completion events -------------------------------------------------------------

    async def publish_events(self, events: list[Event]) -> None:
        """Publish with confirms, then drop them from the outbox.  A failure leaves
        them in the outbox for the sweep: never lost, at worst published twice
        (the event id is the message id, for consumers that deduplicate)."""
        if not self.link.connected:
            return
        try:
            await asyncio.gather(*(self.link.publish_event(e.key, e.as_dict(), e.id) for e in events))
            await self.engine.ack_events(events)
        except Exception as e:  # noqa: BLE001 - the sweep retries
            log.warning("could not publish %d completion events (%r); the sweep will retry", len(events), e)

    async def _sweep_events(self) -> None:
        while not self.closing:
            await asyncio.sleep(EVENT_SWEEP_INTERVAL_S)
            try:
                pending = await self.engine.pending_events(min_age_ms=EVENT_SWEEP_AGE_MS)
                if pending:
                    log.info("republishing %d completion events left in outboxes", len(pending))
                    await self.publish_events(pending)
            except Exception as e:  # noqa: BLE001 - keep sweeping
                log.warning("event sweep failed: %r", e)

    # -- housekeeping ------------------------------------------------------------

    async def health(self) -> dict:
        redis_ok = await self.engine.ping()
        amqp = await self.link.health() if self.link is not None else {"state": "disabled"}
        status = "unavailable" if not redis_ok else "degraded" if amqp.get("connected") is False else "ok"
        body = {"status": status, "redis": "ok" if redis_ok else "unreachable", "amqp": amqp,
                "updates_applied": self.updates_applied, "_now": now_ms(),
                "worker": {"index": self.worker[0], "of": self.worker[1], "pid": os.getpid()}}
        if self.batcher is not None:
            body["amqp"].update(applied=self.batcher.applied, dead_lettered=self.batcher.dead_lettered,
                                batches=self.batcher.batches)
        return body

    async def _flush_index(self) -> None:
        """Write the namespace recency index of trees whose refresh waits for a
        round trip (engine/namespaces.py), so an idle service leaves none."""
        while not self.closing:
            await asyncio.sleep(INDEX_FLUSH_S)
            try:
                await self.engine.flush_index()
            except Exception as e:  # noqa: BLE001 - the trees stay due; try again
                log.warning("namespace index refresh failed: %s", e)

    async def _collect_garbage(self) -> None:
        """Free deleted subtrees: after each delete, and every gc_interval seconds."""
        while not self.closing:
            await wait_event(self._gc_wanted, self.settings.gc_interval)
            self._gc_wanted.clear()
            try:
                await self.engine.collect_garbage()
            except Exception as e:  # noqa: BLE001 - keep sweeping whatever happened
                log.warning("garbage collection failed: %s", e)
