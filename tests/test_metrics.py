"""GET /metrics, the probes and the JSON log format, against a real server, Redis and broker."""
from __future__ import annotations

import asyncio
import os
import subprocess
import time
import urllib.error
import urllib.request

import orjson
from prometheus_client.parser import text_string_to_metric_families

from .amqp_support import Producer, wait_for
from .conftest import RUN_PREFIX
from .procs import free_port, start_service, stop_service


async def scrape(http, base) -> dict:
    """{(sample name, frozenset(labels)): value} of GET /metrics."""
    status, _, resp = await _raw(http, "GET", f"{base}/metrics")
    assert status == 200 and resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(resp.body.decode()):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


async def _raw(http, method, url, body=None, headers=None):
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    req = HTTPRequest(url, method=method, body=body, headers=headers, allow_nonstandard_methods=True)
    resp = await AsyncHTTPClient().fetch(req, raise_error=False)
    return resp.code, None, resp


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_updates_are_counted_by_source_and_outcome(server, http):
    base, _ = server
    before = await scrape(http, base)
    assert (await http("POST", f"{base}/status/_m.j.a", {"progress": 0.5, "ts": 2000}))[0] == 200
    assert (await http("POST", f"{base}/status/_m.j.a", {"progress": 0.1, "ts": 1000}))[0] == 200  # stale
    assert (await http("POST", f"{base}/status/_m.j.b", {"progress": 7}))[0] == 400
    status, body, _ = await http("POST", f"{base}/status", [
        {"key": "_m.j.c", "progress": 1}, {"key": "_m.j.d", "progress": 1}, {"progress": 1},
        {"key": "_m.j.e", "weight": -1}])
    assert status == 200 and [r["ok"] for r in body["results"]] == [True, True, False, False]
    after = await scrape(http, base)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("progress_updates_total", source="rest", outcome="applied") == 3
    assert grew("progress_updates_total", source="rest", outcome="stale") == 1
    assert grew("progress_updates_total", source="rest", outcome="refused") == 3
    assert grew("progress_refused_total", source="rest", code="bad-progress") == 1
    assert grew("progress_refused_total", source="rest", code="bad-item") == 1
    assert grew("progress_refused_total", source="rest", code="bad-weight") == 1
    # one engine call per POST: four calls, the batch's of 3 updates
    assert grew("progress_batch_updates_count", source="rest") == 4
    assert grew("progress_batch_updates_sum", source="rest") == 1 + 1 + 1 + 3
    assert grew("progress_apply_seconds_count", source="rest") == 4
    assert grew("progress_http_requests_total", method="POST", route="/status/{key}", status="200", code="") == 2
    assert grew("progress_http_requests_total", method="POST", route="/status/{key}", status="400",
                code="bad-progress") == 1
    assert grew("progress_http_request_duration_seconds_count", route="/status") == 1
    assert value(after, "progress_redis_connects_total") >= 1
    assert value(after, "progress_redis_connection_failures_total") == 0


async def test_feed_subscribers_and_messages(server, http):
    """An SSE stream is a subscriber while it is open, and its snapshot a message sent."""
    base, _ = server
    await http("POST", f"{base}/status/_mf.j.a", {"progress": 0.5})
    before = await scrape(http, base)
    assert value(before, "progress_feed_subscribers", transport="sse") == 0
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /events/_mf.j HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    try:
        seen = b""
        while b"event: snapshot" not in seen:
            seen += await asyncio.wait_for(reader.read(65536), 10)
        during = await scrape(http, base)
        assert value(during, "progress_feed_subscribers", transport="sse") == 1
        assert (value(during, "progress_feed_messages_total", transport="sse")
                - value(before, "progress_feed_messages_total", transport="sse")) >= 1
    finally:
        writer.close()
    await wait_for(lambda: _no_subscribers(http, base), timeout=10, what="the stream to end")


async def _no_subscribers(http, base) -> bool:
    return value(await scrape(http, base), "progress_feed_subscribers", transport="sse") == 0


async def test_live_and_ready(server, http):
    base, _ = server
    status, body, resp = await http("GET", f"{base}/health/live")
    assert status == 200 and body["status"] == "live"
    status, body, _ = await http("GET", f"{base}/health/ready")
    assert status == 200 and body == {"status": "ready", "_now": body["_now"]}


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=20) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def test_ready_fails_while_redis_is_down_and_live_does_not(tmp_path):
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        _wait_redis(port)
        proc, base, _ = start_service(["--redis-url", f"redis://127.0.0.1:{port}/0", "--prefix", RUN_PREFIX])
        try:
            assert _get(f"{base}/health/ready")[0] == 200
            redis.terminate()
            redis.wait(10)
            status, body = _get(f"{base}/health/ready")
            assert status == 503 and body["status"] == "not-ready" and "redis unreachable" in body["problems"]
            status, body = _get(f"{base}/health/live")
            assert status == 200 and body["status"] == "live"
        finally:
            stop_service(proc)
    finally:
        if redis.poll() is None:
            redis.kill()
            redis.wait()


def _wait_redis(port: int) -> None:
    import redis as sync_redis

    for _ in range(100):
        try:
            if sync_redis.Redis(port=port).ping():
                return
        except sync_redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("private redis did not start")


