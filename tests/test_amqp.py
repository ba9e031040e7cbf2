"""AMQP ingestion against a real RabbitMQ: batching, dead letters, events, faults."""
from __future__ import annotations

import asyncio
import random

import aio_pika
import orjson
import pytest

from sca_progress.engine import Engine
from sca_progress.server.batcher import parse_message

from .amqp_support import Producer, drain, queue_counts, wait_for
from .model import Model


async def applied(app, n):
    return app.settings["service"].batcher.applied >= n


def compare(model: Model, trees: dict) -> None:
    """Every node of the model is in the read trees, with its progress and fields."""
    seen = {}

    def walk(node):
        seen[node["key"]] = node
        for t in node.get("tasks", []):
            walk(t)

    for tree in trees.values():
        walk(tree)
    assert set(seen) == set(model.nodes)
    for key, want in model.nodes.items():
        assert abs(seen[key].get("progress", 0) - model.progress(key)) <= 1e-9, key
        for name, value in want["fields"].items():
            if name != "progress":
                assert seen[key][name] == value, (key, name)


def plan(n_trees: int, n_messages: int, seed: int = 7):
    """Messages of many jobs, singles and bulk, each update carrying an increasing ts."""
    rng = random.Random(seed)
    model = Model()
    messages, ts = [], 0
    for _ in range(n_messages):
        job = f"_amqp.job{rng.randrange(n_trees)}"
        ts += 1
        if rng.random() < 0.2:
            items = []
            for _ in range(rng.randrange(2, 6)):
                key = f"{job}.s{rng.randrange(3)}.f{rng.randrange(4)}"
                fields = {"progress": rng.choice([0, 0.25, 0.5, 1]), "msg": f"m{ts}", "ts": ts}
                items.append({"key": key, **fields})
                model.post(key, fields)
            messages.append((job, items))
        else:
            key = f"{job}.s{rng.randrange(3)}.f{rng.randrange(4)}"
            fields = {"progress": rng.random(), "status": rng.choice(["running", "finished"]), "ts": ts}
            if rng.random() < 0.1:
                fields["weight"] = rng.choice([0, 1, 2, 10])
            messages.append((key, fields))
            model.post(key, fields)
    return messages, model


async def read_all(engine: Engine, roots):
    return {r: await engine.read(r, depth=6) for r in roots}


def test_parse_message():
    from sca_progress.engine import InvalidUpdate, Limits

    lim = Limits()
    assert parse_message("_a.j.x", b'{"progress": 1}', lim) == [("_a.j.x", {"progress": 1})]
    assert parse_message("_a.j", b'[{"key": "_a.j.x", "msg": "m"}, {"key": "_a.j"}]', lim) == [
        ("_a.j.x", {"msg": "m"}), ("_a.j", {})]
    for rk, body, code in [("_a.j", b"{x", "bad-json"), ("_a.j", b"5", "bad-body"),
                           ("_a.j", b'{"key": "_a.j.x"}', "reserved-field"),
                           ("_a.j", b'[{"key": "_a.k"}]', "bad-item"), ("_a.j", b'[{"key": "_a.jj"}]', "bad-item"),
                           ("_a.j", b"[1]", "bad-item"), ("a..b", b"{}", "bad-key"),
                           ("_a.j", b'{"x": ' + b"[" * 2000 + b"]" * 2000 + b"}", "value-too-deep"),
                           ("_a.j", b'"' + b"x" * (5 << 20) + b'"', "too-large")]:
        with pytest.raises(InvalidUpdate) as e:
            parse_message(rk, body, lim)
        assert e.value.code == code, (rk, body[:20])


async def test_ingest_many_messages_for_many_trees(ingest, amqp_url):
    base, app, names = ingest
    messages, model = plan(n_trees=40, n_messages=3000)
    async with Producer(amqp_url, names.exchange) as p:
        await p.send_many(messages)
    await wait_for(lambda: applied(app, len(messages)), timeout=120, what="all messages applied")
    compare(model, await read_all(app.settings["engine"], model.roots()))
    assert await queue_counts(amqp_url, names.queue) == (0, 1)
    assert app.settings["service"].batcher.dead_lettered == 0


