"""Stalled nodes (read time, REST, feeds) and the lifecycle notices of job roots,
on short clocks, against real Redis and RabbitMQ."""
from __future__ import annotations

import asyncio
import time

import aio_pika
import orjson
import pytest
from tornado.netutil import bind_sockets

from sca_progress.server.app import http_server, make_app
from sca_progress.server.settings import Settings

from .amqp_support import wait_for


async def test_a_running_node_unchanged_for_stall_after_is_stalled(make_engine):
    e = await make_engine(stall_after_ms=300)
    await e.apply([("_st.j.a", {"progress": 0.2, "status": "running"}), ("_st.j.b", {"progress": 0, "status": "waiting"}),
                   ("_st.j.c", {"progress": 0.5}), ("_st.j.d", {"status": "running"}), ("_st.j.e", {"status": "finished"})])
    fresh = await e.read("_st.j", depth=2)
    assert not any("_stalled" in t for t in fresh["tasks"]) and "_stalled_count" not in fresh
    await asyncio.sleep(0.45)
    tree = await e.read("_st.j", depth=2)
    stalled = {t["key"]: t for t in tree["tasks"] if t.get("_stalled")}
    # running (said so, or by progress), unchanged for 300 ms: stalled; waiting and finished ones rest
    assert set(stalled) == {"_st.j.a", "_st.j.c", "_st.j.d"}
    assert stalled["_st.j.a"]["_stalled_since"] == stalled["_st.j.a"]["update_time"] + 300
    assert tree["_stalled"] is True  # the job itself has not changed either
    assert tree["_stalled_count"] == 3
    await e.apply([("_st.j.a", {"progress": 0.3})])
    again = await e.read("_st.j.a")
    assert "_stalled" not in again
    never = await make_engine(stall_after_ms=0)
    assert "_stalled" not in await never.read("_st.j.c")


async def test_a_node_well_past_its_eta_is_stalled(make_engine):
    """Updates that keep coming but stop moving it: its rate promised an end long ago."""
    from sca_progress.engine.records import stalled_since

    nan = float("nan")
    # eta = 1,000 + 0.5 / 0.0001 = 6,000; late past 6,000 + max(60 s, half of its 5.5 s run)
    assert stalled_since(0.5, 1000, 0.0001, 500, nan, "running", 65_000, 600_000) is None
    assert stalled_since(0.5, 1000, 0.0001, 500, nan, "running", 66_001, 600_000) == 66_000
    assert stalled_since(0.5, 1000, 0.0001, 500, nan, "paused", 66_001, 600_000) is None
    assert stalled_since(0.5, 1000, 0.0001, nan, nan, "running", 10 ** 9, 600_000) is None  # never ran


@pytest.fixture
async def app_with(redis_url, prefix):
    made = []

    async def start(**settings):
        app = await make_app(Settings(redis_url=redis_url, prefix=prefix, host="127.0.0.1", port=0, **settings))
        server = http_server(app)
        sockets = bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        made.append((app, server))
        return f"http://127.0.0.1:{sockets[0].getsockname()[1]}", app

    yield start
    for app, server in made:
        server.stop()
        await app.settings["service"].close_feeds()
        await asyncio.wait_for(server.close_all_connections(), 10)
        await app.settings["service"].close()


async def test_rest_lists_the_stalled_nodes(app_with, http):
    base, _ = await app_with(stall_after=0.3)
    for k in ("a", "b"):
        await http("POST", f"{base}/status/_sr.j.s.{k}", {"progress": 0.5, "status": "running"})
    await http("POST", f"{base}/status/_sr.j.t", {"status": "waiting", "progress": 0})
    await asyncio.sleep(0.45)
    await http("POST", f"{base}/status/_sr.j.s.b", {"progress": 0.6})
    status, body, _ = await http("GET", f"{base}/status/_sr.j?stalled=1")
    assert status == 200 and body["key"] == "_sr.j"
    assert [n["key"] for n in body["stalled"]] == ["_sr.j.s.a"]
    assert all("tasks" not in n and n["_stalled"] for n in body["stalled"])
    status, body, _ = await http("GET", f"{base}/status/_sr.j?stalled=maybe")
    assert status == 400 and body["error"]["code"] == "bad-stalled"