async def test_amqp_metrics(ingest, amqp_url, http):
    base, app, names = ingest
    async with Producer(amqp_url, names.exchange) as p:
        await p.send("_ma.j.a", {"progress": 0.5})
        await p.send("_ma.j.b", b"{not json", raw=True)
        await p.send("_ma.j.c", {"progress": 7})
        await p.send("_ma.j.d", {"progress": 1})
    batcher = app.settings["service"].batcher
    await wait_for(lambda: _settled(batcher, 4), timeout=60, what="all four messages")
    samples = await scrape(http, base)
    assert value(samples, "progress_amqp_connected") == 1
    assert value(samples, "progress_amqp_messages_total", outcome="applied") == 2
    assert value(samples, "progress_amqp_messages_total", outcome="dead_lettered") == 2
    assert value(samples, "progress_amqp_unacknowledged") == 0
    assert value(samples, "progress_amqp_backlog") == 0
    assert value(samples, "progress_updates_total", source="amqp", outcome="applied") == 2
    assert value(samples, "progress_refused_total", source="amqp", code="bad-json") == 1
    assert value(samples, "progress_refused_total", source="amqp", code="bad-progress") == 1
    assert value(samples, "progress_amqp_batches_total") >= 1
    assert value(samples, "progress_amqp_redeliveries_total") == 0


async def _settled(batcher, n: int) -> bool:
    return batcher.applied + batcher.dead_lettered >= n


def test_json_log_lines_carry_the_request(tmp_path):
    proc, base, log = start_service(["--prefix", RUN_PREFIX, "--data-dir", str(tmp_path / "data"),
                                     "--log-format", "json", "--access-log", "all"])
    try:
        req = urllib.request.Request(f"{base}/status/_jl.j.a", data=b'{"progress": 0.5}', method="POST",
                                     headers={"Content-Type": "application/json", "X-Request-Id": "job-42.a"})
        with urllib.request.urlopen(req, timeout=20) as resp:
            assert resp.headers["X-Request-Id"] == "job-42.a"
        status, _ = _get(f"{base}/status/_jl.nope")
        assert status == 404

        def lines():
            return [orjson.loads(line) for line in log().splitlines() if line.startswith("{")]

        for _ in range(100):  # the log reaches us through a pipe: wait for both lines
            access = [x for x in lines() if x["logger"] == "tornado.access"]
            if len(access) >= 2:
                break
            time.sleep(0.05)
        assert all(not line.strip() or line.startswith("{") for line in log().splitlines()), log()
        post = next(x for x in access if x.get("request_id") == "job-42.a")
        assert post["route"] == "/status/{key}" and post["status"] == 200 and post["method"] == "POST"
        assert post["duration_ms"] >= 0 and post["level"] == "info" and post["ts"].endswith("Z")
        missing = next(x for x in access if x["status"] == 404)
        assert missing["code"] == "not-found" and len(missing["request_id"]) == 16 and missing["level"] == "warning"
    finally:
        stop_service(proc)


def test_a_bad_log_format_is_refused():
    import sys

    out = subprocess.run([sys.executable, "-m", "sca_progress.server.cli", "serve", "--log-format", "xml"],
                         capture_output=True, text=True, timeout=60, env={**os.environ})
    assert out.returncode != 0 and "--log-format: 'xml' is not one of text, json" in out.stderr


def test_while_redis_is_unreachable_at_start_the_port_answers_live_and_not_ready(tmp_path):
    import sys

    redis_port, port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sca_progress.server.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--redis-url", f"redis://127.0.0.1:{redis_port}/0",
                             "--prefix", RUN_PREFIX], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    redis = None
    try:
        for _ in range(200):  # the port answers before Redis does
            try:
                status, body = _get(f"{base}/health/live")
                break
            except urllib.error.URLError:
                time.sleep(0.05)
        assert status == 200 and body["status"] == "live"
        status, body = _get(f"{base}/health/ready")
        assert status == 503 and body["status"] == "not-ready" and "starting" in body["problems"][0]
        status, body = _get(f"{base}/status/_wait.j")
        assert status == 503 and body["error"]["code"] == "starting"
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
        for _ in range(400):  # its retry backoff reaches a few seconds
            if _get(f"{base}/health/ready")[0] == 200:
                break
            time.sleep(0.05)
        assert _get(f"{base}/health/ready")[0] == 200
        assert _get(f"{base}/status/_wait.nothing")[0] == 404  # the real routes now
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        if redis is not None:
            redis.terminate()
            redis.wait(10)
    assert proc.returncode == 0 and "Traceback" not in err, err


def test_socketio_errors_are_logged_as_json(tmp_path):
    """python-engineio logs a bad websocket upgrade through the service's
    logging (JSON here), not through a plain-text handler of its own."""
    proc, base, log = start_service(["--prefix", RUN_PREFIX, "--data-dir", str(tmp_path / "data"),
                                     "--log-format", "json"])
    try:
        status, _ = _get(f"{base}/socket.io/?EIO=4&transport=websocket")  # no Upgrade header
        assert status == 400
        deadline = time.monotonic() + 10
        while "Invalid websocket upgrade" not in log() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop_service(proc)
    lines = [line for line in log().splitlines() if "Invalid websocket upgrade" in line]
    assert lines and all(line.startswith("{") for line in lines), lines