async def test_bad_messages_are_dead_lettered_with_their_reason(ingest, amqp_url, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="sca_progress.amqp")
    base, app, names = ingest
    async with Producer(amqp_url, names.exchange) as p:
        await p.send("_dl.job.a", {"progress": 0.5})
        await p.send("_dl.job.b", b"{not json", raw=True)
        await p.send("_dl.job.c", {"progress": 7})
        await p.send("_dl.job..d", {"progress": 1})
        await p.send("_dl", {"progress": 1})
        await p.send("_dl.job", [{"key": "_dl.job.e", "progress": 1}, {"key": "_dl.job.f", "progress": "x"}])
        await p.send("_dl.job.g", b'{"msg": "' + b"x" * (5 << 20) + b'"}', raw=True)
        await p.send("_dl.job.h", {"progress": 1})
    await wait_for(lambda: applied(app, 2), timeout=60, what="good messages")
    dead = await wait_for(lambda: drain(amqp_url, names.dead), timeout=30, what="dead letters")
    reasons = {m.headers["x-progress-original-routing-key"]: m for m in dead}
    assert sorted(reasons) == ["_dl", "_dl.job", "_dl.job..d", "_dl.job.b", "_dl.job.c", "_dl.job.g"]
    codes = {k: m.headers["x-progress-error"] for k, m in reasons.items()}
    assert codes == {"_dl": "namespace-key", "_dl.job": "bad-progress", "_dl.job..d": "bad-key",
                     "_dl.job.b": "bad-json", "_dl.job.c": "bad-progress", "_dl.job.g": "too-large"}
    assert reasons["_dl.job.b"].body == b"{not json"  # the original body
    assert "progress must be a number" in reasons["_dl.job.c"].headers["x-progress-reason"]
    items = orjson.loads(reasons["_dl.job"].headers["x-progress-refused-items"])
    assert items == [{"item": 1, "code": "bad-progress", "message": items[0]["message"]}]
    engine = app.settings["engine"]
    job = await engine.read("_dl.job", depth=2)
    assert sorted(t["key"] for t in job["tasks"]) == ["_dl.job.a", "_dl.job.e", "_dl.job.h"]  # the good ones
    assert await queue_counts(amqp_url, names.queue) == (0, 1)  # nothing requeued in a loop
    # Each dead letter is logged with its code, reason and routing key; never its body.
    lines = [r.getMessage() for r in caplog.records if r.name == "sca_progress.amqp" and "dead-lettered" in r.getMessage()]
    assert len(lines) == 6 and any("'_dl.job.c': bad-progress: progress must be" in line for line in lines)
    assert not any("not json" in line for line in lines)


async def test_completion_events(ingest, amqp_url, http):
    base, app, names = ingest
    conn = await aio_pika.connect(amqp_url)
    try:
        ch = await conn.channel()
        events_x = await ch.declare_exchange(names.events, aio_pika.ExchangeType.TOPIC, durable=True)
        q = await ch.declare_queue(exclusive=True)
        await q.bind(events_x, routing_key="_ev.#")
        async with Producer(amqp_url, names.exchange) as p:
            await p.send("_ev.job.a", {"status": "running"})
            await p.send("_ev.job.a", {"status": "finished"})
            await p.send("_ev.job.a", {"status": "finished", "msg": "still"})  # no new entry: no event
        await http("POST", f"{base}/status/_ev.job.b", {"status": "failed"})  # REST writes count too
        got = []
        while len(got) < 2:
            msg = await asyncio.wait_for(q.get(fail=False) or asyncio.sleep(0.1), 30)
            if msg:
                await msg.ack()
                got.append(orjson.loads(msg.body))
        await asyncio.sleep(0.5)
        assert await q.get(fail=False) is None
    finally:
        await conn.close()
    by_key = {e["key"]: e for e in got}
    assert by_key["_ev.job.a"]["status"] == "finished" and by_key["_ev.job.b"]["status"] == "failed"
    for e in got:
        assert e["duration_ms"] == e["end_time"] - e["start_time"] >= 0 and e["id"].startswith(e["key"] + "@")
    assert await app.settings["engine"].pending_events(min_age_ms=0) == []  # published, then dropped


