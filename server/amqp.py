"""The service's link to RabbitMQ (aio-pika): topology, consuming, confirmed publishing.

Topology (names configurable):

    progress         topic exchange producers publish to (routing key = node key)
    progress         durable queue bound to it with '#': what the service consumes
    progress.dead    topic exchange + durable queue for refused messages
    progress.events  topic exchange for completion events (routing key = node key)

With --amqp-partitions P (several worker processes or hosts), the intake is
split so that one node's messages reach one consumer at a time, in order:

    progress                 topic exchange, as above (producers see no change)
      └─ '#' ─> progress.partitions   consistent-hash exchange (RabbitMQ's
                                       rabbitmq_consistent_hash_exchange plugin):
                                       the routing key, hashed, picks a queue
                   ├─> progress.p0 … progress.p<P-1>   durable queues with
                                       single-active-consumer

Every process consumes every partition: of a queue's consumers the broker
delivers to one only (the first registered) and, when its connection dies,
promotes the next at once.  A process registers first on its own share of
the partitions (i % workers == its index) and on the others STANDBY_DELAY_S
later, so that processes started together split the partitions between them
and each stands by for the others' share.

One robust connection with two channels: a consuming channel (prefetch, manual
acks) and a publishing channel with publisher confirms that raises on
unroutable messages, for dead letters and events.  Reconnection is aio-pika's
connect_robust; each reopening of the consuming channel starts a new
*generation*: deliveries from an older one can no longer be acknowledged (their
delivery tags died with their channel) and the broker redelivers them.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

from .settings import Settings

#: Seconds a process waits before standing by for the partitions of others.
STANDBY_DELAY_S = 3.0


def partition_queues(settings: Settings) -> list[str]:
    """The intake queues: the one queue, or the --amqp-partitions queues."""
    if not settings.amqp_partitions:
        return [settings.amqp_queue]
    return [f"{settings.amqp_queue}.p{i}" for i in range(settings.amqp_partitions)]

log = logging.getLogger("sca_progress.amqp")

#: Headers of a dead-lettered message.
H_CODE = "x-progress-error"
H_REASON = "x-progress-reason"
H_EXCHANGE = "x-progress-original-exchange"
H_ROUTING_KEY = "x-progress-original-routing-key"
H_ITEMS = "x-progress-refused-items"


class DeadLetterLog:
    """A WARNING line per dead-lettered message (code, reason, routing key; never
    the body), at most *burst* lines per *window* seconds: a flood of bad
    messages must not flood the log too.  What was left out is counted in
    the next line that gets through."""

    def __init__(self, burst: int = 10, window: float = 10.0) -> None:
        self.burst, self.window = burst, window
        self._start, self._lines, self._skipped = 0.0, 0, 0

    def note(self, code: str, reason: str, routing_key: str) -> None:
        now = time.monotonic()
        if now - self._start > self.window:
            self._start, self._lines = now, 0
        if self._lines >= self.burst:
            self._skipped += 1
            return
        self._lines += 1
        more = f" ({self._skipped} more dead letters not logged before this one)" if self._skipped else ""
        self._skipped = 0
        log.warning("dead-lettered a message to %r: %s: %s%s", routing_key, code, reason[:300], more)


class AmqpLink:
    """Connects (retrying with capped backoff until the broker answers), declares the
    topology and hands every delivery to *on_delivery* (the consumer callback);
    ``generation`` counts the reopenings of the consuming channel."""

    def __init__(self, settings: Settings,
                 on_delivery: Callable[[AbstractIncomingMessage], Awaitable[None]],
                 worker: tuple[int, int] = (0, 1)) -> None:
        """*worker*: (index, count) of this process among the workers sharing
        the partitions (see the module's docstring)."""
        self.settings = settings
        self.worker = worker
        self.on_delivery = on_delivery
        self.prefetch = settings.prefetch or 2 * settings.batch_size
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None
        self.consume_channel = None
        self.publish_channel = None
        self.queues: list = []  # the intake: one queue, or the partitions
        self.consumers: dict[str, str] = {}  # queue name -> consumer tag
        self._standby: asyncio.Future | None = None
        self.dead_exchange = None
        self.events_exchange = None
        self.generation = 0
        self.state = "connecting"
        self._backlog: tuple[float, int | None] = (0.0, None)
        self._dead_log = DeadLetterLog()
        self._connected = asyncio.Event()

    async def start(self) -> None:
        """Connect and consume; retries in the background while the broker is unreachable."""
        delay = 0.5
        while True:
            try:
                await self._connect()
                self._connected.set()
                return
            except (OSError, aio_pika.exceptions.AMQPError, asyncio.TimeoutError) as e:
                self.state = f"connecting (last error: {e!r})"
                log.warning("AMQP broker unreachable (%s); retrying in %.1f s", e, delay)
                with contextlib.suppress(Exception):
                    if self.connection is not None:
                        await self.connection.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15)

    async def _connect(self) -> None:
        s = self.settings
        self.connection = await aio_pika.connect_robust(
            s.amqp_url, timeout=15, client_properties={"connection_name": f"sca-progress {s.amqp_queue}"})
        self.connection.reconnect_callbacks.add(self._on_reconnect)
        self.connection.close_callbacks.add(self._on_close)
        # Prefetch: a batch fills while the one before it is being applied, so
        # twice the batch size keeps the pipeline full without holding more
        # unacknowledged messages than two batches (bench/README.md, ingest).
        self.consume_channel = await self.connection.channel(publisher_confirms=False)
        await self.consume_channel.set_qos(prefetch_count=self.prefetch)
        self.consume_channel.reopen_callbacks.add(self._on_reopen)
        exchange = await self.consume_channel.declare_exchange(
            s.amqp_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        self.queues = await self._declare_intake(exchange)

        self.publish_channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self.dead_exchange = await self.publish_channel.declare_exchange(
            s.amqp_dead, aio_pika.ExchangeType.TOPIC, durable=True)
        dead_queue = await self.publish_channel.declare_queue(s.amqp_dead, durable=True)
        await dead_queue.bind(self.dead_exchange, routing_key="#")
        if s.amqp_events:
            self.events_exchange = await self.publish_channel.declare_exchange(
                s.amqp_events, aio_pika.ExchangeType.TOPIC, durable=True)

        index, count = self.worker
        own = [q for i, q in enumerate(self.queues) if i % count == index]
        for q in own:
            self.consumers[q.name] = await q.consume(self.on_delivery, no_ack=False)
        others = [q for q in self.queues if q not in own]
        if others:
            self._standby = asyncio.ensure_future(self._stand_by(others))
        self.state = "consuming"
        log.info("consuming AMQP %s (exchange %r, binding %r, prefetch %d)",
                 f"queue {s.amqp_queue!r}" if len(self.queues) == 1 else
                 f"partitions {', '.join(q.name for q in own)} first, active unless another process already "
                 f"holds them (standing by for {len(others)} more)",
                 s.amqp_exchange, s.amqp_binding, self.prefetch)

    async def _declare_intake(self, exchange) -> list:
        s = self.settings
        channel = self.consume_channel
        if not s.amqp_partitions:
            queue = await channel.declare_queue(s.amqp_queue, durable=True)
            await queue.bind(exchange, routing_key=s.amqp_binding)
            return [queue]
        try:
            hashed = await channel.declare_exchange(f"{s.amqp_exchange}.partitions",
                                                    aio_pika.ExchangeType.X_CONSISTENT_HASH, durable=True)
        except aio_pika.exceptions.ChannelClosed as e:
            raise RuntimeError(f"the broker refused a consistent-hash exchange ({e}); --amqp-partitions needs "
                               "its plugin: rabbitmq-plugins enable rabbitmq_consistent_hash_exchange") from None
        await hashed.bind(exchange, routing_key=s.amqp_binding)
        queues = []
        for name in partition_queues(s):
            queue = await channel.declare_queue(name, durable=True, arguments={"x-single-active-consumer": True})
            await queue.bind(hashed, routing_key="1")  # equal weights: an equal share of the hash space each
            queues.append(queue)
        return queues

    async def _stand_by(self, queues: list) -> None:
        await asyncio.sleep(STANDBY_DELAY_S)
        for q in queues:
            if self.state != "consuming":
                return
            self.consumers[q.name] = await q.consume(self.on_delivery, no_ack=False)

    def _on_reopen(self, *_args) -> None:
        self.generation += 1
        self.state = "consuming"
        log.info("AMQP channel reopened (generation %d)", self.generation)

    def _on_reconnect(self, *_args) -> None:
        self.state = "consuming"
        log.info("AMQP connection re-established")

    def _on_close(self, *args) -> None:
        reason = args[1] if len(args) > 1 and args[1] else None
        if self.state in ("closed", "stopped"):
            log.info("AMQP connection closed")  # we asked for it
        elif self.connection is not None and not self.connection.is_closed:
            self.state = "reconnecting"
            log.warning("AMQP connection lost (%s); reconnecting", reason or "no reason given")

    async def stop_consuming(self) -> None:
        """Cancel the consumers: no new deliveries; those in hand can still be acknowledged."""
        if self._standby is not None:
            self._standby.cancel()
        for q in self.queues:
            tag = self.consumers.pop(q.name, None)
            if tag is not None:
                with contextlib.suppress(Exception):
                    await q.cancel(tag)
        self.state = "stopped"

    async def close(self) -> None:
        self.state = "closed"
        if self._standby is not None:
            self._standby.cancel()
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await self.connection.close()

    # -- publishing (with confirms) -------------------------------------------------

    async def dead_letter(self, message: AbstractIncomingMessage, code: str, reason: str,
                          items: list | None = None) -> None:
        """Republish *message* to the dead-letter exchange with why it was refused;
        returns once the broker confirmed it (raises otherwise)."""
        self._dead_log.note(code, reason, message.routing_key or "")
        headers = dict(message.headers or {})
        headers.update({H_CODE: code, H_REASON: reason[:1000], H_EXCHANGE: message.exchange or "",
                        H_ROUTING_KEY: message.routing_key or ""})
        if items:
            headers[H_ITEMS] = orjson.dumps(items).decode()
        await self.dead_exchange.publish(
            aio_pika.Message(message.body, headers=headers, content_type=message.content_type,
                             message_id=message.message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=message.routing_key or "unroutable", timeout=30)

    async def publish_event(self, key: str, body: dict, event_id: str) -> None:
        """One event, confirmed; its AMQP type is its kind (completed, started, ...)."""
        await self.events_exchange.publish(
            aio_pika.Message(orjson.dumps(body), content_type="application/json", message_id=event_id,
                             type=body.get("event", "completed"), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=key, mandatory=False, timeout=30)

    # -- health --------------------------------------------------------------------

    async def backlog(self) -> int | None:
        """Ready messages in the queue (cached for 2 s), from a passive declare on a
        channel of its own (a failed passive declare closes its channel)."""
        at, count = self._backlog
        if time.monotonic() - at < 2 or self.connection is None or self.connection.is_closed:
            return count
        try:
            channel = await self.connection.channel()
            try:
                count = 0
                for name in partition_queues(self.settings):
                    q = await channel.declare_queue(name, passive=True, robust=False)
                    count += q.declaration_result.message_count
            finally:
                await channel.close()
        except Exception:  # noqa: BLE001 - health must answer whatever happened
            count = None
        self._backlog = (time.monotonic(), count)
        return count

    def cached_backlog(self) -> int | None:
        """The last backlog() figure, without a round trip (None: not known)."""
        return self._backlog[1]

    @property
    def connected(self) -> bool:
        return (self.connection is not None and not self.connection.is_closed and self._connected.is_set()
                and self.state == "consuming")

    async def health(self) -> dict:
        connected = self.connected
        body = {"state": self.state, "connected": connected, "consuming": bool(self.consumers),
                "queue": self.settings.amqp_queue, "backlog": await self.backlog() if connected else None}
        if self.settings.amqp_partitions:
            body["partitions"] = self.settings.amqp_partitions
            body["consumers"] = len(self.consumers)
        return body
