"""RabbitMQ for the tests: the machine's broker, a private node to restart, helpers.

AMQP tests use the broker at AMQP_URL (default the machine's, guest/guest at
127.0.0.1:5672).  Where none answers they are skipped with the reason, or fail
under REQUIRE_AMQP=1 (which .ci/run sets).  Every test gets exchange and queue
names of its own, deleted afterwards.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import aio_pika
import orjson
import pytest

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"


def require_or_skip(reason: str):
    if os.environ.get("REQUIRE_AMQP") == "1":
        pytest.fail(f"REQUIRE_AMQP=1 but {reason}")
    pytest.skip(reason)


async def reachable(url: str) -> str | None:
    """None when a broker answers at *url*, else why not."""
    try:
        conn = await asyncio.wait_for(aio_pika.connect(url), 10)
        await conn.close()
        return None
    except Exception as e:  # noqa: BLE001
        return f"no AMQP broker answers at {url}: {e!r}"


async def consistent_hash_missing(url: str) -> str | None:
    """None when the broker at *url* takes a consistent-hash exchange (its
    plugin is enabled), else why not."""
    conn = await aio_pika.connect(url)
    try:
        channel = await conn.channel()
        name = f"test-{uuid.uuid4().hex[:10]}.chx"
        try:
            exchange = await channel.declare_exchange(name, "x-consistent-hash", auto_delete=True)
        except Exception as e:  # noqa: BLE001 - the broker closes the channel
            return (f"the broker refuses a consistent-hash exchange ({e!r}): "
                    "rabbitmq-plugins enable rabbitmq_consistent_hash_exchange")
        await exchange.delete()
        return None
    finally:
        await conn.close()


#: Tests use at most this many --amqp-partitions (their queues are deleted after).
MAX_TEST_PARTITIONS = 16


class Names:
    """Exchange and queue names of one test."""

    def __init__(self) -> None:
        tag = f"test-{uuid.uuid4().hex[:10]}"
        self.exchange = f"{tag}.progress"
        self.queue = f"{tag}.progress"
        self.dead = f"{tag}.dead"
        self.events = f"{tag}.events"

    def flags(self) -> list[str]:
        """settings() as `serve` flags."""
        return [a for k, v in self.settings().items() for a in (f"--{k.replace('_', '-')}", v)]

    def settings(self) -> dict:
        return {"amqp_exchange": self.exchange, "amqp_queue": self.queue, "amqp_dead": self.dead,
                "amqp_events": self.events}

    async def delete(self, url: str) -> None:
        conn = await aio_pika.connect(url)
        try:
            ch = await conn.channel()
            partitions = [f"{self.queue}.p{i}" for i in range(MAX_TEST_PARTITIONS)]
            for q in (self.queue, self.dead, *partitions):
                try:
                    await ch.queue_delete(q)
                except Exception:  # noqa: BLE001 - a failed delete closes the channel
                    ch = await conn.channel()
            for x in (self.exchange, f"{self.exchange}.partitions", self.dead, self.events):
                try:
                    await ch.exchange_delete(x)
                except Exception:  # noqa: BLE001
                    ch = await conn.channel()
        finally:
            await conn.close()


class Producer:
    """A publishing connection with confirms, as a job would use."""

    def __init__(self, url: str, exchange: str) -> None:
        self.url, self.exchange_name = url, exchange

    async def __aenter__(self):
        self.conn = await aio_pika.connect(self.url)
        self.ch = await self.conn.channel(publisher_confirms=True)
        self.exchange = await self.ch.declare_exchange(self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
        return self

    async def __aexit__(self, *exc):
        await self.conn.close()

    async def send(self, key: str, body, raw: bool = False) -> None:
        data = body if raw else orjson.dumps(body)
        await self.exchange.publish(aio_pika.Message(data, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                    routing_key=key)

    async def send_many(self, messages) -> None:
        """Publish in order (the models of the tests assume it): on a channel
        without confirms every publish is written before the next starts; one
        confirmed message at the end tells they all reached the broker."""
        ch = await self.conn.channel(publisher_confirms=False)
        exchange = await ch.declare_exchange(self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
        for key, body in messages:
            await exchange.publish(aio_pika.Message(orjson.dumps(body), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                   routing_key=key)
        await ch.close()


async def queue_counts(url: str, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of *queue*."""
    conn = await aio_pika.connect(url)
    try:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, passive=True)
        return q.declaration_result.message_count, q.declaration_result.consumer_count
    finally:
        await conn.close()