async def test_health_reports_the_consumer(ingest, http):
    base, app, names = ingest
    status, health, _ = await http("GET", f"{base}/health")
    assert status == 200 and health["status"] == "ok"
    amqp = health["amqp"]
    assert amqp["connected"] and amqp["consuming"] and amqp["queue"] == names.queue and amqp["backlog"] == 0


async def test_lost_connection_resumes_and_consumes_new_messages(ingest, amqp_url):
    """The broker drops the service's connection: after the robust reconnect, new
    messages are consumed (not merely: no exception was raised)."""
    import subprocess

    base, app, names = ingest
    link = app.settings["service"].link
    async with Producer(amqp_url, names.exchange) as p:
        await p.send("_lost.job.a", {"progress": 0.1})
        await wait_for(lambda: applied(app, 1), what="first message")
        generation = link.generation
        listing = subprocess.run(["rabbitmqctl", "list_connections", "pid", "client_properties"],
                                 capture_output=True, text=True, check=True).stdout
        pids = [line.split()[0] for line in listing.splitlines() if names.queue in line]
        assert pids, listing
        for pid in pids:
            subprocess.run(["rabbitmqctl", "close_connection", pid, "test: lost connection"], check=True,
                           capture_output=True)
        await wait_for(lambda: _reopened(link, generation), timeout=60, what="the channel to reopen")
        await p.send("_lost.job.b", {"progress": 0.9})
        await wait_for(lambda: _has(app, "_lost.job.b"), timeout=60, what="a message after the reconnect")
    assert await queue_counts(amqp_url, names.queue) == (0, 1)


async def _reopened(link, generation):
    return link.generation > generation and link.connected


async def _has(app, key):
    try:
        await app.settings["engine"].read(key)
        return True
    except Exception:  # noqa: BLE001
        return False


async def test_message_that_keeps_failing_is_dead_lettered_after_bounded_retries(ingest, amqp_url, monkeypatch):
    base, app, names = ingest
    service = app.settings["service"]
    real = service.apply
    calls = {"n": 0}

    async def flaky(updates, source="rest"):
        if any(k == "_flaky.job.boom" for k, _ in updates):
            calls["n"] += 1
            raise RuntimeError("a bug triggered by this message")
        return await real(updates, source)

    monkeypatch.setattr(service, "apply", flaky)
    async with Producer(amqp_url, names.exchange) as p:
        await p.send("_flaky.job.ok", {"progress": 1})
        await p.send("_flaky.job.boom", {"progress": 1})
    dead = await wait_for(lambda: drain(amqp_url, names.dead), timeout=60, what="the dead letter")
    assert [m.headers["x-progress-error"] for m in dead] == ["failed"]
    assert "failed 6 times" in dead[0].headers["x-progress-reason"]
    assert 6 <= calls["n"] <= 8  # the batch, then the message alone, once per redelivery
    assert await _has(app, "_flaky.job.ok")
    assert await queue_counts(amqp_url, names.queue) == (0, 1)


async def test_dead_letter_log_lines_are_rate_limited(caplog):
    import logging

    from sca_progress.server.amqp import DeadLetterLog

    caplog.set_level(logging.WARNING, logger="sca_progress.amqp")
    dead = DeadLetterLog(burst=2, window=0.2)
    for i in range(5):
        dead.note("bad-json", "the body is not JSON", f"_r.j{i}")
    await asyncio.sleep(0.25)
    dead.note("bad-key", "invalid key", "_r..x")
    lines = [r.getMessage() for r in caplog.records if r.name == "sca_progress.amqp"]
    assert len(lines) == 3 and "3 more dead letters not logged" in lines[2]
