"""Live feeds with real clients: socket.io (python-socketio), SSE, two server processes."""
from __future__ import annotations

import asyncio
import os

import pytest

from .conftest import RUN_PREFIX
from .feed_clients import SioClient, SseReader
from .procs import start_service, stop_service


async def test_snapshot_then_updates_with_ancestors_first(server, http):
    base, app = server
    await http("POST", f"{base}/status/_f.job1.a.x", {"progress": 0.5})
    c = await SioClient().connect(base)
    try:
        snap = await c.subscribe("_f.job1")
        assert snap["key"] == "_f.job1" and snap["node"]["tasks"][0]["key"] == "_f.job1.a" and snap["_now"] > 0
        await http("POST", f"{base}/status/_f.job1.a.y", {"progress": 1, "msg": "done"})
        payloads = await c.until(lambda seen: "_f.job1.a.y" in seen)
        nodes = payloads[-1]["nodes"]
        assert [n["key"] for n in nodes] == ["_f.job1", "_f.job1.a", "_f.job1.a.y"]
        assert nodes[0]["progress"] == 0.75 and nodes[2]["msg"] == "done" and payloads[-1]["_now"] > 0
        assert nodes[0]["_status_counts"] == {"none": 1}
    finally:
        await c.close()


async def test_only_nodes_up_to_the_subscribed_key(server, http):
    base, app = server
    c = await SioClient().connect(base)
    try:
        assert (await c.subscribe("_f.job2.a"))["node"] is None  # not there yet: updates follow
        await http("POST", f"{base}/status/_f.job2.a.b", {"progress": 1})
        await http("POST", f"{base}/status/_f.job2.other", {"progress": 1})  # outside: not sent
        payloads = await c.until(lambda seen: "_f.job2.a.b" in seen)
        keys = {n["key"] for p in payloads for n in p["nodes"]}
        assert keys == {"_f.job2.a", "_f.job2.a.b"}
        assert not [e for e in await c.quiet(0.4) if e[0] == "update"]
    finally:
        await c.close()


async def test_updates_are_coalesced_per_tick(server, http):
    base, app = server
    c = await SioClient().connect(base)
    try:
        await c.subscribe("_f.job3")
        for i in range(1, 51):
            await http("POST", f"{base}/status/_f.job3.a", {"progress": i / 50})
        payloads = await c.until(lambda seen: seen.get("_f.job3.a", {}).get("progress") == 1)
        leaf_states = [n for p in payloads for n in p["nodes"] if n["key"] == "_f.job3.a"]
        # 50 posts take a few ticks; each tick sends the node once, in its latest state.
        assert len(leaf_states) < 50
        for p in payloads:
            assert len([n for n in p["nodes"] if n["key"] == "_f.job3.a"]) == 1
    finally:
        await c.close()


async def test_namespace_subscription_follows_new_trees(server, http):
    base, app = server
    c = await SioClient().connect(base)
    try:
        await c.subscribe("_fns")
        await http("POST", f"{base}/status/_fns.jobA.x", {"progress": 0.5})
        await http("POST", f"{base}/status/_fns.jobB.x", {"progress": 1, "status": "finished"})
        payloads = await c.until(lambda seen: {"_fns.jobA", "_fns.jobB"} <= set(seen))
        roots = {n["key"]: n for p in payloads for n in p["nodes"]}
        assert roots["_fns.jobB"]["progress"] == 1 and "_children" in roots["_fns.jobA"]
        await http("DELETE", f"{base}/status/_fns.jobA")
        removed = await c.expect("removed")
        assert removed["removed"] == ["_fns.jobA"]
    finally:
        await c.close()


async def test_removed_and_unsubscribe(server, http):
    base, app = server
    await http("POST", f"{base}/status/_f.job4.a.x", {"progress": 1})
    c = await SioClient().connect(base)
    try:
        await c.subscribe("_f.job4")
        await http("DELETE", f"{base}/status/_f.job4.a")
        removed = await c.expect("removed")
        assert removed == {"key": "_f.job4", "removed": ["_f.job4.a"], "_now": removed["_now"]}
        await c.client.emit("unsubscribe", "_f.job4")
        await asyncio.sleep(0.3)
        await http("POST", f"{base}/status/_f.job4.b", {"progress": 1})
        assert not [e for e in await c.quiet(0.5) if e[0] in ("update", "removed")]
        assert app.settings["service"].hub.subscriptions() == 0
    finally:
        await c.close()


async def test_malformed_client_events_get_an_error(server, http):
    base, app = server
    c = await SioClient().connect(base)
    try:
        for bad, code in ((None, "bad-key"), (5, "bad-key"), ({"k": 1}, "bad-key"), ("a..b", "bad-key"),
                          ("x" * 300, "bad-key")):
            await c.client.emit("subscribe", bad)
            err = await c.expect("error")
            assert err["code"] == code and err["message"]
        await c.client.emit("unsubscribe", "_f.never")
        assert (await c.expect("error"))["code"] == "not-subscribed"
        assert (await c.subscribe("_f.job5"))["key"] == "_f.job5"  # still serving
    finally:
        await c.close()