async def drain(url: str, queue: str, timeout: float = 5.0) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message now in *queue* (acknowledged: removed)."""
    conn = await aio_pika.connect(url)
    out = []
    try:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, passive=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = await q.get(fail=False)
            if msg is None:
                if out:
                    break
                await asyncio.sleep(0.1)
                continue
            await msg.ack()
            out.append(msg)
    finally:
        await conn.close()
    return out


async def wait_for(predicate, timeout: float = 60.0, every: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRabbit:
    """A RabbitMQ node of the test's own (so a test may restart it), on free ports.

    Its directory lives directly under /tmp and is world-writable because the
    server runs as the 'rabbitmq' user.
    """

    def __init__(self, tls: bool = True) -> None:
        self.node = f"sca{uuid.uuid4().hex[:8]}@localhost"
        self.port = _free_port()
        self.tls_port = _free_port()
        self.dist_port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="sca-rabbit-", dir="/tmp")
        os.chmod(self.dir, 0o777)
        conf = os.path.join(self.dir, "rabbitmq.conf")
        lines = [f"listeners.tcp.local = 127.0.0.1:{self.port}", "loopback_users = none"]
        self.ca_file = None
        if tls:
            import trustme

            ca = trustme.CA()
            cert = ca.issue_cert("127.0.0.1", "localhost")
            self.ca_file = os.path.join(self.dir, "ca.pem")
            ca.cert_pem.write_to_path(self.ca_file)
            cert.private_key_pem.write_to_path(os.path.join(self.dir, "key.pem"))
            cert.cert_chain_pems[0].write_to_path(os.path.join(self.dir, "cert.pem"))
            for name in ("ca.pem", "key.pem", "cert.pem"):
                os.chmod(os.path.join(self.dir, name), 0o644)
            lines += [f"listeners.ssl.1 = 127.0.0.1:{self.tls_port}",
                      f"ssl_options.cacertfile = {self.dir}/ca.pem", f"ssl_options.certfile = {self.dir}/cert.pem",
                      f"ssl_options.keyfile = {self.dir}/key.pem", "ssl_options.verify = verify_none",
                      "ssl_options.fail_if_no_peer_cert = false"]
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(conf, 0o644)
        self.env = {**os.environ, "RABBITMQ_NODENAME": self.node, "RABBITMQ_DIST_PORT": str(self.dist_port),
                    "RABBITMQ_MNESIA_BASE": f"{self.dir}/mnesia", "RABBITMQ_LOG_BASE": f"{self.dir}/log",
                    "RABBITMQ_ENABLED_PLUGINS_FILE": f"{self.dir}/plugins",
                    "RABBITMQ_CONFIG_FILE": conf, "RABBITMQ_PID_FILE": f"{self.dir}/pid"}
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.tls_url = f"amqps://guest:guest@127.0.0.1:{self.tls_port}/?cafile={self.ca_file}"

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["rabbitmqctl", "-n", self.node, *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def _await(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ctl("await_startup", "--timeout", "30").returncode == 0:
                return
            time.sleep(1)
        raise RuntimeError(f"private RabbitMQ {self.node} did not start; see {self.dir}/log")

    def start(self) -> None:
        subprocess.run(["rabbitmq-server", "-detached"], env=self.env, check=True, capture_output=True)
        self._await()

    def restart_app(self) -> None:
        """What a broker restart looks like to clients: every connection drops."""
        self.ctl("stop_app")
        self.ctl("start_app")
        self._await()

    def stop(self) -> None:
        self.ctl("stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def can_run_private_rabbit() -> str | None:
    if not shutil.which("rabbitmq-server") or not shutil.which("rabbitmqctl"):
        return "no rabbitmq-server on this machine to start a private node"
    return None