@pytest.fixture
async def lifecycle_service(app_with, amqp_url, amqp_names):
    base, app = await app_with(amqp_url=amqp_url, batch_wait=0.02, stall_after=0.8, long_running_after=1.0,
                               long_running_every=0.6, lifecycle_interval=0.1, **amqp_names.settings())
    service = app.settings["service"]
    await wait_for(lambda: _consuming(service), timeout=30, what="the consumer")
    conn = await aio_pika.connect(amqp_url)
    ch = await conn.channel()
    events_x = await ch.declare_exchange(amqp_names.events, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await ch.declare_queue(exclusive=True)
    await queue.bind(events_x, routing_key="_lc.*")  # job roots only
    yield base, app, queue
    await conn.close()


async def _consuming(service):
    return service.link is not None and service.link.connected


async def received(queue, until, timeout: float = 20.0) -> list[dict]:
    got, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline and not until(got):
        msg = await queue.get(fail=False)
        if msg is None:
            await asyncio.sleep(0.05)
            continue
        await msg.ack()
        body = orjson.loads(msg.body)
        assert msg.type == body["event"] and msg.message_id == body["id"]
        got.append(body)
    return got


async def test_lifecycle_notices_of_job_roots(lifecycle_service, http):
    base, app, queue = lifecycle_service
    # A live feed of the long job (of a key inside it) gets the notices too, as 'notice' events.
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /events/_lc.long.step HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n")  # 1.0: no chunks
    streamed = bytearray()

    async def follow():
        while chunk := await reader.read(65536):
            streamed.extend(chunk)

    follower = asyncio.ensure_future(follow())
    # A short job: started, then completed; nothing else.
    await http("POST", f"{base}/status/_lc.short", {"status": "running", "progress": 0.1})
    await http("POST", f"{base}/status/_lc.short", {"status": "finished", "progress": 1})
    # A long one: it runs past long-running-after, stalls, recovers, then ends.
    await http("POST", f"{base}/status/_lc.long.step", {"status": "running", "progress": 0.05})
    started = time.monotonic()
    p = 0.05
    while time.monotonic() - started < 2.2:  # long-running at 1.0 s, then every 0.6 s
        p += 0.02
        await http("POST", f"{base}/status/_lc.long.step", {"progress": round(p, 3)})
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.3)  # silence past stall-after (0.8 s)
    await http("POST", f"{base}/status/_lc.long.step", {"progress": 0.9})  # recovers
    await asyncio.sleep(0.4)
    await http("POST", f"{base}/status/_lc.long", {"status": "finished", "progress": 1})

    def complete(got):
        kinds = [(e["key"], e["event"]) for e in got]
        return ("_lc.long", "completed") in kinds and ("_lc.long", "recovered") in kinds

    got = await received(queue, complete)
    await asyncio.sleep(0.5)
    got += await received(queue, lambda g: False, timeout=0.3)
    short = [e["event"] for e in got if e["key"] == "_lc.short"]
    assert sorted(short) == ["completed", "started"], got
    long = [e for e in got if e["key"] == "_lc.long"]
    kinds = [e["event"] for e in long]
    assert kinds[0] == "started" and kinds[-1] in ("completed", "recovered"), kinds
    assert kinds.count("stalled") == 1 and kinds.count("recovered") == 1 and kinds.count("completed") == 1, kinds
    assert kinds.index("stalled") < kinds.index("recovered")
    assert 2 <= kinds.count("long-running") <= 6, kinds  # at 1.0 s, then every 0.6 s while it is active
    running = [e for e in long if e["event"] == "long-running"]
    assert all(e["duration_ms"] >= 1000 and 0 < e["progress"] < 1 and e["status"] == "" for e in running)
    assert any(e["eta"] for e in running)  # its rate gives an eta
    assert len({e["id"] for e in got}) == len(got)  # each occurrence once
    follower.cancel()
    writer.close()
    feed_notices = [orjson.loads(block.split(b"data: ", 1)[1]) for block in bytes(streamed).split(b"\n\n")
                    if block.startswith(b"event: notice")]
    assert {n["event"] for n in feed_notices} >= {"long-running", "stalled", "recovered"}, bytes(streamed)[-800:]
    assert all(n["key"] == "_lc.long" for n in feed_notices)
    assert app.settings["service"].lifecycle.noticed >= len(got) - 2  # the completions came from the scripts