async def test_closing_the_socket_ends_its_subscriptions(server, http):
    base, app = server
    hub = app.settings["service"].hub
    c = await SioClient().connect(base)
    await c.subscribe("_f.job6")
    await c.subscribe("_fns2")
    assert hub.subscriptions() == 2
    await c.close()
    for _ in range(50):
        if hub.subscriptions() == 0:
            break
        await asyncio.sleep(0.05)
    assert hub.subscriptions() == 0
    # Reconnecting and subscribing again gives a fresh snapshot.
    c = await SioClient().connect(base)
    try:
        assert (await c.subscribe("_f.job6"))["key"] == "_f.job6"
    finally:
        await c.close()


async def test_sse_snapshot_updates_ids_heartbeat_and_reconnect(server, http, monkeypatch):
    from sca_progress.server import sse

    monkeypatch.setattr(sse, "HEARTBEAT_S", 0.2)
    base, app = server
    await http("POST", f"{base}/status/_s.job1.a", {"progress": 0.2})
    reader = SseReader(f"{base}/events/_s.job1").start()
    try:
        first_id, snap = await reader.expect("snapshot")
        assert snap["node"]["progress"] == 0.2 and reader.retry == 2000
        await http("POST", f"{base}/status/_s.job1.a", {"progress": 0.6})
        update_id, update = await reader.expect("update")
        assert int(update_id) > int(first_id)
        assert [n["key"] for n in update["nodes"]] == ["_s.job1", "_s.job1.a"]
        await asyncio.sleep(0.5)
        assert reader.comments >= 1  # heartbeats
        assert any(h.lower().startswith("content-type: text/event-stream") for h in reader.headers_seen)
        assert not any(h.lower().startswith("content-encoding: gzip") for h in reader.headers_seen)
    finally:
        reader.close()
    # A reconnect (EventSource sends Last-Event-ID) resumes with a fresh snapshot.
    again = SseReader(f"{base}/events/_s.job1", {"Last-Event-ID": update_id}).start()
    try:
        _, snap = await again.expect("snapshot")
        assert snap["node"]["progress"] == 0.6
    finally:
        again.close()


async def test_sse_bad_key_is_a_json_400(server, http):
    base, app = server
    status, body, resp = await http("GET", f"{base}/events/a..b")
    assert status == 400 and body["error"]["code"] == "bad-key"


async def test_a_client_that_stops_reading_stalls_no_one(server, http):
    """A websocket client that never reads: the server keeps coalescing its
    changes (bounded) while another client gets every tick."""
    from tornado.websocket import websocket_connect

    base, app = server
    hub = app.settings["service"].hub
    ws = await websocket_connect(base.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
                                 max_message_size=1 << 30)
    await ws.read_message()  # engine.io open
    await ws.write_message("40")  # socket.io connect
    await ws.read_message()
    await ws.write_message('42["subscribe","_slow.job"]')
    # From here on the raw client reads nothing at all.
    good = await SioClient().connect(base)
    try:
        await good.subscribe("_slow.job")
        big = "x" * 4000
        for round_ in range(40):
            await http("POST", f"{base}/status", [
                {"key": f"_slow.job.n{i}", "progress": round_ / 40, "msg": big} for i in range(100)])
            await asyncio.sleep(0.02)
        await http("POST", f"{base}/status", [{"key": f"_slow.job.n{i}", "progress": 1} for i in range(100)])
        await good.until(lambda seen: all(seen.get(f"_slow.job.n{i}", {}).get("progress") == 1 for i in range(100)),
                         timeout=30)
        slow = next(s for s in hub.all_subscriptions() if getattr(s.sink, "sid", None) != _sid_of(good))
        assert len(slow.backlog) <= 101  # the latest state per node, nothing more
        # Once it reads again, the final state of each node arrives.
        finals = {}
        deadline = asyncio.get_running_loop().time() + 60
        while len([k for k, v in finals.items() if v == 1]) < 100:
            msg = await asyncio.wait_for(ws.read_message(), max(0.1, deadline - asyncio.get_running_loop().time()))
            if msg == "2":
                await ws.write_message("3")
                continue
            if msg.startswith('42["update"'):
                import orjson

                for node in orjson.loads(msg[2:])[1]["nodes"]:
                    if node["key"].startswith("_slow.job.n"):
                        finals[node["key"]] = node.get("progress")
    finally:
        ws.close()
        await good.close()


def _sid_of(client: SioClient):
    return client.client.get_sid("/")


async def test_resynchronised_after_the_pubsub_connection_is_lost(server, http, redis_client):
    base, app = server
    c = await SioClient().connect(base)
    try:
        await c.subscribe("_r.job")
        killed = await redis_client.client_kill_filter(_type="pubsub")
        assert killed >= 1
        snap = await c.expect("snapshot", timeout=20)  # a fresh one, not just updates
        assert snap["key"] == "_r.job"
        await http("POST", f"{base}/status/_r.job.a", {"progress": 1})
        await c.until(lambda seen: "_r.job.a" in seen, timeout=20)
    finally:
        await c.close()


