"""The service's link to RabbitMQ (aio-pika): topology, consuming, confirmed publishing.

Topology (names configurable):

    progress         topic exchange producers publish to (routing key = node key)
    progress         durable queue bound to it with '#': what the service consumes
    progress.dead    topic exchange + durable queue for refused messages
    progress.events  topic exchange for completion events (routing key = node key)

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
                 on_delivery: Callable[[AbstractIncomingMessage], Awaitable[None]]) -> None:
        self.settings = settings
        self.on_delivery = on_delivery
        self.prefetch = settings.prefetch or 2 * settings.batch_size
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None
        self.consume_channel = None
        self.publish_channel = None
        self.queue = None
        self.dead_exchange = None
        self.events_exchange = None
        self.consumer_tag: str | None = None
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
        self.queue = await self.consume_channel.declare_queue(s.amqp_queue, durable=True)
        await self.queue.bind(exchange, routing_key=s.amqp_binding)

        self.publish_channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self.dead_exchange = await self.publish_channel.declare_exchange(
            s.amqp_dead, aio_pika.ExchangeType.TOPIC, durable=True)
        dead_queue = await self.publish_channel.declare_queue(s.amqp_dead, durable=True)
        await dead_queue.bind(self.dead_exchange, routing_key="#")
        if s.amqp_events:
            self.events_exchange = await self.publish_channel.declare_exchange(
                s.amqp_events, aio_pika.ExchangeType.TOPIC, durable=True)

        self.consumer_tag = await self.queue.consume(self.on_delivery, no_ack=False)
        self.state = "consuming"
        log.info("consuming AMQP queue %r (exchange %r, binding %r, prefetch %d)",
                 s.amqp_queue, s.amqp_exchange, s.amqp_binding, self.prefetch)

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
        """Cancel the consumer: no new deliveries; those in hand can still be acknowledged."""
        if self.queue is not None and self.consumer_tag is not None:
            with contextlib.suppress(Exception):
                await self.queue.cancel(self.consumer_tag)
            self.consumer_tag = None
            self.state = "stopped"

    async def close(self) -> None:
        self.state = "closed"
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
        await self.events_exchange.publish(
            aio_pika.Message(orjson.dumps(body), content_type="application/json", message_id=event_id,
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
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
                q = await channel.declare_queue(self.settings.amqp_queue, passive=True, robust=False)
                count = q.declaration_result.message_count
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
        return {"state": self.state, "connected": connected, "consuming": self.consumer_tag is not None,
                "queue": self.settings.amqp_queue, "backlog": await self.backlog() if connected else None}