async def test_the_example_notifier_is_quiet_for_short_jobs_and_reports_long_ones(lifecycle_service, http, amqp_url,
                                                                                 amqp_names):
    """client/notifier.py on a compressed clock: 'a minute' is 1.5 s here, the
    service's long-running notices come at 1 s and then every 0.6 s."""
    import subprocess
    import sys

    base, _, _ = lifecycle_service
    notifier = subprocess.Popen([sys.executable, "-m", "sca_progress.client.notifier", "--amqp-url", amqp_url,
                                 "--exchange", amqp_names.events, "--bind", "_nt.*", "--quiet-under", "1.5"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = await asyncio.to_thread(notifier.stderr.readline)
        assert "listening" in ready, ready
        await http("POST", f"{base}/status/_nt.quick.a", {"status": "running", "progress": 0.5})
        await http("POST", f"{base}/status/_nt.quick", {"status": "finished", "progress": 1})
        await http("POST", f"{base}/status/_nt.week.a", {"status": "running", "progress": 0.1})
        t0 = time.monotonic()
        p = 0.1
        while time.monotonic() - t0 < 2.0:
            p += 0.03
            await http("POST", f"{base}/status/_nt.week.a", {"progress": round(p, 3)})
            await asyncio.sleep(0.1)
        await http("POST", f"{base}/status/_nt.week", {"status": "finished", "progress": 1})
        await asyncio.sleep(1.0)
    finally:
        notifier.send_signal(2)
        out, err = await asyncio.to_thread(notifier.communicate, timeout=20)
    lines = out.splitlines()
    assert not [line for line in lines if "_nt.quick" in line], lines  # a short job: no message at all
    still = [line for line in lines if line.startswith("_nt.week is still working after")]
    assert 1 <= len(still) <= 3 and all("% done" in line for line in still), lines
    assert lines[-1].startswith("_nt.week finished after 2s") or lines[-1].startswith("_nt.week finished after 1s"), lines
    assert notifier.returncode == 0, err


async def _sweep(service) -> list[dict]:
    """One lifecycle sweep now (past the previous sweep's lock): its notices."""
    await asyncio.sleep(service.settings.lifecycle_interval)
    return [e.as_dict() for e in await service.lifecycle.sweep()]


async def test_notice_times_and_the_ends_of_stalls(app_with, http):
    """Each notice's `at` is when it happened; a stalled job that ends gets no
    'recovered'; a recovery between two sweeps is still told; a job deleted
    and posted again starts afresh; the state goes with the tree."""
    base, app = await app_with(stall_after=0.4, long_running_after=60, lifecycle_interval=0.05)
    service = app.settings["service"]
    for job in ("a", "b", "c", "d"):
        await http("POST", f"{base}/status/_lt.{job}.x", {"status": "running", "progress": 0.1})
    got = await _sweep(service)
    node = (await http("GET", f"{base}/status/_lt.a"))[1]
    assert sorted(e["key"] for e in got if e["event"] == "started") == ["_lt.a", "_lt.b", "_lt.c", "_lt.d"]
    assert [e["at"] for e in got if e["key"] == "_lt.a"] == [node["run_time"]]
    await asyncio.sleep(0.5)
    got = await _sweep(service)
    stalled = {e["key"]: e for e in got if e["event"] == "stalled"}
    assert set(stalled) == {"_lt.a", "_lt.b", "_lt.c", "_lt.d"}, got
    assert stalled["_lt.a"]["at"] == node["update_time"] + 400  # since when it is stalled

    await http("POST", f"{base}/status/_lt.a", {"status": "failed"})  # a stalled job ends
    await http("POST", f"{base}/status/_lt.d.x", {"status": None, "progress": 1})  # all done, no status says so
    await http("POST", f"{base}/status/_lt.b.x", {"progress": 0.2})  # recovers, then stalls again
    recovered_at = (await http("GET", f"{base}/status/_lt.b"))[1]["update_time"]
    await asyncio.sleep(0.5)
    got = await _sweep(service)
    assert not [e for e in got if e["key"] in ("_lt.a", "_lt.d")], got  # ended, or done: not 'recovered'
    b = [(e["event"], e["at"]) for e in got if e["key"] == "_lt.b"]
    assert b == [("recovered", recovered_at), ("stalled", recovered_at + 400)], got

    engine = service.engine
    await engine.delete("_lt.c")
    await http("POST", f"{base}/status/_lt.c.x", {"status": "running", "progress": 0.3})
    got = await _sweep(service)
    assert [e["event"] for e in got if e["key"] == "_lt.c"] == ["started"], got  # a new job: no 'recovered'
    await engine.delete("_lt.b")
    await engine.collect_garbage("_lt.b")
    assert not await engine.redis.exists(engine.keys.tree("_lt.b") + "lc")  # gone with the tree


@pytest.mark.parametrize("every", [0, 0.4])
async def test_long_running_notices_keep_their_period(app_with, http, every):
    """A notice missed while the job was stalled comes once it moves again,
    and the next one a whole period later, not straight after; with
    --long-running-every 0 only the first comes."""
    base, app = await app_with(stall_after=0.3, long_running_after=0.2, long_running_every=every,
                               lifecycle_interval=0.05)
    service = app.settings["service"]
    await http("POST", f"{base}/status/_lp.j.x", {"status": "running", "progress": 0.1})
    notices = await _sweep(service)
    await asyncio.sleep(0.5)  # stalled when its first long-running notice falls due
    notices += await _sweep(service)
    p, t0 = 0.1, time.monotonic()
    while time.monotonic() - t0 < 1.3:
        p += 0.02
        await http("POST", f"{base}/status/_lp.j.x", {"progress": round(p, 3)})
        notices += await _sweep(service)
    kinds = [e["event"] for e in notices]
    assert kinds[:2] == ["started", "stalled"] and "recovered" in kinds, kinds
    ats = [e["at"] for e in notices if e["event"] == "long-running"]
    if every == 0:
        assert len(ats) == 1, notices
    else:
        assert 2 <= len(ats) <= 4 and all(b - a >= 400 for a, b in zip(ats, ats[1:])), ats


async def test_an_ended_node_has_no_eta(app_with, http):
    base, _ = await app_with()
    await http("POST", f"{base}/status/_le.j", {"status": "running", "progress": 0.2})
    await asyncio.sleep(0.2)
    await http("POST", f"{base}/status/_le.j", {"progress": 0.6})
    await http("POST", f"{base}/status/_le.j", {"status": "failed"})
    node = (await http("GET", f"{base}/status/_le.j"))[1]
    assert node["progress"] == 0.6 and "end_time" in node and "eta" not in node, node


async def test_stalled_nodes_of_a_wide_node_page_by_cursor(app_with, http):
    base, app = await app_with(stall_after=0.3)
    await app.settings["engine"].apply([(f"_sw.j.d.e{i}", {"status": "running", "progress": 0.5}) for i in range(70)]
                                       + [(f"_sw.j.c{i}", {"status": "running", "progress": 0.5}) for i in range(150)])
    await http("POST", f"{base}/status/_sw.j", {"status": "paused"})
    await asyncio.sleep(0.45)
    seen, cursor, pages = [], None, 0
    while True:
        query = "stalled=1&limit=100" + (f"&cursor={cursor}" if cursor else "")
        status, body, _ = await http("GET", f"{base}/status/_sw.j?{query}")
        assert status == 200, body
        seen += [n["key"] for n in body["stalled"]]
        pages += 1
        if pages == 1:  # the 70 grandchildren fit a page; nothing below was cut
            assert "_more" not in body
        cursor = body.get("_children_next")
        if not cursor:
            break
    assert pages == 2 and len(seen) == len(set(seen)) == 150 + 1 + 70, (pages, len(seen))  # c*, d and d.e*
    status, body, _ = await http("GET", f"{base}/status/_sw.j?stalled=1&limit=50")
    assert body["_more"] == [{"key": "_sw.j.d", "_children_next": body["_more"][0]["_children_next"]}]
    await http("POST", f"{base}/status/_sw.j.c7", {"status": "uploading", "progress": 0.6})
    await asyncio.sleep(0.45)
    status, body, _ = await http("GET", f"{base}/status/_sw.j?stalled=1&status=uploading")
    assert status == 200 and [n["key"] for n in body["stalled"]] == ["_sw.j.c7"]


async def test_stalled_nodes_of_a_job_too_big_for_one_read(app_with, http):
    """20 parts of 1,100 leaves each (22,021 nodes, over one read's 20,000):
    a first page with smaller pages per node, and cursors to go on."""
    base, app = await app_with(stall_after=0.3)
    engine = app.settings["engine"]
    updates = [(f"_sb.j.p{p}.f{i}", {"status": "running", "progress": 0.5}) for p in range(20) for i in range(1100)]
    for i in range(0, len(updates), 5000):
        await engine.apply(updates[i:i + 5000], snapshots="none")
    await asyncio.sleep(0.45)
    status, body, _ = await http("GET", f"{base}/status/_sb.j?stalled=1")
    assert status == 200, body
    assert body["stalled"] and body["_more"], {k: v for k, v in body.items() if k != "stalled"}
    part = body["_more"][0]
    status, page, _ = await http("GET", f"{base}/status/{part['key']}?stalled=1&cursor={part['_children_next']}")
    assert status == 200 and page["stalled"]