async def test_two_server_processes_feed_the_same_subscribers(redis_url, http):
    prefix = f"{RUN_PREFIX}-two-{os.urandom(4).hex()}"
    a, base_a, _ = start_service(["--redis-url", redis_url, "--prefix", prefix])
    b, base_b, _ = start_service(["--redis-url", redis_url, "--prefix", prefix])
    try:
        c = await SioClient().connect(base_b)
        try:
            await c.subscribe("_two.job")
            reader = SseReader(f"{base_b}/events/_two.job").start()
            await reader.expect("snapshot")
            await http("POST", f"{base_a}/status/_two.job.x", {"progress": 0.5})  # written through A
            payloads = await c.until(lambda seen: "_two.job.x" in seen, timeout=20)
            assert payloads[-1]["nodes"][-1]["progress"] == 0.5
            _, update = await reader.expect("update", timeout=20)
            assert update["nodes"][0]["key"] == "_two.job"
            reader.close()
        finally:
            await c.close()
    finally:
        stop_service(a)
        stop_service(b)


@pytest.mark.skipif(os.environ.get("SKIP_NODE") == "1", reason="SKIP_NODE=1")
async def test_javascript_socket_io_client(server, http, tmp_path):
    """The browser library itself (socket.io-client from npm, run by Node)."""
    import shutil
    import subprocess

    from .js_client import node_client_dir

    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("Node.js is not installed")
    where = node_client_dir()
    base, app = server
    script = tmp_path / "client.js"
    script.write_text(f"""
const {{ io }} = require({str(where / "node_modules" / "socket.io-client")!r});
const socket = io({base!r}, {{ transports: ["websocket"] }});
const seen = [];
socket.on("connect", () => socket.emit("subscribe", "_js.job"));
socket.on("snapshot", (s) => {{ seen.push(["snapshot", s.key]); fetch({base!r} + "/status/_js.job.a", {{
    method: "POST", body: JSON.stringify({{progress: 0.5}}) }}); }});
socket.on("update", (u) => {{ seen.push(["update", u.nodes.map(n => n.key)]);
    if (u.nodes.some(n => n.key === "_js.job.a")) {{ console.log(JSON.stringify(seen)); socket.close(); process.exit(0); }} }});
setTimeout(() => {{ console.log("timeout"); process.exit(1); }}, 20000);
""")
    proc = await asyncio.create_subprocess_exec("node", str(script), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (out, err)
    import orjson

    seen = orjson.loads(out.strip().splitlines()[-1])
    assert seen[0] == ["snapshot", "_js.job"] and ["_js.job", "_js.job.a"] in [s[1] for s in seen[1:]]


async def test_racing_subscribes_unsubscribes_and_disconnects_leave_nothing_behind(server, http):
    """A client sending subscribe K twice before the first is done, mixed with
    unsubscribes, then disconnecting, used to leave one subscription (channel,
    watch marker refreshed for good) behind per duplicated key."""
    from tornado.websocket import websocket_connect

    base, app = server
    hub = app.settings["service"].hub
    for k in range(5):
        await http("POST", f"{base}/status/_race.j{k}.a", {"progress": 0.5})
    patterns = [["s0", "s0"], ["s1", "s1", "s1", "u1"], ["s2", "u2", "s2"], ["s3", "s4", "s3", "u4", "s4"]]
    for pattern in patterns:
        ws = await websocket_connect(base.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket")
        await ws.read_message()  # engine.io open
        await ws.write_message("40")
        await ws.read_message()  # socket.io connect
        for step in pattern:  # all at once: the server runs them concurrently
            event = "subscribe" if step[0] == "s" else "unsubscribe"
            await ws.write_message(f'42["{event}","_race.j{step[1]}"]')
        await asyncio.sleep(0.3)
        ws.close()
    deadline = asyncio.get_running_loop().time() + 10
    while hub.subscriptions() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert hub.subscriptions() == 0 and not hub.by_base
    assert not hub.pubsub.channels and not getattr(hub.pubsub, "shard_channels", {})


async def test_a_websocket_from_another_site_is_refused_at_the_handshake(server):
    """Refused with 403 before the upgrade, not answered 101 and then left silent."""
    from tornado.httpclient import HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    base, _ = server
    url = base.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    with pytest.raises(HTTPClientError) as refused:
        await websocket_connect(HTTPRequest(url, headers={"Origin": "https://evil.example"}))
    assert refused.value.code == 403
    ws = await websocket_connect(HTTPRequest(url, headers={"Origin": base}))  # same origin: fine
    assert (await ws.read_message()).startswith("0{")  # engine.io open
    ws.close()
    ws = await websocket_connect(url)  # programs send no Origin: fine
    assert (await ws.read_message()).startswith("0{")
    ws.close()
