"""The AMQP batcher: deliveries in, one engine call per batch, acknowledgements out.

    delivery -> inbox -> batch (up to batch_size, or batch_wait after its first)
             -> parse each message into updates (bad ones: dead-lettered)
             -> Service.apply(all updates of the batch): one engine call
             -> dead-letter messages whose updates were refused (confirmed)
             -> ack the batch with one multiple-ack, only after all of that

Nothing is acknowledged before Redis applied it:

* Redis down or failing (StorageUnavailable): the batch stays in hand and is
  retried with capped exponential backoff until Redis answers.
* Any other failure: the batch is retried message by message; a message that
  fails alone is requeued, and dead-lettered after max_redeliveries failures.
* A delivery from a channel that has since been reopened cannot be
  acknowledged (its delivery tag died with the channel): it is dropped from
  the batch and the broker redelivers it.  Updates set values (and ``ts``
  guards against reordering), so applying a redelivered update again is
  harmless.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import OrderedDict

import orjson
from aio_pika.abc import AbstractIncomingMessage

from sca_progress.engine import InvalidUpdate, ProgressError, StorageUnavailable, TooLarge, check_key
from sca_progress.engine.errors import json_error

log = logging.getLogger("sca_progress.batcher")


def parse_message(routing_key: str, body: bytes, limits) -> list[tuple[str, dict]]:
    """The updates one AMQP message carries.

    A JSON object is one update of the node named by the routing key.  A JSON
    array of objects, each with a "key", is a bulk message; every key must be
    the routing key or below it, so the broker's topic permissions on routing
    keys still bound what a producer may write.
    """
    if len(body) > limits.max_body_bytes:
        raise TooLarge(f"the message body is larger than {limits.max_body_bytes} bytes")
    check_key(routing_key)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise json_error(e) from None
    if isinstance(data, dict):
        if "key" in data:
            raise InvalidUpdate("a single update takes its key from the routing key; "
                                "'key' is reserved", code="reserved-field")
        return [(routing_key, data)]
    if isinstance(data, list):
        if len(data) > limits.max_batch_updates:
            raise TooLarge(f"a bulk message may hold at most {limits.max_batch_updates} updates")
        updates = []
        for i, item in enumerate(data):
            key = item.get("key") if isinstance(item, dict) else None
            if not isinstance(key, str):
                raise InvalidUpdate(f"item {i}: each update of a bulk message must be an object with a "
                                    f"string \"key\"", code="bad-item")
            if key != routing_key and not key.startswith(routing_key + "."):
                raise InvalidUpdate(f"item {i}: key {key!r} is not the routing key or below it",
                                    code="bad-item")
            updates.append((key, {k: v for k, v in item.items() if k != "key"}))
        return updates
    raise InvalidUpdate("the body must be a JSON object or an array of objects", code="bad-body")


class Batcher:
    def __init__(self, service, settings, link=None) -> None:
        self.service = service
        self.link = link  # the AmqpLink whose deliveries this batches
        self.batch_size = settings.batch_size
        self.batch_wait = settings.batch_wait
        self.max_redeliveries = settings.max_redeliveries
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.failures: OrderedDict[str, int] = OrderedDict()  # message identity -> failures seen
        self.stopping = False
        self.applied = 0  # messages acknowledged after their updates were applied
        self.dead_lettered = 0
        self.batches = 0
        self.redeliveries = 0  # deliveries the broker flagged as redelivered
        self._in_batch = 0  # messages of the batch being applied

    def in_hand(self) -> int:
        """Messages delivered to this process and not acknowledged yet."""
        return self.inbox.qsize() + self._in_batch

    async def deliver(self, message: AbstractIncomingMessage) -> None:
        """The consumer callback: only queues the delivery, with the generation of
        the channel it came on."""
        if message.redelivered:
            self.redeliveries += 1
        self.inbox.put_nowait((self.link.generation, message))

    async def run(self) -> None:
        """Batch until stopped; after stop(), finish what is in hand, then return."""
        while not (self.stopping and self.inbox.empty()):
            batch = await self._gather()
            if batch:
                await self._process(batch)

    def stop(self) -> None:
        self.stopping = True
        self.inbox.put_nowait(None)  # wake _gather

    async def _gather(self) -> list:
        first = await self.inbox.get()
        batch = [] if first is None else [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batch_wait
        while len(batch) < self.batch_size:
            try:
                item = self.inbox.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0 or self.stopping:
                    break
                try:
                    item = await asyncio.wait_for(self.inbox.get(), left)
                except asyncio.TimeoutError:
                    break
            if item is not None:
                batch.append(item)
        return batch

    async def _process(self, batch: list) -> None:
        generation = self.link.generation
        live = [m for gen, m in batch if gen == generation]
        if len(live) < len(batch):
            log.info("dropped %d deliveries of a closed channel; the broker redelivers them",
                     len(batch) - len(live))
        if not live:
            return
        self.batches += 1
        self._in_batch = len(live)
        try:
            await self._apply(live)
        except StorageUnavailable:
            # Stopping with Redis down: hand the batch back now, so that no later
            # multiple-ack of this channel covers it.
            log.warning("stopping with Redis unavailable: %d messages handed back to the broker", len(live))
            with contextlib.suppress(Exception):
                await live[-1].nack(multiple=True, requeue=True)
        except Exception as e:  # noqa: BLE001 - isolate the message that causes it
            if self.link.generation != generation or not self.link.connected:
                log.info("the channel closed under a batch (%r); the broker redelivers it", e)
                return
            if len(live) == 1:
                await self._failed(live[0], e)
                return
            log.warning("a batch of %d failed (%r): retrying its messages one by one", len(live), e)
            for message in live:
                try:
                    await self._apply([message], multiple=False)
                except StorageUnavailable:
                    return
                except Exception as e1:  # noqa: BLE001
                    if self.link.generation != generation or not self.link.connected:
                        return
                    await self._failed(message, e1)
        finally:
            self._in_batch = 0

    async def _apply(self, messages: list[AbstractIncomingMessage], multiple: bool = True) -> None:
        """Apply the messages' updates (retrying while Redis is down), dead-letter the
        refused ones, then acknowledge all of them."""
        limits = self.service.engine.limits
        updates, spans, refused = [], [], {}
        for i, message in enumerate(messages):
            try:
                ups = parse_message(message.routing_key or "", message.body, limits)
            except InvalidUpdate as e:
                refused[i] = (e.code, e.message, None)
                self.service.metrics.refuse("amqp", e.code)
                spans.append((len(updates), len(updates)))
                continue
            spans.append((len(updates), len(updates) + len(ups)))
            updates.extend(ups)
        result = await self._apply_until_stored(updates)
        for i, (a, b) in enumerate(spans):
            errors = [(j - a, r) for j, r in enumerate(result.results[a:b], start=a) if isinstance(r, ProgressError)]
            if errors and i not in refused:
                if b - a == 1:
                    refused[i] = (errors[0][1].code, errors[0][1].message, None)
                else:
                    items = [{"item": n, **r.as_dict()} for n, r in errors]
                    refused[i] = (errors[0][1].code, f"{len(errors)} of {b - a} updates refused "
                                  f"(the others were applied): {errors[0][1].message}", items)
        if refused:
            await asyncio.gather(*(self.link.dead_letter(messages[i], code, reason, items)
                                   for i, (code, reason, items) in refused.items()))
            self.dead_lettered += len(refused)
        # One multiple-ack covers the batch: deliveries reach the inbox in
        # delivery-tag order and batches are processed one at a time, so every
        # earlier tag of this channel belongs to this or an earlier batch.
        await messages[-1].ack(multiple=multiple)
        self.applied += len(messages) - len(refused)

    async def _apply_until_stored(self, updates):
        delay = 0.1
        while True:
            try:
                return await self.service.apply(updates, source="amqp")
            except StorageUnavailable as e:
                if self.stopping:
                    raise  # shutting down: leave the batch to the broker
                log.warning("%s; batch held, retrying in %.1f s", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def _failed(self, message: AbstractIncomingMessage, error: Exception) -> None:
        """A message failed alone for a reason other than its content: requeue it,
        or dead-letter it once it has failed max_redeliveries times."""
        ident = message.message_id or hashlib.sha1((message.routing_key or "").encode() + message.body).hexdigest()
        count = self.failures.pop(ident, 0) + 1
        if count > self.max_redeliveries:
            log.error("message %s failed %d times (%r): dead-lettering it", ident, count, error)
            try:
                await self.link.dead_letter(message, "failed", f"failed {count} times: {error!r}")
            except Exception:  # noqa: BLE001 - not dead-lettered: back to the queue, never left open
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
                return
            with contextlib.suppress(Exception):
                await message.ack()
                self.dead_lettered += 1
            return
        self.failures[ident] = count
        while len(self.failures) > 100_000:
            self.failures.popitem(last=False)
        with contextlib.suppress(Exception):
            await message.nack(requeue=True)
