"""The AMQP path is authorised by the broker: a producer user whose topic
permissions allow only its own routing-key prefix (the example in docs/operations.md)."""
from __future__ import annotations

import re
import subprocess
import uuid

import aio_pika
import aiormq
import orjson
import pytest

from .amqp_support import wait_for


def ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def producer_user(ingest):
    base, app, names = ingest
    user, password = f"job1-producer-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    ctl("add_user", user, password)
    try:
        # Configure nothing, write to the progress exchange only, read nothing...
        ctl("set_permissions", "-p", "/", user, "^$", f"^{re.escape(names.exchange)}$", "^$")
        # ...and on that topic exchange, only routing keys at or below _perm.job1.
        ctl("set_topic_permissions", "-p", "/", user, names.exchange, r"^_perm\.job1(\..+)?$", "^$")
        yield f"amqp://{user}:{password}@127.0.0.1:5672/"
    finally:
        ctl("delete_user", user)


async def publish(url: str, exchange: str, key: str, body: dict) -> None:
    conn = await aio_pika.connect(url)
    try:
        ch = await conn.channel(publisher_confirms=True)
        x = await ch.get_exchange(exchange, ensure=False)
        await x.publish(aio_pika.Message(orjson.dumps(body)), routing_key=key)
    finally:
        await conn.close()


async def test_a_producer_writes_only_its_own_prefix(ingest, producer_user):
    base, app, names = ingest
    await publish(producer_user, names.exchange, "_perm.job1.a", {"progress": 0.5})
    for forbidden in ("_perm.job10.a", "_perm.job2.a", "_perm"):
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await publish(producer_user, names.exchange, forbidden, {"progress": 1})
    engine = app.settings["engine"]

    async def applied():
        try:
            return await engine.read("_perm.job1.a")
        except Exception:  # noqa: BLE001
            return None

    assert (await wait_for(applied, timeout=30, what="the permitted update"))["progress"] == 0.5
    assert (await engine.read("_perm", depth=2))["_children"] == ["_perm.job1"]
