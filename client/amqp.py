"""Sending updates over AMQP: the ``progress`` topic exchange, routing key = node key, publisher confirms.

One update is a JSON object published with its node's key as the routing
key.  Several are one bulk message (a JSON array of objects with ``key``)
whose routing key is the keys' longest common prefix, so that the broker's
topic permissions on routing keys still bound what a producer may write.
The exchange is not declared (a producer needs no configure permission):
the service declares it.
"""
from __future__ import annotations

import asyncio

import orjson

from .errors import Refusal, SendError
from .rest import MAX_BODY_BYTES, encode_items, split


def common_prefix(keys: list[str]) -> str:
    """The longest key that is every key of *keys* or one of its ancestors ('' when none is)."""
    first = keys[0].split(".")
    n = len(first)
    for key in keys[1:]:
        segments = key.split(".")
        n = min(n, len(segments))
        for i in range(n):
            if segments[i] != first[i]:
                n = i
                break
    return ".".join(first[:n])


def messages(encoded: list[tuple[str, bytes]]):
    """(routing key, body) of the messages that carry *encoded* (updates encoded with their key)."""
    for run in split(encoded, MAX_BODY_BYTES):
        prefix = common_prefix([key for key, _ in run]) if len(run) > 1 else ""
        if prefix:
            yield prefix, b"[" + b",".join(data for _, data in run) + b"]"
        else:
            yield from ((key, _single(data)) for key, data in run)


def _single(data: bytes) -> bytes:
    """A bulk item as a single update: the same object without its ``key``."""
    item = orjson.loads(data)
    del item["key"]
    return orjson.dumps(item)


class AmqpTransport:
    """Publishes to *exchange* on the broker at *url*, waiting for the broker's confirms."""

    def __init__(self, url: str, exchange: str = "progress", timeout: float = 30.0) -> None:
        self.url, self.exchange_name, self.timeout = url, exchange, timeout
        self.where = f"AMQP exchange {exchange!r}"
        self._connection = None
        self._channel = None
        self._exchange = None

    async def send(self, items: list[tuple[str, dict]]) -> list[Refusal]:
        """Publish *items*; returns those that could not be encoded.  Raises SendError
        unless the broker confirmed every message."""
        import aio_pika
        import aiormq.exceptions as ex

        encoded, refused = encode_items(items)
        if not encoded:
            return refused
        try:
            exchange = await self._ready()
            await asyncio.gather(*(
                exchange.publish(
                    aio_pika.Message(body, content_type="application/json",
                                     delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=key, mandatory=True, timeout=self.timeout)
                for key, body in messages(encoded)))
        except ex.PublishError:
            raise SendError(f"{self.where}: a message was returned unroutable (is the service "
                            f"consuming from this exchange?)", retryable=True, code="unroutable") from None
        except ex.DeliveryError as e:
            raise SendError(f"{self.where}: the broker refused a message: {e}", retryable=True,
                            code="nack") from None
        except ex.ChannelAccessRefused as e:
            await self._drop_channel()
            raise SendError(f"{self.where}: access refused: {e}", retryable=False, code="access-refused") from None
        except ex.ChannelNotFoundEntity as e:
            await self._drop_channel()
            raise SendError(f"{self.where}: not found: {e}", retryable=False, code="not-found") from None
        except (ex.AuthenticationError, ex.ProbableAuthenticationError) as e:
            await self.close()
            raise SendError(f"{self.where}: the broker refused the credentials: {e}", retryable=False,
                            code="unauthorized") from None
        except (ex.AMQPError, OSError, asyncio.TimeoutError) as e:
            await self.close()
            raise SendError(f"{self.where}: {type(e).__name__}: {e}", retryable=True) from None
        return refused

    async def _ready(self):
        import aio_pika

        if self._connection is None or self._connection.is_closed:
            self._connection = await asyncio.wait_for(aio_pika.connect(self.url), self.timeout)
            self._channel = None
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
            self._exchange = await self._channel.get_exchange(self.exchange_name, ensure=False)
        return self._exchange

    async def _drop_channel(self) -> None:
        channel, self._channel, self._exchange = self._channel, None, None
        if channel is not None and not channel.is_closed:
            try:
                await channel.close()
            except Exception:  # noqa: BLE001 - it is being thrown away
                pass

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None:
            try:
                await connection.close()
            except Exception:  # noqa: BLE001 - it is being thrown away
                pass
